//! `umbra agent …`: enroll this device, log in, forward a local port to a
//! service behind a gateway. State lives in `--dir` / `UMBRA_AGENT_DIR`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;
use umbra_agent::dir::AgentDir;
use zeroize::Zeroizing;

#[derive(Args)]
pub struct AgentArgs {
    /// State directory (default: ~/.umbra/agent).
    #[arg(long, env = "UMBRA_AGENT_DIR", global = true)]
    dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Enroll this device with a one-time token from `umbra admin token enroll`.
    Enroll {
        #[arg(long, env = "UMBRA_CONTROLLER")]
        controller: String,
        #[arg(long)]
        token: String,
    },
    /// Log in with password + TOTP (prompted unless given).
    Login {
        #[arg(long)]
        user: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        totp: Option<String>,
        /// A one-time recovery code instead of a TOTP code.
        #[arg(long, conflicts_with = "totp")]
        recovery_code: Option<String>,
    },
    /// Pass MFA again for the live session (TOTP prompted unless given),
    /// when a gateway answers `step_up_required`.
    StepUp {
        #[arg(long)]
        totp: Option<String>,
    },
    /// End the session (the gateways drop it at once).
    Logout,
    /// The device, its certificate and the session.
    Status,
    /// Renew the device certificate now (login also renews when it is due).
    Renew,
    /// This device's posture: each field, its value or "unknown", and why.
    Posture {
        /// Inspect this root filesystem instead of / (e.g. a test fixture).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Send the report to the controller if it changed or is due.
        #[arg(long)]
        send: bool,
    },
    /// Knock (SPA) at the dark gateway of SERVICE, or of every service of
    /// the session; `connect` does this by itself. With --fwknop, send an
    /// fwknop-compatible packet as the stock `fwknop` client does.
    Knock {
        service: Option<String>,
        #[command(flatten)]
        fwknop: FwknopArgs,
    },
    /// Forward a local port to SERVICE through its gateway.
    Connect {
        service: String,
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(clap::Args)]
struct FwknopArgs {
    /// Speak the fwknop format (needs --destination, --access and the keys).
    #[arg(long)]
    fwknop: bool,
    /// The SPA server (fwknop -D).
    #[arg(long, requires = "fwknop")]
    destination: Option<String>,
    #[arg(long, default_value_t = 62201, requires = "fwknop")]
    server_port: u16,
    /// Ports to open, e.g. tcp/22 (fwknop -A); repeat or comma-separate.
    #[arg(long, value_delimiter = ',', requires = "fwknop")]
    access: Vec<String>,
    /// The address to open (fwknop -a); default: this host's address
    /// towards the destination.
    #[arg(long, requires = "fwknop")]
    allow_ip: Option<std::net::Ipv4Addr>,
    /// Rijndael key, base64 (fwknop --key-base64-rijndael).
    #[arg(long, requires = "fwknop")]
    key_base64: Option<String>,
    /// HMAC key, base64 (fwknop --key-base64-hmac).
    #[arg(long, requires = "fwknop")]
    hmac_key_base64: Option<String>,
    #[arg(long, default_value = "sha256", requires = "fwknop")]
    hmac_digest_type: String,
    #[arg(long, default_value = "cbc", requires = "fwknop")]
    encryption_mode: String,
    /// The username in the packet (default: $USER).
    #[arg(long, requires = "fwknop")]
    spa_user: Option<String>,
    /// Asked pinhole lifetime in seconds (fwknop --fw-timeout).
    #[arg(long, requires = "fwknop")]
    fw_timeout: Option<u32>,
}

fn fwknop_knock(f: &FwknopArgs) -> Result<umbra_agent::knock::FwknopKnock> {
    use base64::Engine as _;
    let b64 = |s: &str, what: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .with_context(|| format!("{what}: not base64"))
    };
    let key = b64(
        f.key_base64
            .as_deref()
            .context("--key-base64 is required")?,
        "--key-base64",
    )?;
    let hmac = b64(
        f.hmac_key_base64
            .as_deref()
            .context("--hmac-key-base64 is required (HMAC is not optional)")?,
        "--hmac-key-base64",
    )?;
    let digest: umbra_spa::fwknop::DigestType = f
        .hmac_digest_type
        .parse()
        .map_err(|e| anyhow::anyhow!("--hmac-digest-type: {e}"))?;
    let mode: umbra_spa::fwknop::EncryptionMode = f
        .encryption_mode
        .parse()
        .map_err(|e| anyhow::anyhow!("--encryption-mode: {e}"))?;
    let keys = umbra_spa::fwknop::FwknopKeys::new(&key, mode, Some((&hmac, digest)))
        .map_err(|e| anyhow::anyhow!("keys: {e}"))?;
    let access = f
        .access
        .iter()
        .map(|a| a.parse().map_err(|e| anyhow::anyhow!("--access {a}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    if access.is_empty() {
        anyhow::bail!("--access is required (e.g. tcp/22)");
    }
    Ok(umbra_agent::knock::FwknopKnock {
        destination: f.destination.clone().context("--destination is required")?,
        server_port: f.server_port,
        access,
        allow_ip: f.allow_ip,
        user: f
            .spa_user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "umbra".into()),
        keys,
        client_timeout: f.fw_timeout,
    })
}

fn agent_dir(args: &AgentArgs) -> Result<AgentDir> {
    match &args.dir {
        Some(d) => Ok(AgentDir::new(d.clone())),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --dir")?;
            Ok(AgentDir::new(PathBuf::from(home).join(".umbra/agent")))
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let dir = agent_dir(&args)?;
    let json = args.json;
    match args.command {
        AgentCommand::Enroll { controller, token } => {
            let r = umbra_agent::controller::enroll(&dir, &controller, token.trim()).await?;
            if json {
                return print_json(&serde_json::json!({
                    "device_id": r.device_id, "spiffe_id": r.spiffe_id,
                    "status": r.status, "serial": r.serial, "not_after": r.not_after,
                }));
            }
            println!(
                "enrolled device {} ({:?}), certificate valid until {}",
                r.device_id, r.status, r.not_after
            );
            println!("state: {}", dir.path.display());
            Ok(())
        }
        AgentCommand::Login {
            user,
            password_stdin,
            totp,
            recovery_code,
        } => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the password from stdin")?;
                Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                Zeroizing::new(
                    rpassword::prompt_password(format!("password for {user}: "))
                        .context("reading the password")?,
                )
            };
            let totp = match (totp, &recovery_code) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) if password_stdin => {
                    bail!("with --password-stdin, give --totp CODE (or --recovery-code)")
                }
                (None, None) => Some(
                    rpassword::prompt_password("TOTP code: ").context("reading the TOTP code")?,
                ),
            };
            let s =
                umbra_agent::controller::login(&dir, &user, password, totp, recovery_code).await?;
            if json {
                return print_json(&serde_json::json!({
                    "session_id": s.session_id, "user": s.user, "risk": s.risk,
                    "expires_at": s.expires_at, "services": s.services,
                }));
            }
            println!(
                "logged in as {} (risk {}), session {} until {}",
                s.user, s.risk, s.session_id, s.expires_at
            );
            if s.services.is_empty() {
                println!("no services are granted to this session");
            }
            for svc in &s.services {
                println!("  service {:<20} via {}", svc.name, svc.gateway_url);
            }
            Ok(())
        }
        AgentCommand::StepUp { totp } => {
            let totp = match totp {
                Some(t) => Zeroizing::new(t),
                None => Zeroizing::new(
                    rpassword::prompt_password("TOTP code: ").context("reading the TOTP code")?,
                ),
            };
            let s = umbra_agent::controller::step_up(&dir, &totp).await?;
            if json {
                return print_json(&serde_json::json!({
                    "session_id": s.session_id, "mfa_at": s.mfa_at, "expires_at": s.expires_at,
                }));
            }
            println!(
                "MFA renewed at {} for session {} (until {})",
                s.mfa_at, s.session_id, s.expires_at
            );
            Ok(())
        }
        AgentCommand::Logout => {
            match umbra_agent::controller::logout(&dir).await? {
                Some(s) => println!("session {} ended", s.id),
                None => println!("no live session"),
            }
            Ok(())
        }
        AgentCommand::Status => status(&dir, json).await,
        AgentCommand::Knock { fwknop, .. } if fwknop.fwknop => {
            let (to, _) = umbra_agent::knock::send_fwknop(&fwknop_knock(&fwknop)?).await?;
            if json {
                return print_json(
                    &serde_json::json!({"format": "fwknop", "sent_to": to.to_string()}),
                );
            }
            println!("knocked at {to} (fwknop)");
            Ok(())
        }
        AgentCommand::Knock { service, .. } => {
            let session = dir.session()?.context(
                "not logged in: the session lists the services and their gateways; \
                 run `umbra agent login --user NAME`",
            )?;
            let targets: Vec<_> = session
                .services
                .iter()
                .filter(|s| service.as_ref().is_none_or(|want| &s.name == want))
                .collect();
            if targets.is_empty() {
                anyhow::bail!("the session grants no such service");
            }
            let mut sent = Vec::new();
            for access in targets {
                if access.spa_port.is_none() {
                    if service.is_some() {
                        anyhow::bail!(
                            "the gateway of {} is not dark: nothing to knock at",
                            access.name
                        );
                    }
                    continue;
                }
                let to = umbra_agent::knock::send(&dir, access).await?;
                sent.push(serde_json::json!({"service": access.name, "gateway": access.gateway, "sent_to": to.to_string()}));
                if !json {
                    println!(
                        "knocked at {to} for {} (gateway {})",
                        access.name, access.gateway
                    );
                }
            }
            if json {
                return print_json(&sent);
            }
            if sent.is_empty() {
                println!("no dark gateway among the session's services");
            }
            Ok(())
        }
        AgentCommand::Renew => {
            let r = umbra_agent::controller::renew(&dir).await?;
            if json {
                return print_json(&serde_json::json!({
                    "device_id": r.device_id, "serial": r.serial, "not_after": r.not_after,
                }));
            }
            println!(
                "device {} renewed: serial {}, valid until {}; log in again",
                r.device_id, r.serial, r.not_after
            );
            Ok(())
        }
        AgentCommand::Posture { root, send: true } => {
            match umbra_agent::controller::report_posture(&dir, &root).await? {
                Some(r) => println!(
                    "posture of device {} sent at {}; next report within {} s",
                    r.device_id, r.received_at, r.next_report_secs
                ),
                None => println!("posture unchanged since the last report; nothing sent"),
            }
            Ok(())
        }
        AgentCommand::Posture { root, send: false } => {
            let now = umbra_agent::posture::unix_now();
            let posture = umbra_agent::posture::collect(&root, now);
            if json {
                // Works before enrollment too: the device id is then a placeholder.
                let device_id = dir
                    .state()
                    .map_or_else(|_| "unenrolled".into(), |s| s.device_id);
                return print_json(&serde_json::json!({
                    "report": posture.report(&device_id), "findings": posture,
                }));
            }
            print!("{}", posture.render(now));
            Ok(())
        }
        AgentCommand::Connect { service, listen } => {
            let access = umbra_agent::connect::service_access(&dir, &service)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let local = listener.local_addr()?;
            if access.protocol == umbra_proto::control::Protocol::Tcp {
                println!(
                    "forwarding tcp://{local} to service {service} via {} (a tunnel per connection)",
                    access.gateway_url
                );
                println!("point your client (ssh -p, psql -p, nc …) at {local}");
            } else {
                println!(
                    "forwarding http://{local} to service {service} via {}",
                    access.gateway_url
                );
                println!("try: curl http://{local}/");
            }
            let shutdown = CancellationToken::new();
            crate::spawn_signal_handler(shutdown.clone());
            umbra_agent::connect::run(dir, &service, listener, shutdown).await?;
            Ok(())
        }
    }
}

async fn status(dir: &AgentDir, json: bool) -> Result<()> {
    let state = dir.state()?;
    let cert = dir.certificate()?;
    let not_after = x509_not_after(&cert);
    let live = umbra_agent::controller::session(dir).await?;
    if json {
        return print_json(&serde_json::json!({
            "controller_url": state.controller_url,
            "device_id": state.device_id,
            "certificate_not_after": not_after,
            "session": live,
        }));
    }
    println!("controller   {}", state.controller_url);
    println!("device       {}", state.device_id);
    println!("certificate  valid until {not_after}");
    match live {
        Some(s) => println!(
            "session      {} as {} (risk {}) until {}",
            s.id, s.user, s.risk, s.expires_at
        ),
        None => println!("session      none (run `umbra agent login --user NAME`)"),
    }
    Ok(())
}

fn x509_not_after(cert: &rustls_pki_types::CertificateDer<'_>) -> String {
    // Any trust domain parses the validity; the SPIFFE ID is not needed here.
    x509_parser::parse_x509_certificate(cert)
        .map(|(_, c)| c.validity().not_after.to_string())
        .unwrap_or_else(|_| "unknown".into())
}
