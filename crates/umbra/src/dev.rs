//! `umbra dev`: the controller on an embedded SQLite store in one directory,
//! with an admin, a demo user and an enrolled local device, set up through
//! the real API. Running it again reuses the directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use umbra_controller::clock::{Clock, SystemClock};
use umbra_controller::config::RawConfig;
use umbra_proto::api::{
    AdminTokenResponse, CreateEnrollmentTokenRequest, CreateUserRequest, CreateUserResponse,
    DeviceStatus, EnrollRequest, EnrollResponse, EnrollmentToken, List, Role, User,
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
}

const DEMO_USER: &str = "demo";
const ADMIN_USER: &str = "admin";

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

    let mut raw = RawConfig {
        data_dir: Some(dir.clone()),
        kek_file: Some(kek_path),
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
            &public,
            &agent_dir,
            controller.clock.as_ref(),
            &controller,
        )
        .await?;
        let dev_json = json!({
            "controller_url": url,
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
            &admin_token,
            &password,
            &totp_secret,
            &agent_dir,
            &ca_path,
            &controller,
        )?;
        anyhow::Ok(())
    };
    if let Err(e) = setup.await {
        shutdown.cancel();
        let _ = server.await;
        return Err(e);
    }
    server.await.context("controller task")??;
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

/// Enrolls the local device for the demo user unless its certificate is
/// still good for a while. Returns the device id.
async fn ensure_device(
    api: &ApiClient,
    public: &ApiClient,
    agent_dir: &Path,
    clock: &dyn Clock,
    controller: &umbra_controller::Controller,
) -> Result<String> {
    std::fs::create_dir_all(agent_dir)?;
    set_mode(agent_dir, 0o700)?;
    let cert_path = agent_dir.join("device.crt");
    if let Ok(der) = CertificateDer::from_pem_file(&cert_path)
        && let Ok(peer) = umbra_pki::PeerCertificate::parse(&der, controller.ca.trust_domain())
        && peer.not_after > clock.now() + 3600
    {
        let devices: List<umbra_proto::api::Device> = api.get("/api/v1/admin/devices").await?;
        if devices
            .items
            .iter()
            .any(|d| d.id == peer.device_id && d.status == DeviceStatus::Approved)
        {
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
    let key = crate::device::new_key_and_csr("umbra-dev-device")?;
    let posture = crate::device::local_posture("local");
    let r: EnrollResponse = public
        .post(
            "/api/v1/enroll",
            &EnrollRequest {
                token: token.token,
                csr_pem: key.csr_pem,
                posture,
            },
        )
        .await
        .context("enrolling the local device")?;
    write_private(&agent_dir.join("device.key"), &key.key_pem)?;
    std::fs::write(&cert_path, &r.certificate_pem)?;
    std::fs::write(agent_dir.join("ca.pem"), &r.ca_pem)?;
    Ok(r.device_id)
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    dir: &Path,
    url: &str,
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
    println!(
        "The local device ({}) reports no antivirus, firewall or disk encryption it could verify:",
        agent_dir.display()
    );
    println!(
        "device compliance runs in report-only mode here, so these only raise the login risk score."
    );
    println!();
    println!("Try next:");
    println!(
        "  export UMBRA_CONTROLLER={url} UMBRA_CA_CERT={} UMBRA_ADMIN_TOKEN={admin_token}",
        ca_path.display()
    );
    let exe = std::env::current_exe().map_or_else(|_| "umbra".into(), |p| p.display().to_string());
    println!("  {exe} admin user list");
    println!(
        "  curl --cacert {ca} --cert {a}/device.crt --key {a}/device.key \\",
        ca = ca_path.display(),
        a = agent_dir.display()
    );
    println!("    -H 'content-type: application/json' \\");
    println!(
        "    -d '{{\"user\":\"{DEMO_USER}\",\"password\":\"{password}\",\"totp\":\"'$(oathtool --totp -b {totp_secret})'\"}}' \\"
    );
    println!("    {url}/api/v1/auth/login");
    println!("Press Ctrl-C to stop.");
    Ok(())
}
