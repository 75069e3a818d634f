//! Two `umbra controller` processes on one PostgreSQL database: what must
//! hold across controllers lives in the store, not in either process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::support::*;

struct Node {
    _process: Running,
    url: String,
    http: Http,
    ca: CertificateDer<'static>,
}

/// Starts a controller process and waits (bounded) until it is ready.
async fn node(dir: &Path, kek: &Path, db_url: &str, extra: &str) -> Node {
    std::fs::create_dir_all(dir).expect("dir");
    let port = free_port();
    let config = dir.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {dir:?}\nkek_file = {kek:?}\n\
             [store]\nbackend = \"postgres\"\nurl = {db_url:?}\n{extra}"
        ),
    )
    .expect("config");
    let process = Running(
        Command::new(umbra_bin())
            .args(["controller", "--config"])
            .arg(&config)
            .env("UMBRA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn controller"),
    );
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "controller on {port} not ready within 60 s"
        );
        if let Ok(ca) = CertificateDer::from_pem_file(dir.join("ca.pem")) {
            let http = http(&url, &ca, None);
            if let Ok((StatusCode::OK, _)) = http
                .try_call(reqwest::Method::GET, "/readyz", None, None)
                .await
            {
                return Node {
                    _process: process,
                    url,
                    http,
                    ca,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now() -> i64 {
    umbra_controller::clock::Clock::now(&umbra_controller::clock::SystemClock)
}

async fn login(
    node: &Node,
    dev: &(String, String),
    user: &str,
    password: &str,
    code: &str,
) -> (StatusCode, Value) {
    http(&node.url, &node.ca, Some((&dev.0, &dev.1)))
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": user, "password": password, "totp": code}),
        )
        .await
}

#[tokio::test]
async fn totp_codes_and_lockouts_hold_across_controllers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Some(db) = umbra_store::pgtest::temp_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let kek = dir.path().join("kek");
    let (_, kek_text) = umbra_pki::Kek::generate().expect("kek");
    std::fs::write(&kek, kek_text.as_str()).expect("kek");

    // Many attempts from one address: a generous shared rate limit.
    let limits = "[auth]\nlogin_burst = 100\n";
    let a = node(&dir.path().join("a"), &kek, &db.url, limits).await;
    let bootstrap =
        std::fs::read_to_string(dir.path().join("a/bootstrap-admin-token")).expect("bootstrap");
    let (status, body) = a
        .http
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/bootstrap",
            Some(bootstrap.trim()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let admin = body["token"].as_str().expect("token").to_owned();
    let b = node(&dir.path().join("b"), &kek, &db.url, limits).await;
    assert_eq!(
        a.ca, b.ca,
        "both controllers serve the one CA from the store"
    );
    assert!(
        !dir.path().join("b/bootstrap-admin-token").exists(),
        "an admin exists: B issues no bootstrap"
    );

    // Admin state written through A is visible through B.
    let (status, created) = a
        .http
        .post(
            "/api/v1/admin/users",
            Some(&admin),
            json!({"name": "alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let password = created["password"].as_str().expect("password").to_owned();
    let secret = created["totp"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let (status, token) = b
        .http
        .post(
            "/api/v1/admin/enrollment-tokens",
            Some(&admin),
            json!({"user": "alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let (key, csr) = key_and_csr();
    let (status, enrolled) = a
        .http
        .post(
            "/api/v1/enroll",
            None,
            json!({"token": token["token"], "csr_pem": csr, "posture": posture(true)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    let dev = (
        enrolled["certificate_pem"]
            .as_str()
            .expect("cert")
            .to_owned(),
        key,
    );
    // The token was spent on A: B refuses it too.
    let (_, csr2) = key_and_csr();
    let (status, _) = b
        .http
        .post(
            "/api/v1/enroll",
            None,
            json!({"token": token["token"], "csr_pem": csr2, "posture": posture(true)}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A TOTP code used on A is refused on B.
    let t = now();
    let code = oathtool(&secret, t);
    let (status, body) = login(&a, &dev, "alice", &password, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = login(&b, &dev, "alice", &password, &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, audit) = b
        .http
        .get("/api/v1/admin/audit?limit=10000", Some(&admin))
        .await;
    let last_login = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .find(|r| r["action"] == "auth.login")
        .expect("login record")
        .clone();
    assert!(
        last_login["reason"]
            .as_str()
            .expect("reason")
            .starts_with("totp_replayed"),
        "{last_login}"
    );

    // A lockout reached on A holds on B, even with the right password and a fresh code.
    for _ in 0..5 {
        let (status, _) = login(&a, &dev, "alice", "wrong-password-x", "000000").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login(&b, &dev, "alice", &password, &oathtool(&secret, t + 30)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, user) = b.http.get("/api/v1/admin/users/alice", Some(&admin)).await;
    assert!(user["locked_until"].is_string(), "{user}");
    // A signing key rotated on A: the tokens A signs from now on are
    // accepted by B, which reads the new key from the store on first sight.
    let (status, rotated) = a
        .http
        .post(
            "/api/v1/admin/signing-keys/rotate",
            Some(&admin),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    // Unlocked through B, the user logs in through A.
    let (status, _) = b
        .http
        .post(
            "/api/v1/admin/users/alice/unlock",
            Some(&admin),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = login(&a, &dev, "alice", &password, &oathtool(&secret, t + 30)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().expect("token");
    let kid = jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid");
    assert_eq!(Some(kid.as_str()), rotated["kid"].as_str());
    let (status, session) = http(&b.url, &b.ca, Some((&dev.0, &dev.1)))
        .get("/api/v1/auth/session", Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");

    // A dump of the shared database holds no TOTP secret and no private key.
    let dump = Command::new("pg_dump")
        .arg(&db.url)
        .output()
        .expect("pg_dump (postgresql-client) must be installed");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("alice"), "the dump is of the right database");
    assert!(
        !dump.contains(&secret),
        "TOTP secret found in a PostgreSQL dump"
    );
    assert!(!dump.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn the_per_address_rate_limit_is_shared_by_the_controllers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Some(db) = umbra_store::pgtest::temp_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let kek = dir.path().join("kek");
    let (_, kek_text) = umbra_pki::Kek::generate().expect("kek");
    std::fs::write(&kek, kek_text.as_str()).expect("kek");
    // Four attempts per address, refilled at one a minute.
    let limits = "[auth]\nlogin_burst = 4\nlogin_rate_per_minute = 1\n";
    let a = node(&dir.path().join("a"), &kek, &db.url, limits).await;
    let b = node(&dir.path().join("b"), &kek, &db.url, limits).await;
    let attempt = |n: &Node| {
        let (key, csr) = key_and_csr();
        drop(key);
        let http = n.http.clone();
        async move {
            http.post(
                "/api/v1/enroll",
                None,
                json!({"token": "ue1.bogus.bogus", "csr_pem": csr, "posture": posture(true)}),
            )
            .await
            .0
        }
    };
    // Two on each controller spend the shared burst ...
    for n in [&a, &b, &a, &b] {
        assert_eq!(
            attempt(n).await,
            StatusCode::FORBIDDEN,
            "refused, but counted"
        );
    }
    // ... so the fifth is rate-limited wherever it lands.
    assert_eq!(attempt(&b).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempt(&a).await, StatusCode::TOO_MANY_REQUESTS);
}
