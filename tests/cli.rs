//! The real `umbra` binary: `umbra dev`, `umbra admin`, `umbra controller`.

use std::io::Read;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::support::*;

fn start_dev(dir: &std::path::Path) -> (Running, std::time::SystemTime) {
    let started = std::time::SystemTime::now();
    let child = Command::new(umbra_bin())
        .args(["dev", "--dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
        .env("UMBRA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn umbra dev");
    (Running(child), started)
}

/// Waits (bounded) for `umbra dev` to write dev.json after `since`.
fn wait_dev_json(
    dir: &std::path::Path,
    (dev, since): &mut (Running, std::time::SystemTime),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = dir.join("dev.json");
    while Instant::now() < deadline {
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= *since);
        if fresh && let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).expect("dev.json is JSON");
        }
        if let Ok(Some(status)) = dev.0.try_wait() {
            let mut err = String::new();
            dev.0.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!("umbra dev exited early ({status}): {err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("umbra dev did not write dev.json within 60 s");
}

/// Runs `umbra admin ARGS` against the dev controller, as the README shows.
fn admin_cli(info: &Value, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(umbra_bin())
        .arg("admin")
        .args(args)
        .env(
            "UMBRA_CONTROLLER",
            info["controller_url"].as_str().expect("url"),
        )
        .env("UMBRA_ADMIN_TOKEN", token)
        .env("UMBRA_CA_CERT", info["ca_cert"].as_str().expect("ca"))
        .output()
        .expect("umbra admin")
}

fn sigint(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn login_from_dev_json(dev: &Value, at: i64) -> (StatusCode, Value) {
    let agent = std::path::PathBuf::from(dev["agent_dir"].as_str().expect("agent_dir"));
    let ca = CertificateDer::from_pem_file(dev["ca_cert"].as_str().expect("ca")).expect("ca pem");
    let cert = std::fs::read_to_string(agent.join("device.crt")).expect("device cert");
    let key = std::fs::read_to_string(agent.join("device.key")).expect("device key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(agent.join("device.key"))
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "device key must be private");
    let client = http(
        dev["controller_url"].as_str().expect("url"),
        &ca,
        Some((&cert, &key)),
    );
    let code = oathtool(dev["totp_secret"].as_str().expect("secret"), at);
    client
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": dev["user"], "password": dev["password"], "totp": code}),
        )
        .await
}

/// Runs `umbra agent ARGS` with `stdin` as its standard input.
pub fn agent_cli(dir: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(umbra_bin())
        .arg("agent")
        .args(args)
        .env("UMBRA_AGENT_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("umbra agent");
    if let Some(text) = stdin
        && let Some(mut s) = child.stdin.take()
    {
        s.write_all(text.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("umbra agent")
}

/// `umbra agent connect SERVICE --listen 127.0.0.1:PORT`, ready when this returns.
pub fn connect(dir: &str, service: &str, port: u16) -> Running {
    let child = Command::new(umbra_bin())
        .args(["agent", "connect", service, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("UMBRA_AGENT_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("umbra agent connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agent connect not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running(child)
}

/// The stock `curl` against the agent's local port; the response as JSON.
pub fn curl_json(port: u16, path: &str, headers: &[&str]) -> Value {
    let (status, body) = curl(port, path, headers);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON body")
}

/// `curl` (must be installed); returns the HTTP status and the body.
pub fn curl(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl must be installed (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn now() -> i64 {
    umbra_controller::clock::Clock::now(&umbra_controller::clock::SystemClock)
}

#[tokio::test]
async fn umbra_dev_runs_logs_in_the_demo_user_and_reuses_its_directory() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let mut dev = start_dev(dir.path());
    let info = wait_dev_json(dir.path(), &mut dev);
    for key in [
        "controller_url",
        "gateway_url",
        "dashboard_url",
        "metrics_url",
        "admin_token",
        "user",
        "password",
        "totp_secret",
        "agent_dir",
        "service",
        "tcp_service",
    ] {
        assert!(info[key].is_string(), "dev.json lacks {key}: {info}");
    }
    // Three logins, each needs a later TOTP step within ±1 of now: start
    // early in a step, so the previous step's code is still good when the
    // first login reaches the controller (on a loaded machine a step
    // boundary could otherwise fall in between).
    let mut t = now();
    while t.rem_euclid(30) > 15 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        t = now();
    }
    // The agent as the printed commands use it: login, connect, curl.
    let agent_dir = info["agent_dir"].as_str().expect("agent_dir").to_owned();
    let login = agent_cli(
        &agent_dir,
        &[
            "login",
            "--user",
            "demo",
            "--password-stdin",
            "--totp",
            &oathtool(info["totp_secret"].as_str().expect("secret"), t - 30),
        ],
        Some(info["password"].as_str().expect("password")),
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let port = free_port();
    let _connect = connect(&agent_dir, "demo", port);
    let echo = curl_json(port, "/hello", &[]);
    assert_eq!(echo["headers"]["x-auth-user"], "demo");
    assert_eq!(echo["path"], "/hello");
    let (status, body) = login_from_dev_json(&info, t).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "demo");

    // The admin CLI, configured from the environment as the README shows.
    let out = admin_cli(
        &info,
        info["admin_token"].as_str().expect("token"),
        &["user", "list", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users: Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = users
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "demo"]);
    let out = admin_cli(&info, "uat1.bogus.bogus", &["session", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication_failed"));

    let out = admin_cli(
        &info,
        info["admin_token"].as_str().expect("token"),
        &["audit", "export"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "auth.login" && r["outcome"] == "allow")
    );
    assert!(
        records.len() < 100,
        "export must end: {} records",
        records.len()
    );

    // Ctrl-C stops it cleanly.
    sigint(&dev.0.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = dev.0.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "umbra dev did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");

    // Again on the same directory: same users, same password, same device.
    let mut again = start_dev(dir.path());
    let info2 = wait_dev_json(dir.path(), &mut again);
    assert_eq!(info2["password"], info["password"]);
    assert_eq!(info2["admin_token"], info["admin_token"]);
    assert_eq!(info2["device_id"], info["device_id"]);
    let (status, body) = login_from_dev_json(&info2, t + 30).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn controller_config_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("controller.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nlisten_port = 8443\n").expect("write");
    let out = Command::new(umbra_bin())
        .args(["controller", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_port"), "{err}");

    std::fs::write(&path, format!("data_dir = {:?}\n", dir.path())).expect("write");
    let out = Command::new(umbra_bin())
        .args(["controller", "--config"])
        .arg(&path)
        .env_remove("UMBRA_KEK")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UMBRA_KEK"));
}
