//! `umbra admin …`: the controller's admin API from the command line.
//! Human tables by default, the API's JSON with `--json`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use umbra_proto::api::{
    AdminTokenResponse, CreateEnrollmentTokenRequest, CreateGatewayRequest, CreateUserRequest,
    CreateUserResponse, Device, EnrollmentToken, Gateway, GatewayToken, List, PutServiceRequest,
    ResetTotpResponse, Role, Service, Session, User,
};

use crate::client::{ApiClient, read_ca};
use crate::table;

#[derive(Args)]
pub struct AdminArgs {
    /// Controller URL.
    #[arg(
        long,
        env = "UMBRA_CONTROLLER",
        global = true,
        default_value = "https://127.0.0.1:8443"
    )]
    controller: String,
    /// Admin credential.
    #[arg(long, env = "UMBRA_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The Umbra CA certificate (PEM) to trust the controller with.
    #[arg(long, env = "UMBRA_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Exchange the one-time bootstrap credential for an admin token.
    Bootstrap {
        #[arg(long)]
        token_file: PathBuf,
    },
    #[command(subcommand)]
    User(UserCommand),
    #[command(subcommand)]
    Device(DeviceCommand),
    #[command(subcommand)]
    Cert(CertCommand),
    #[command(subcommand)]
    Session(SessionCommand),
    #[command(subcommand)]
    Token(TokenCommand),
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    #[command(subcommand)]
    Keys(KeysCommand),
    #[command(subcommand)]
    Gateway(GatewayCommand),
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Rego policies on the controller's OPA-compatible API.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Upload modules (`.rego`: PUT /v1/policies/{file stem}) and data
    /// (`.json`: each top-level key to PUT /v1/data/{key}, as `opa -d`
    /// merges a data file at the root).
    Load {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The modules in force.
    List,
    /// Print one module's source.
    Get {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum GatewayCommand {
    /// Create a gateway and print its one-time enrollment token.
    Add {
        name: String,
        /// DNS name or IP address agents reach the gateway by (repeatable).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        #[arg(long)]
        ttl: Option<u64>,
    },
    List,
    /// Revoke a gateway: its control channel closes and it refuses all traffic.
    Revoke {
        name: String,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Set who may reach a service (replaces its allow lists).
    Set {
        name: String,
        #[arg(long = "user")]
        users: Vec<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Sign session tokens with a new key (old keys verify until their tokens expire).
    Rotate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints the password (if generated) and TOTP enrolment.
    Add {
        name: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    Suspend {
        name: String,
    },
    Resume {
        name: String,
    },
    Unlock {
        name: String,
    },
    /// New TOTP secret (the old one stops working).
    ResetTotp {
        name: String,
    },
    /// New one-time recovery codes (the previous set stops working).
    RecoveryCodes {
        name: String,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    List,
    Approve {
        id: String,
    },
    /// Revoke a device, its certificates and its sessions.
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Revoke one certificate by serial (hex).
    Revoke {
        serial: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    List {
        /// Include revoked and expired sessions.
        #[arg(long)]
        all: bool,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A one-time enrollment token for a user's device.
    Enroll {
        #[arg(long)]
        user: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// A new admin API credential.
    Admin {
        #[arg(long)]
        name: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn user_row(u: &User) -> Vec<String> {
    vec![
        u.name.clone(),
        u.role.as_str().into(),
        u.groups.join(","),
        format!("{:?}", u.status).to_lowercase(),
        u.locked_until.clone().unwrap_or_else(|| "-".into()),
        u.failed_logins.to_string(),
    ]
}

const USER_HEADERS: [&str; 6] = [
    "name",
    "role",
    "groups",
    "status",
    "locked until",
    "failures",
];

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn print_totp(user: &str, secret: &str, uri: &str) {
    println!("TOTP secret for {user}: {secret}");
    println!("otpauth URI: {uri}");
    match umbra_controller::totp::terminal_qr(uri) {
        Ok(qr) => println!("{qr}"),
        Err(e) => eprintln!("(no QR code: {e})"),
    }
}

pub async fn run(args: AdminArgs) -> Result<()> {
    if let AdminCommand::Audit(cmd) = args.command {
        if cmd.is_offline() {
            return crate::audit::run(None, cmd, args.json).await;
        }
        return run_online(AdminArgs {
            command: AdminCommand::Audit(cmd),
            ..args
        })
        .await;
    }
    run_online(args).await
}

async fn run_online(args: AdminArgs) -> Result<()> {
    let ca_path = args.ca_cert.clone().context(
        "the controller's CA certificate is needed: --ca-cert FILE or UMBRA_CA_CERT \
         (`umbra dev` writes DIR/ca.pem; `curl -k https://HOST/api/v1/ca` fetches it, verify its fingerprint)",
    )?;
    let ca = read_ca(&ca_path)?;
    let client = ApiClient::new(&args.controller, &ca, None)?;
    if let AdminCommand::Bootstrap { token_file } = &args.command {
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let client = client.with_token(Some(token.trim().to_owned()));
        let r: AdminTokenResponse = client.post("/api/v1/admin/bootstrap", &Value::Null).await?;
        if args.json {
            return print_json(&r);
        }
        println!("{}", r.token);
        eprintln!(
            "admin token {} expires {}; the bootstrap credential is now spent",
            r.id, r.expires_at
        );
        return Ok(());
    }
    let Some(token) = args.token.clone() else {
        bail!("an admin credential is needed: --token or UMBRA_ADMIN_TOKEN");
    };
    let api = client.with_token(Some(token));
    let json = args.json;
    match args.command {
        AdminCommand::Bootstrap { .. } => unreachable!("handled above"),
        AdminCommand::User(cmd) => user(&api, cmd, json).await,
        AdminCommand::Policy(cmd) => policy(&api, cmd, json).await,
        AdminCommand::Device(cmd) => {
            let devices = match cmd {
                DeviceCommand::List => {
                    api.get::<List<Device>>("/api/v1/admin/devices")
                        .await?
                        .items
                }
                DeviceCommand::Approve { id } => vec![
                    api.post(
                        &format!("/api/v1/admin/devices/{}/approve", urlencode(&id)),
                        &Value::Null,
                    )
                    .await?,
                ],
                DeviceCommand::Revoke { id } => vec![
                    api.post(
                        &format!("/api/v1/admin/devices/{}/revoke", urlencode(&id)),
                        &Value::Null,
                    )
                    .await?,
                ],
            };
            if json {
                return print_json(&devices);
            }
            let rows: Vec<_> = devices
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.user.clone(),
                        d.hostname.clone(),
                        format!("{:?}", d.status).to_lowercase(),
                        d.created_at.clone(),
                    ]
                })
                .collect();
            table::print(&["id", "user", "hostname", "status", "enrolled"], &rows);
            Ok(())
        }
        AdminCommand::Cert(CertCommand::Revoke { serial, reason }) => {
            let mut path = format!("/api/v1/admin/certificates/{}/revoke", urlencode(&serial));
            if let Some(r) = reason {
                path.push_str(&format!("?reason={}", urlencode(&r)));
            }
            let v: Value = api.post(&path, &Value::Null).await?;
            if json {
                print_json(&v)
            } else {
                println!("certificate {serial} revoked");
                Ok(())
            }
        }
        AdminCommand::Session(cmd) => {
            let sessions = match cmd {
                SessionCommand::List { all } => {
                    let q = if all { "?all=true" } else { "" };
                    api.get::<List<Session>>(&format!("/api/v1/admin/sessions{q}"))
                        .await?
                        .items
                }
                SessionCommand::Revoke { id } => vec![
                    api.post(
                        &format!("/api/v1/admin/sessions/{}/revoke", urlencode(&id)),
                        &Value::Null,
                    )
                    .await?,
                ],
            };
            if json {
                return print_json(&sessions);
            }
            let rows: Vec<_> = sessions
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.user.clone(),
                        s.device_id.clone(),
                        s.source_ip.clone(),
                        s.risk.to_string(),
                        s.expires_at.clone(),
                        s.revoked_reason.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table::print(
                &[
                    "id", "user", "device", "source", "risk", "expires", "revoked",
                ],
                &rows,
            );
            Ok(())
        }
        AdminCommand::Token(TokenCommand::Enroll { user, ttl }) => {
            let t: EnrollmentToken = api
                .post(
                    "/api/v1/admin/enrollment-tokens",
                    &CreateEnrollmentTokenRequest {
                        user,
                        ttl_seconds: ttl,
                    },
                )
                .await?;
            if json {
                print_json(&t)
            } else {
                println!("{}", t.token);
                eprintln!(
                    "one-time enrollment token for {}, expires {}",
                    t.user, t.expires_at
                );
                Ok(())
            }
        }
        AdminCommand::Token(TokenCommand::Admin { name, ttl }) => {
            let body = umbra_proto::api::CreateAdminTokenRequest {
                name,
                ttl_seconds: ttl,
            };
            let t: AdminTokenResponse = api.post("/api/v1/admin/tokens", &body).await?;
            if json {
                print_json(&t)
            } else {
                println!("{}", t.token);
                eprintln!("admin token {} ({}) expires {}", t.id, t.name, t.expires_at);
                Ok(())
            }
        }
        AdminCommand::Gateway(cmd) => gateway(&api, cmd, json).await,
        AdminCommand::Service(cmd) => service(&api, cmd, json).await,
        AdminCommand::Keys(KeysCommand::Rotate) => {
            let v: Value = api
                .post("/api/v1/admin/signing-keys/rotate", &Value::Null)
                .await?;
            if json {
                return print_json(&v);
            }
            println!(
                "signing with key {}; previous keys retire at {}",
                v["kid"].as_str().unwrap_or("?"),
                v["previous_keys_retire_at"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        AdminCommand::Audit(cmd) => crate::audit::run(Some(&api), cmd, json).await,
    }
}

async fn user(api: &ApiClient, cmd: UserCommand, json: bool) -> Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            groups,
            admin,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the password from stdin")?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let role = if admin { Role::Admin } else { Role::User };
            let r: CreateUserResponse = api
                .post(
                    "/api/v1/admin/users",
                    &CreateUserRequest {
                        name,
                        password,
                        groups,
                        role,
                    },
                )
                .await?;
            if json {
                return print_json(&r);
            }
            table::print(&USER_HEADERS, &[user_row(&r.user)]);
            if let Some(p) = &r.password {
                println!("password for {}: {p}", r.user.name);
            }
            print_totp(&r.user.name, &r.totp.secret, &r.totp.uri);
            Ok(())
        }
        UserCommand::List => {
            let users: List<User> = api.get("/api/v1/admin/users").await?;
            if json {
                return print_json(&users.items);
            }
            table::print(
                &USER_HEADERS,
                &users.items.iter().map(user_row).collect::<Vec<_>>(),
            );
            Ok(())
        }
        UserCommand::ResetTotp { name } => {
            let r: ResetTotpResponse = api
                .post(
                    &format!("/api/v1/admin/users/{}/reset-totp", urlencode(&name)),
                    &Value::Null,
                )
                .await?;
            if json {
                return print_json(&r);
            }
            print_totp(&r.user.name, &r.totp.secret, &r.totp.uri);
            Ok(())
        }
        UserCommand::RecoveryCodes { name } => {
            let r: umbra_proto::api::RecoveryCodes = api
                .post(
                    &format!("/api/v1/admin/users/{}/recovery-codes", urlencode(&name)),
                    &Value::Null,
                )
                .await?;
            if json {
                return print_json(&r);
            }
            println!(
                "One-time recovery codes for {} (each replaces a TOTP code once; store them safely):",
                r.user
            );
            for code in &r.codes {
                println!("  {code}");
            }
            Ok(())
        }
        UserCommand::Suspend { name } => user_action(api, &name, "suspend", json).await,
        UserCommand::Resume { name } => user_action(api, &name, "resume", json).await,
        UserCommand::Unlock { name } => user_action(api, &name, "unlock", json).await,
    }
}

async fn user_action(api: &ApiClient, name: &str, action: &str, json: bool) -> Result<()> {
    let u: User = api
        .post(
            &format!("/api/v1/admin/users/{}/{action}", urlencode(name)),
            &Value::Null,
        )
        .await?;
    if json {
        return print_json(&u);
    }
    table::print(&USER_HEADERS, &[user_row(&u)]);
    Ok(())
}

async fn policy(api: &ApiClient, cmd: PolicyCommand, json: bool) -> Result<()> {
    use reqwest::Method;
    // Ids and paths keep their slashes (OPA's ids may have them).
    let path_of = |s: &str| s.split('/').map(urlencode).collect::<Vec<_>>().join("/");
    match cmd {
        PolicyCommand::Load { files } => {
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let stem = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .context("the file name is the policy id: it must be UTF-8")?;
                if file.extension().is_some_and(|e| e == "json") {
                    let value: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))?;
                    let Value::Object(fields) = value else {
                        bail!("{}: a data file must hold a JSON object", file.display());
                    };
                    for (key, doc) in fields {
                        api.opa(
                            Method::PUT,
                            &format!("/v1/data/{}", urlencode(&key)),
                            "application/json",
                            Some(doc.to_string().into_bytes()),
                        )
                        .await
                        .with_context(|| format!("loading {}", file.display()))?;
                        println!("data.{key} loaded from {}", file.display());
                    }
                } else {
                    api.opa(
                        Method::PUT,
                        &format!("/v1/policies/{}", path_of(stem)),
                        "text/plain",
                        Some(text.into_bytes()),
                    )
                    .await
                    .with_context(|| format!("loading {}", file.display()))?;
                    println!("policy {stem} loaded from {}", file.display());
                }
            }
            Ok(())
        }
        PolicyCommand::List => {
            let v = api.opa(Method::GET, "/v1/policies", "", None).await?;
            if json {
                return print_json(&v);
            }
            let rows: Vec<_> = v["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let raw = p["raw"].as_str().unwrap_or("");
                    let package = raw
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("package "))
                        .unwrap_or("")
                        .trim()
                        .to_owned();
                    vec![
                        p["id"].as_str().unwrap_or("").to_owned(),
                        package,
                        raw.len().to_string(),
                    ]
                })
                .collect();
            table::print(&["id", "package", "bytes"], &rows);
            Ok(())
        }
        PolicyCommand::Get { id } => {
            let v = api
                .opa(
                    Method::GET,
                    &format!("/v1/policies/{}", path_of(&id)),
                    "",
                    None,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            print!("{}", v["result"]["raw"].as_str().unwrap_or(""));
            Ok(())
        }
        PolicyCommand::Delete { id } => {
            api.opa(
                Method::DELETE,
                &format!("/v1/policies/{}", path_of(&id)),
                "",
                None,
            )
            .await?;
            println!("policy {id} deleted");
            Ok(())
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_gateways(gateways: &[Gateway]) {
    let rows: Vec<_> = gateways
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.status.clone(),
                g.url.clone().unwrap_or_else(|| "-".into()),
                g.routes
                    .iter()
                    .map(|r| format!("{}={}{}", r.service, r.host, r.path_prefix))
                    .collect::<Vec<_>>()
                    .join(" "),
                g.certificate_expires_at
                    .clone()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table::print(&["name", "status", "url", "routes", "cert expires"], &rows);
}

async fn gateway(api: &ApiClient, cmd: GatewayCommand, json: bool) -> Result<()> {
    match cmd {
        GatewayCommand::Add { name, sans, ttl } => {
            let t: GatewayToken = api
                .post(
                    "/api/v1/admin/gateways",
                    &CreateGatewayRequest {
                        name,
                        sans,
                        ttl_seconds: ttl,
                    },
                )
                .await?;
            if json {
                return print_json(&t);
            }
            println!("{}", t.token);
            eprintln!(
                "one-time enrollment token for gateway {}, expires {}; put it in the gateway's \
                 enrollment_token_file",
                t.name, t.expires_at
            );
            Ok(())
        }
        GatewayCommand::List => {
            let list: List<Gateway> = api.get("/api/v1/admin/gateways").await?;
            if json {
                return print_json(&list.items);
            }
            print_gateways(&list.items);
            Ok(())
        }
        GatewayCommand::Revoke { name } => {
            let g: Gateway = api
                .post(
                    &format!("/api/v1/admin/gateways/{}/revoke", urlencode(&name)),
                    &Value::Null,
                )
                .await?;
            if json {
                return print_json(&g);
            }
            print_gateways(&[g]);
            Ok(())
        }
    }
}

fn print_services(services: &[Service]) {
    let rows: Vec<_> = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.allow_users.join(","),
                s.allow_groups.join(","),
                s.gateways.join(","),
            ]
        })
        .collect();
    table::print(&["service", "users", "groups", "gateways"], &rows);
}

async fn service(api: &ApiClient, cmd: ServiceCommand, json: bool) -> Result<()> {
    match cmd {
        ServiceCommand::Set {
            name,
            users,
            groups,
        } => {
            let s: Service = api
                .call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/admin/services/{}", urlencode(&name)),
                    Some(&PutServiceRequest {
                        allow_users: users,
                        allow_groups: groups,
                    }),
                )
                .await?;
            if json {
                return print_json(&s);
            }
            print_services(&[s]);
            Ok(())
        }
        ServiceCommand::List => {
            let list: List<Service> = api.get("/api/v1/admin/services").await?;
            if json {
                return print_json(&list.items);
            }
            print_services(&list.items);
            Ok(())
        }
        ServiceCommand::Delete { name } => {
            let v: Value = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/admin/services/{}", urlencode(&name)),
                    None::<&()>,
                )
                .await?;
            if json {
                return print_json(&v);
            }
            println!("service {name} deleted");
            Ok(())
        }
    }
}
