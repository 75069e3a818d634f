//! Test harness: an in-process controller on 127.0.0.1:0 with a manual
//! clock, an HTTP client that can present a device certificate, and helpers
//! that create users and devices through the API.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use umbra_controller::Controller;
use umbra_controller::clock::{Clock, ManualClock, SystemClock};
use umbra_controller::config::RawConfig;

pub struct TestController {
    pub url: String,
    /// Where the public endpoints are: `url`, or a dark controller's
    /// public listener.
    pub public_url: String,
    /// The source address of this harness's own requests (`public()`):
    /// an exempt one for a dark controller.
    pub local: Option<std::net::IpAddr>,
    pub controller: Arc<Controller>,
    pub clock: ManualClock,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Requires `oathtool`: with CI=true its absence fails the test.
pub fn oathtool(secret: &str, at: i64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("@{at}")])
        .output()
        .expect("oathtool must be installed (apt-get install oathtool)");
    assert!(
        out.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

pub async fn start() -> TestController {
    start_with("").await
}

/// Starts a controller whose config file holds `extra_toml`.
pub async fn start_with(extra_toml: &str) -> TestController {
    start_inner(extra_toml, false).await
}

/// A dark controller on loopback: knocks on a UDP port, userspace
/// pinholes of `pinhole_seconds`, the public endpoints on their own
/// listener, and 127.0.0.2 exempt: this harness (the admin) speaks from
/// there; devices knock from 127.0.0.1 or elsewhere in 127/8.
pub async fn start_dark(pinhole_seconds: u64) -> TestController {
    let toml = format!(
        "[spa]\nlisten = \"127.0.0.1:0\"\npublic_listen = \"127.0.0.1:0\"\n\
         pinhole_seconds = {pinhole_seconds}\nexempt = [\"127.0.0.2\"]\n\
         [firewall]\nbackend = \"userspace\"\n"
    );
    start_inner(&toml, true).await
}

async fn start_inner(extra_toml: &str, dark: bool) -> TestController {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, kek) = umbra_pki::Kek::generate().expect("kek");
    let toml = format!(
        "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n{extra_toml}",
        dir.path()
    );
    let config = RawConfig::from_toml(&dir.path().join("c.toml"), &toml)
        .expect("toml")
        .validate(Some(kek.as_str()))
        .expect("config");
    let clock = ManualClock::new(SystemClock.now());
    let controller = Controller::start(config, Arc::new(clock.clone()))
        .await
        .expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let (public, knock, public_url, local) = if dark {
        let public = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let public_url = format!(
            "https://127.0.0.1:{}",
            public.local_addr().expect("addr").port()
        );
        let knock = umbra_firewall::knock_socket("127.0.0.1:0".parse().expect("addr"))
            .expect("knock socket");
        (
            Some(public),
            Some(knock),
            public_url,
            Some("127.0.0.2".parse().expect("ip")),
        )
    } else {
        (None, None, url.clone(), None)
    };
    let shutdown = CancellationToken::new();
    let listeners = umbra_controller::server::Listeners {
        main: listener,
        public,
        knock,
    };
    tokio::spawn(umbra_controller::server::run_with(
        controller.clone(),
        listeners,
        shutdown.clone(),
    ));
    if dark {
        // Set once the pinholes (the exempt address's too) are in place.
        let start = std::time::Instant::now();
        while controller.dark.get().is_none() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "dark controller did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let bootstrap_file = controller
        .bootstrap_file
        .clone()
        .expect("fresh store writes a bootstrap credential");
    let bootstrap = std::fs::read_to_string(&bootstrap_file).expect("bootstrap file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&bootstrap_file)
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "bootstrap credential must be private");
    let mut tc = TestController {
        url,
        public_url,
        local,
        controller,
        clock,
        admin_token: String::new(),
        dir,
        shutdown,
    };
    let (status, body) = tc
        .public()
        .call(
            Method::POST,
            "/api/v1/admin/bootstrap",
            Some(bootstrap.trim()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tc.admin_token = body["token"].as_str().expect("token").to_owned();
    assert!(!bootstrap_file.exists(), "spent bootstrap file is removed");
    tc
}

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    /// Sends `body` (JSON value or raw text) and returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> (StatusCode, Value) {
        self.try_call(method, path, bearer, body)
            .await
            .expect("request failed at transport level")
    }

    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(text)) => req.header("content-type", "application/json").body(text),
            None => req,
        };
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, bearer, None).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, bearer, Some(Body::Json(body)))
            .await
    }
}

pub enum Body {
    Json(Value),
    Raw(String),
}

pub fn http(base: &str, ca: &CertificateDer<'static>, identity: Option<(&str, &str)>) -> Http {
    http_from(base, ca, identity, None)
}

/// As [`http`], with connections made from `local` if given.
pub fn http_from(
    base: &str,
    ca: &CertificateDer<'static>,
    identity: Option<(&str, &str)>,
    local: Option<std::net::IpAddr>,
) -> Http {
    let identity = identity.map(|(cert, key)| {
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert pem");
        (
            chain,
            PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem"),
        )
    });
    let tls = umbra_pki::tls::client_config(ca, identity).expect("tls");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .local_address(local)
        .build()
        .expect("client");
    Http {
        client,
        base: base.to_owned(),
    }
}

pub struct TestUser {
    pub name: String,
    pub password: String,
    pub totp_secret: String,
}

pub struct TestDevice {
    pub id: String,
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The SPA secret from the enrollment response (base64).
    pub spa_secret: String,
}

impl TestController {
    /// Stops the controller and hands over its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    pub fn ca(&self) -> CertificateDer<'static> {
        self.controller.ca.cert_der().clone()
    }

    /// An HTTP client for the controller's main listener, from this
    /// harness's own address.
    pub fn public(&self) -> Http {
        http_from(&self.url, &self.ca(), None, self.local)
    }

    /// An HTTP client for the public endpoints.
    pub fn public_endpoints(&self) -> Http {
        http(&self.public_url, &self.ca(), None)
    }

    pub fn with_device(&self, d: &TestDevice) -> Http {
        http(&self.url, &self.ca(), Some((&d.cert_pem, &d.key_pem)))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let (status, body) = self.public().get(path, Some(&self.admin_token)).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let (status, resp) = self
            .public()
            .post(path, Some(&self.admin_token), body)
            .await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {resp}");
        resp
    }

    pub async fn create_user(&self, name: &str, groups: &[&str]) -> TestUser {
        let body = self
            .admin_post(
                "/api/v1/admin/users",
                json!({ "name": name, "groups": groups }),
            )
            .await;
        TestUser {
            name: name.into(),
            password: body["password"]
                .as_str()
                .expect("generated password")
                .into(),
            totp_secret: body["totp"]["secret"].as_str().expect("secret").into(),
        }
    }

    pub async fn enrollment_token(&self, user: &str) -> String {
        let body = self
            .admin_post("/api/v1/admin/enrollment-tokens", json!({ "user": user }))
            .await;
        body["token"].as_str().expect("token").into()
    }

    pub async fn enroll(&self, user: &str) -> TestDevice {
        let token = self.enrollment_token(user).await;
        let (key_pem, csr_pem) = key_and_csr();
        let (status, body) = self
            .public_endpoints()
            .post(
                "/api/v1/enroll",
                None,
                json!({ "token": token, "csr_pem": csr_pem, "posture": posture(true) }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        TestDevice {
            id: body["device_id"].as_str().expect("id").into(),
            serial: body["serial"].as_str().expect("serial").into(),
            cert_pem: body["certificate_pem"].as_str().expect("cert").into(),
            key_pem,
            spa_secret: body["spa_secret"].as_str().expect("spa secret").into(),
        }
    }

    /// Logs in with a TOTP code for time `at` (a fresh step each time).
    pub async fn login_at(&self, d: &TestDevice, u: &TestUser, at: i64) -> (StatusCode, Value) {
        let code = oathtool(&u.totp_secret, at);
        self.with_device(d)
            .post(
                "/api/v1/auth/login",
                None,
                json!({ "user": u.name, "password": u.password, "totp": code }),
            )
            .await
    }

    pub async fn login(&self, d: &TestDevice, u: &TestUser) -> (StatusCode, Value) {
        self.login_at(d, u, self.now()).await
    }

    /// Audit records whose action is `action`, newest last.
    pub async fn audit(&self, action: &str) -> Vec<Value> {
        let body = self.admin_get("/api/v1/admin/audit?limit=10000").await;
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|r| r["action"] == action)
            .cloned()
            .collect()
    }

    /// Waits (bounded, 10 s) for an audit record of `action` whose reason
    /// contains `needle`: records written off the request path (TLS
    /// handshake refusals) land shortly after the peer sees the failure.
    pub async fn wait_audit(&self, action: &str, needle: &str) -> Value {
        for _ in 0..100 {
            let found = self.audit(action).await.into_iter().find(|r| {
                r["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains(needle))
            });
            if let Some(r) = found {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no {action} audit record containing {needle:?} within 10 s");
    }

    pub async fn last_audit_reason(&self, action: &str) -> String {
        let records = self.audit(action).await;
        let last = records
            .last()
            .unwrap_or_else(|| panic!("no audit record for {action}"));
        format!(
            "{}: {}",
            last["outcome"].as_str().unwrap_or(""),
            last["reason"].as_str().unwrap_or("")
        )
    }
}

pub fn key_and_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key.serialize_pem(), csr)
}

pub fn posture(healthy: bool) -> Value {
    json!({
        "device_id": "test", "hostname": "laptop", "os_version": "6.1", "patch_level": "2026-11",
        "antivirus_status": healthy, "firewall_enabled": healthy, "disk_encryption": healthy,
        "last_scan": if healthy { umbra_controller::clock::rfc3339(SystemClock.now()) } else { String::new() },
    })
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

pub fn umbra_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_umbra"))
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
