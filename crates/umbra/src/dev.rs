//! `umbra dev`: the controller on an embedded SQLite store in one directory,
//! a gateway in front of a demo upstream that echoes what it receives, an
//! admin, a demo user granted the demo service and an enrolled local
//! device, all set up through the real API. Running it again reuses the
//! directory. It never touches the host firewall.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use umbra_controller::clock::{Clock, SystemClock};
use umbra_controller::config::RawConfig;
use umbra_proto::api::{
    AdminTokenResponse, CreateEnrollmentTokenRequest, CreateGatewayRequest, CreateUserRequest,
    CreateUserResponse, DeviceStatus, EnrollmentToken, GatewayToken, List, Role, User,
};

use crate::client::ApiClient;

#[derive(Args)]
pub struct DevArgs {
    /// State directory (created if missing, reused if present).
    #[arg(long, default_value = ".umbra-dev")]
    dir: PathBuf,
    /// Controller listen address (port 0 picks a free port; see dev.json).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Gateway listen address (port 0 picks a free port; see dev.json).
    #[arg(long, default_value = "127.0.0.1:9443")]
    gateway_listen: SocketAddr,
}

/// The demo HTTP service behind the gateway.
const SERVICE: &str = "demo";
/// The demo TCP service: an echo server behind the gateway.
const TCP_SERVICE: &str = "demo-tcp";
const GATEWAY: &str = "dev";

const DEMO_USER: &str = "demo";
const ADMIN_USER: &str = "admin";

/// The native policy `umbra dev` starts with (`policy.toml` in its
/// directory): device compliance checked on every request but only
/// reported, so the demo runs on any machine and the audit trail shows what
/// a deployment would refuse.
const DEV_POLICY: &str = "\
# umbra dev's native policy (docs/policy.md); edit it and restart umbra dev.
# Access comes from the grants (umbra admin service ...). Every request is
# checked against the `standard` compliance policy, in report-only mode:
# findings go to the audit trail (\"report-only: ...\"), nothing is denied.
[compliance]
required = \"standard\"
report_only = true
";

fn write_private(path: &Path, text: &str) -> Result<()> {
    umbra_controller::state::write_private(path, text).map_err(Into::into)
}

pub async fn run(args: DevArgs) -> Result<()> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)?;
    let dir = dir.canonicalize()?;
    let kek_path = dir.join("kek");
    if !kek_path.exists() {
        let (_, text) = umbra_pki::Kek::generate()?;
        write_private(&kek_path, &format!("{}\n", text.as_str()))?;
    }
    let previous: Value = std::fs::read_to_string(dir.join("dev.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);

    // Kept across runs, so a developer's edits stay.
    let policy_path = dir.join("policy.toml");
    if !policy_path.exists() {
        std::fs::write(&policy_path, DEV_POLICY)
            .with_context(|| format!("writing {}", policy_path.display()))?;
    }
    let mut raw = RawConfig {
        data_dir: Some(dir.clone()),
        kek_file: Some(kek_path),
        policy: umbra_controller::config::RawPolicy {
            file: Some(policy_path),
        },
        ..RawConfig::default()
    };
    raw.listen = Some(args.listen.to_string());
    let config = raw.validate(None)?;
    let controller = umbra_controller::Controller::start(config, Arc::new(SystemClock))
        .await
        .context("starting the controller")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (is another `umbra dev` running? try --listen 127.0.0.1:0)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let ca_path = dir.join("ca.pem");

    let shutdown = CancellationToken::new();
    crate::spawn_signal_handler(shutdown.clone());
    let server = tokio::spawn(umbra_controller::server::run(
        controller.clone(),
        listener,
        shutdown.clone(),
    ));

    let mut tasks = Vec::new();
    let setup = async {
        let ca = controller.ca.cert_der().clone();
        let public = ApiClient::new(&url, &ca, None)?;
        let admin_token = admin_token(&controller, &public, &previous).await?;
        let api = public.clone().with_token(Some(admin_token.clone()));
        let users: List<User> = api.get("/api/v1/admin/users").await?;
        let has = |n: &str| users.items.iter().any(|u| u.name == n);
        let mut admin_creds = (
            str_of(&previous, "admin_password"),
            str_of(&previous, "admin_totp_secret"),
        );
        if !has(ADMIN_USER) {
            let r = create_user(&api, ADMIN_USER, Role::Admin, vec!["admins".into()]).await?;
            admin_creds = (r.password, Some(r.totp.secret));
        }
        let (password, totp_secret) = if has(DEMO_USER) {
            match (
                str_of(&previous, "password"),
                str_of(&previous, "totp_secret"),
            ) {
                (Some(p), Some(t)) => (p, t),
                _ => bail!(
                    "{} holds users but no usable dev.json; remove the directory to start over",
                    dir.display()
                ),
            }
        } else {
            let r = create_user(&api, DEMO_USER, Role::User, vec!["engineering".into()]).await?;
            (
                r.password.context("controller generated no password")?,
                r.totp.secret,
            )
        };
        let agent_dir = dir.join("agent");
        let device = ensure_device(
            &api,
            &url,
            &agent_dir,
            controller.clock.as_ref(),
            &controller,
        )
        .await?;
        let (gateway_url, gateway_metrics_url) =
            start_gateway(&api, &url, &dir, &args, &shutdown, &mut tasks).await?;
        for service in [SERVICE, TCP_SERVICE] {
            api.call::<Value>(
                reqwest::Method::PUT,
                &format!("/api/v1/admin/services/{service}"),
                Some(&json!({ "allow_users": [DEMO_USER] })),
            )
            .await
            .with_context(|| format!("granting the demo service {service}"))?;
        }
        let dev_json = json!({
            "controller_url": url,
            "gateway_url": gateway_url,
            "dashboard_url": format!("{url}/ui/"),
            "metrics_url": format!("{url}/metrics"),
            "gateway_metrics_url": gateway_metrics_url,
            "service": SERVICE,
            "tcp_service": TCP_SERVICE,
            "admin_token": admin_token,
            "user": DEMO_USER,
            "password": password,
            "totp_secret": totp_secret,
            "agent_dir": agent_dir,
            "ca_cert": ca_path,
            "device_id": device,
            "admin_user": ADMIN_USER,
            "admin_password": admin_creds.0,
            "admin_totp_secret": admin_creds.1,
        });
        let dev_json_path = dir.join("dev.json");
        write_private(&dev_json_path, &serde_json::to_string_pretty(&dev_json)?)?;
        print_summary(
            &dir,
            &url,
            &gateway_url,
            &admin_token,
            &password,
            &totp_secret,
            &agent_dir,
            &ca_path,
            &controller,
        )?;
        anyhow::Ok(())
    };
    let result = setup.await;
    if let Err(e) = result {
        shutdown.cancel();
        let _ = server.await;
        for t in tasks {
            let _ = t.await;
        }
        return Err(e);
    }
    server.await.context("controller task")??;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The admin credential: the previous run's if it still works, else the
/// bootstrap credential exchanged through the API, else (the directory is
/// ours) a fresh one minted by the controller.
async fn admin_token(
    controller: &umbra_controller::Controller,
    public: &ApiClient,
    previous: &Value,
) -> Result<String> {
    if let Some(t) = str_of(previous, "admin_token") {
        let api = public.clone().with_token(Some(t.clone()));
        if api.get::<List<User>>("/api/v1/admin/users").await.is_ok() {
            return Ok(t);
        }
    }
    if let Some(path) = &controller.bootstrap_file {
        let bootstrap = std::fs::read_to_string(path)?;
        let api = public.clone().with_token(Some(bootstrap.trim().to_owned()));
        let r: AdminTokenResponse = api.post("/api/v1/admin/bootstrap", &Value::Null).await?;
        return Ok(r.token);
    }
    let (_, token) = controller
        .issue_admin_token("umbra-dev", "umbra-dev")
        .await
        .map_err(|f| anyhow::anyhow!("issuing an admin token: {}", f.message))?;
    Ok(token)
}

async fn create_user(
    api: &ApiClient,
    name: &str,
    role: Role,
    groups: Vec<String>,
) -> Result<CreateUserResponse> {
    api.post(
        "/api/v1/admin/users",
        &CreateUserRequest {
            name: name.into(),
            password: None,
            groups,
            role,
        },
    )
    .await
    .with_context(|| format!("creating user {name}"))
}

/// Enrolls the local device for the demo user (as `umbra agent enroll`
/// would) unless its certificate is still good for a while. Returns the
/// device id.
async fn ensure_device(
    api: &ApiClient,
    url: &str,
    agent_dir: &Path,
    clock: &dyn Clock,
    controller: &umbra_controller::Controller,
) -> Result<String> {
    let dir = umbra_agent::dir::AgentDir::new(agent_dir);
    if let (Ok(der), Ok(mut state)) = (dir.certificate(), dir.state())
        && let Ok(peer) = umbra_pki::PeerCertificate::parse(&der, controller.ca.trust_domain())
        && peer.not_after > clock.now() + 3600
    {
        let devices: List<umbra_proto::api::Device> = api.get("/api/v1/admin/devices").await?;
        if devices
            .items
            .iter()
            .any(|d| d.id == peer.device_id && d.status == DeviceStatus::Approved)
        {
            // The same device; the controller may listen on another port.
            state.controller_url = url.to_owned();
            umbra_agent::dir::write_file(
                &dir.file("agent.json"),
                &serde_json::to_string_pretty(&state)?,
                false,
            )?;
            return Ok(peer.device_id);
        }
    }
    let token: EnrollmentToken = api
        .post(
            "/api/v1/admin/enrollment-tokens",
            &CreateEnrollmentTokenRequest {
                user: DEMO_USER.into(),
                ttl_seconds: Some(600),
            },
        )
        .await?;
    let r = umbra_agent::controller::enroll(&dir, url, &token.token)
        .await
        .context("enrolling the local device")?;
    Ok(r.device_id)
}

/// The demo upstream on a free loopback port and the gateway in front of
/// it, enrolled through the admin API on the first run. Returns its URL
/// and its metrics URL (a plain listener on a free loopback port).
async fn start_gateway(
    api: &ApiClient,
    url: &str,
    dir: &Path,
    args: &DevArgs,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(String, String)> {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tasks.push(tokio::spawn(umbra_gateway::demo::serve(
        upstream,
        shutdown.clone(),
    )));
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tasks.push(tokio::spawn(umbra_gateway::demo::serve_tcp_echo(
        echo,
        shutdown.clone(),
    )));
    let listener = tokio::net::TcpListener::bind(args.gateway_listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (another `umbra dev`? try --gateway-listen 127.0.0.1:0)",
                args.gateway_listen
            )
        })?;
    let gateway_url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_addr = metrics_listener.local_addr()?;
    let state_dir = dir.join("gateway");
    let cert_path = state_dir.join("gateway.crt");
    // A directory left unused past the certificate's life: enroll again.
    let expired = std::fs::read(&cert_path)
        .ok()
        .and_then(|pem| {
            let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).ok()?;
            let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
            Some(c.validity().not_after.timestamp() <= SystemClock.now() + 60)
        })
        .unwrap_or(false);
    if expired {
        std::fs::remove_file(&cert_path)?;
    }
    let mut token = None;
    if !cert_path.exists() {
        let t: GatewayToken = api
            .post(
                "/api/v1/admin/gateways",
                &CreateGatewayRequest {
                    name: GATEWAY.into(),
                    sans: vec!["127.0.0.1".into(), "localhost".into()],
                    ttl_seconds: Some(600),
                },
            )
            .await
            .context("creating the dev gateway")?;
        token = Some(zeroize::Zeroizing::new(t.token));
    }
    let raw = umbra_gateway::config::RawConfig {
        controller_url: url.to_owned(),
        listen: listener.local_addr()?.to_string(),
        public_url: Some(gateway_url.clone()),
        state_dir,
        enrollment_token: token.map(|t| t.to_string()),
        enrollment_token_file: None,
        max_staleness_seconds: None,
        resync_interval_seconds: None,
        assertion_ttl_seconds: None,
        workers: None,
        // Dark, as a real gateway would be, but with userspace pinholes:
        // `umbra dev` never touches the host's firewall. The agent knocks
        // by itself before it connects.
        spa: Some(umbra_gateway::spa_config::RawSpa {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        }),
        firewall: Some(umbra_firewall::FirewallConfig {
            backend: umbra_firewall::BackendKind::Userspace,
            ..Default::default()
        }),
        limits: Default::default(),
        forward_auth: None,
        metrics: Some(umbra_gateway::config::RawMetrics {
            listen: metrics_addr.to_string(),
        }),
        routes: vec![
            umbra_gateway::config::RawRoute {
                service: SERVICE.into(),
                host: None,
                path_prefix: None,
                upstream: format!("http://{upstream_addr}"),
                protocol: None,
                upstream_http2: None,
            },
            umbra_gateway::config::RawRoute {
                service: TCP_SERVICE.into(),
                host: None,
                path_prefix: None,
                upstream: format!("tcp://{echo_addr}"),
                protocol: Some("tcp".into()),
                upstream_http2: None,
            },
        ],
    };
    let gateway = umbra_gateway::Gateway::start(raw.validate()?, Arc::new(SystemClock))
        .await
        .context("starting the dev gateway")?;
    // Register before returning, so the login that follows sees the route.
    umbra_gateway::control::register(&gateway)
        .await
        .map_err(|e| anyhow::anyhow!("registering the dev gateway: {e}"))?;
    tasks.push(tokio::spawn(umbra_gateway::metrics::serve(
        gateway.clone(),
        metrics_listener,
        shutdown.clone(),
    )));
    let shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = umbra_gateway::server::run(gateway, listener, shutdown).await {
            tracing::error!(error = %e, "gateway stopped");
        }
    }));
    Ok((gateway_url, format!("http://{metrics_addr}/metrics")))
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    dir: &Path,
    url: &str,
    gateway_url: &str,
    admin_token: &str,
    password: &str,
    totp_secret: &str,
    agent_dir: &Path,
    ca_path: &Path,
    controller: &umbra_controller::Controller,
) -> Result<()> {
    let secret =
        totp_rs::Secret::try_from_base32(totp_secret).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let p = umbra_controller::totp::provisioning(
        secret.as_ref(),
        &controller.config.totp_issuer,
        DEMO_USER,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    println!();
    println!("Umbra dev is running. State: {}", dir.display());
    println!("  controller     {url}");
    println!("  dev.json       {}", dir.join("dev.json").display());
    println!("  demo user      {DEMO_USER}");
    println!("  password       {password}");
    crate::admin::print_totp(DEMO_USER, totp_secret, &p.uri);
    // Device compliance in report-only mode: what the checks found, and
    // what did not pass (it raises the login risk score, nothing more).
    let now = umbra_agent::posture::unix_now();
    let posture = umbra_agent::posture::collect(Path::new("/"), now);
    let checks = [
        (
            "disk encryption",
            posture.disk_encryption.value,
            &posture.disk_encryption.why,
        ),
        ("firewall", posture.firewall.value, &posture.firewall.why),
        ("antivirus", posture.antivirus.value, &posture.antivirus.why),
    ];
    println!(
        "Device compliance ({}) runs in report-only mode here: failures only raise the login risk.",
        agent_dir.display()
    );
    for (name, value, why) in checks {
        let verdict = match value {
            Some(true) => "ok",
            Some(false) => "FAILS",
            None => "unknown",
        };
        println!("  {name:<16} {verdict:<8} {why}");
    }
    if posture
        .last_patch
        .value
        .is_none_or(|t| now - t > 30 * 86400)
    {
        println!(
            "  {:<16} {:<8} {}",
            "patches", "stale", posture.last_patch.why
        );
    }
    println!();
    let exe = std::env::current_exe().map_or_else(|_| "umbra".into(), |p| p.display().to_string());
    println!(
        "  gateway        {gateway_url} (service {SERVICE:?} -> demo HTTP upstream, {TCP_SERVICE:?} -> TCP echo)"
    );
    println!();
    println!("Try next (in another terminal):");
    println!("  export UMBRA_AGENT_DIR={}", agent_dir.display());
    println!(
        "  {exe} agent login --user {DEMO_USER} --password-stdin --totp $(oathtool --totp -b {totp_secret}) <<< '{password}'"
    );
    println!("  {exe} agent connect {SERVICE} --listen 127.0.0.1:8080 &");
    println!("  curl -s http://127.0.0.1:8080/hello   # the upstream echoes the identity headers");
    println!("  {exe} agent connect {TCP_SERVICE} --listen 127.0.0.1:8081 &");
    println!("  echo hello | nc -q1 127.0.0.1 8081     # a TCP echo service, through a tunnel");
    println!();
    println!("Administer:");
    println!(
        "  export UMBRA_CONTROLLER={url} UMBRA_CA_CERT={} UMBRA_ADMIN_TOKEN={admin_token}",
        ca_path.display()
    );
    println!("  {exe} admin session list");
    println!("  {exe} admin service list");
    println!("Press Ctrl-C to stop.");
    Ok(())
}
