//! The main job, end to end with real processes on loopback: a controller
//! and a gateway started from their config files, set up with `umbra
//! admin`, a device enrolled and logged in with `umbra agent`, and the
//! stock `curl` reaching a service through `umbra agent connect`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cli::{agent_cli, connect, curl, curl_json};
use crate::support::*;

fn start_controller(config: &Path) -> Running {
    Running(
        Command::new(umbra_bin())
            .args(["controller", "--config"])
            .arg(config)
            .env("UMBRA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn controller"),
    )
}

async fn wait_ready(url: &str, ca_path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "controller not ready within 60 s"
        );
        if let Ok(ca) = CertificateDer::from_pem_file(ca_path)
            && let Ok((reqwest::StatusCode::OK, _)) = http(url, &ca, None)
                .try_call(reqwest::Method::GET, "/readyz", None, None)
                .await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Admin<'a> {
    url: &'a str,
    ca: &'a Path,
    token: String,
}

impl Admin<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new(umbra_bin())
            .arg("admin")
            .args(args)
            .env("UMBRA_CONTROLLER", self.url)
            .env("UMBRA_CA_CERT", self.ca)
            .env("UMBRA_ADMIN_TOKEN", &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("umbra admin");
        if let Some(text) = stdin
            && let Some(mut s) = child.stdin.take()
        {
            s.write_all(text.as_bytes()).expect("stdin");
        }
        let out = child.wait_with_output().expect("umbra admin");
        assert!(
            out.status.success(),
            "umbra admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.run(&all, None)).expect("JSON")
    }
}

// Multi-threaded: the upstream runs in this process while the test blocks
// on child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_login_connect_and_curl_through_a_gateway_process_that_resumes_after_a_controller_restart()
 {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let (_, kek) = umbra_pki::Kek::generate().expect("kek");
    std::fs::write(d.join("kek"), kek.as_str()).expect("kek file");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let data = d.join("controller");
    let config = d.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\nkek_file = {:?}\n",
            d.join("kek")
        ),
    )
    .expect("config");
    let mut controller = start_controller(&config);
    let ca = data.join("ca.pem");
    wait_ready(&url, &ca).await;

    // The operator's first steps, with the CLI.
    let mut admin = Admin {
        url: &url,
        ca: &ca,
        token: String::new(),
    };
    let bootstrap = data.join("bootstrap-admin-token");
    admin.token = admin
        .run(
            &[
                "bootstrap",
                "--token-file",
                bootstrap.to_str().expect("path"),
            ],
            None,
        )
        .trim()
        .to_owned();
    let password = "a long enough passphrase for alice";
    let created: Value = serde_json::from_str(&admin.run(
        &[
            "user",
            "add",
            "alice",
            "--group",
            "eng",
            "--password-stdin",
            "--json",
        ],
        Some(password),
    ))
    .expect("json");
    let secret = created["totp"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let enroll_token = admin.run(&["token", "enroll", "--user", "alice"], None);
    let gateway_token = admin.run(&["gateway", "add", "edge", "--san", "127.0.0.1"], None);
    admin.run(&["service", "set", "web", "--group", "eng"], None);
    admin.run(&["service", "set", "pg", "--user", "alice"], None);
    // PostgreSQL on loopback TCP, reached through a tunnel below: the
    // stock psql with a role this test creates (and drops).
    let pg_port: u16 = std::env::var("PGPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432);
    let pg_role = PgRole::create();

    // The service behind the gateway, and the gateway process.
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream_addr = upstream.local_addr().expect("addr");
    tokio::spawn(umbra_gateway::demo::serve(upstream, shutdown.clone()));
    let gw_port = free_port();
    std::fs::write(d.join("gateway-token"), gateway_token.trim()).expect("token file");
    let gw_config = d.join("gateway.toml");
    std::fs::write(
        &gw_config,
        format!(
            "controller_url = {url:?}\nlisten = \"127.0.0.1:{gw_port}\"\nstate_dir = {:?}\n\
             enrollment_token_file = {:?}\n\n[[routes]]\nservice = \"web\"\n\
             upstream = \"http://{upstream_addr}\"\n\n[[routes]]\nservice = \"pg\"\n\
             protocol = \"tcp\"\nupstream = \"tcp://127.0.0.1:{pg_port}\"\n",
            d.join("gateway"),
            d.join("gateway-token"),
        ),
    )
    .expect("gateway config");
    let _gateway = Running(
        Command::new(umbra_bin())
            .args(["gateway", "--config"])
            .arg(&gw_config)
            .env("UMBRA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gateway"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gateways = admin.json(&["gateway", "list"]);
        if gateways[0]["url"].is_string() {
            assert_eq!(gateways[0]["routes"][0]["service"], "web");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not register: {gateways}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("gateway/gateway.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the gateway key is private");

    // The user's side, with the agent.
    let agent = d.join("agent");
    let agent = agent.to_str().expect("path");
    let out = agent_cli(
        agent,
        &[
            "enroll",
            "--controller",
            &url,
            "--token",
            enroll_token.trim(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = umbra_controller::clock::Clock::now(&umbra_controller::clock::SystemClock);
    let out = agent_cli(
        agent,
        &[
            "login",
            "--user",
            "alice",
            "--password-stdin",
            "--totp",
            &oathtool(&secret, t),
        ],
        Some(password),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("service web"));
    let local = free_port();
    let _connect = connect(agent, "web", local);
    let echo = curl_json(
        local,
        "/orders/7",
        &["X-Auth-User: mallory", "X_Auth_User: root"],
    );
    assert_eq!(echo["headers"]["x-auth-user"], "alice");
    assert_eq!(echo["headers"]["x-auth-groups"], "eng");
    assert!(echo["headers"].get("x_auth_user").is_none());
    // The device certificate renews over mTLS; the session bound to the
    // old certificate goes with it, and a new login binds to the new one.
    let out = agent_cli(agent, &["renew"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = curl(local, "/orders/7", &[]);
    assert_eq!(code, 401, "no session after renewal");
    let out = agent_cli(
        agent,
        &[
            "login",
            "--user",
            "alice",
            "--password-stdin",
            "--totp",
            &oathtool(&secret, t + 30),
        ],
        Some(password),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo = curl_json(local, "/orders/7", &[]);
    assert_eq!(echo["headers"]["x-auth-user"], "alice");
    // Posture: unchanged since enrollment, nothing to send; a device that
    // changes (here a fixture root filesystem) sends its new report.
    let out = agent_cli(agent, &["posture", "--send"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing sent"));
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/tests/fixtures/hardened"
    );
    let out = agent_cli(agent, &["posture", "--send", "--root", fixture], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent at"));
    let devices = admin.json(&["device", "list"]);
    assert_eq!(devices[0]["posture"]["disk_encryption"], true, "{devices}");

    // A TCP service: psql through `umbra agent connect pg`.
    let pg_local = free_port();
    let _pg_connect = connect(agent, "pg", pg_local);
    let out = pg_role.psql(pg_local, "SELECT 'through the tunnel'");
    assert!(
        out.status.success(),
        "psql through the tunnel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("through the tunnel"));

    let status = agent_cli(agent, &["status", "--json"], None);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status json");
    let sid = status["session"]["id"]
        .as_str()
        .expect("live session")
        .to_owned();

    // The controller restarts; the gateway reconnects and resumes, and a
    // revocation made after the restart still reaches it.
    drop(controller);
    controller = start_controller(&config);
    wait_ready(&url, &ca).await;
    admin.run(&["session", "revoke", &sid], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = curl(local, "/orders/7", &[]);
        if code == 401 {
            break;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "revocation never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = agent_cli(agent, &["logout"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = curl(local, "/orders/7", &[]);
    assert_eq!(code, 401, "logged out: the agent has no session to send");
    drop(controller);
}

/// A PostgreSQL login role with a password (TCP logins use scram), made
/// over the local socket by the test's superuser and dropped at the end.
struct PgRole {
    name: String,
    password: String,
}

fn psql_admin(sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "/var/run/postgresql",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql must be installed (apt-get install postgresql-client)")
}

impl PgRole {
    fn create() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let role = Self {
            name: format!("umbra_e2e_{}", &suffix[..12]),
            password: suffix,
        };
        let out = psql_admin(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}'",
            role.name, role.password
        ));
        assert!(
            out.status.success(),
            "PostgreSQL is needed for the tunnel test: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        role
    }

    fn psql(&self, port: u16, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                &self.name,
                "-d",
                "postgres",
                "-tAc",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql")
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let _ = psql_admin(&format!("DROP ROLE IF EXISTS {}", self.name));
    }
}
