//! Admin credentials, the bootstrap credential, and state across restarts.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use umbra_controller::Controller;
use umbra_controller::clock::SystemClock;
use umbra_controller::config::RawConfig;

use crate::support::*;

#[tokio::test]
async fn admin_calls_need_a_valid_admin_credential() {
    let tc = start().await;
    let http = tc.public();
    let (status, body) = http.get("/api/v1/admin/users", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "authentication_failed")
    );
    assert_eq!(
        tc.last_audit_reason("admin.authenticate").await,
        "deny: no_credential"
    );
    let forged = {
        let mut parts: Vec<String> = tc.admin_token.split('.').map(str::to_owned).collect();
        parts[2] = "x".repeat(43);
        parts.join(".")
    };
    let (status, _) = http.get("/api/v1/admin/users", Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("admin.authenticate").await,
        "deny: admin_token_bad_secret"
    );

    // A second admin token, then revoked.
    let extra = tc
        .admin_post(
            "/api/v1/admin/tokens",
            json!({"name": "ci", "ttl_seconds": 3600}),
        )
        .await;
    let extra_token = extra["token"].as_str().expect("token").to_owned();
    assert_eq!(
        http.get("/api/v1/admin/users", Some(&extra_token)).await.0,
        StatusCode::OK
    );
    tc.admin_post(
        &format!(
            "/api/v1/admin/tokens/{}/revoke",
            extra["id"].as_str().expect("id")
        ),
        json!(null),
    )
    .await;
    assert_eq!(
        http.get("/api/v1/admin/users", Some(&extra_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        tc.last_audit_reason("admin.authenticate").await,
        "deny: admin_token_revoked"
    );

    // A user's session is not an admin credential; an admin's is.
    let user = tc.create_user("plain", &[]).await;
    let dev = tc.enroll("plain").await;
    let (_, login) = tc.login(&dev, &user).await;
    let (status, _) = tc
        .with_device(&dev)
        .get("/api/v1/admin/users", login["token"].as_str())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("admin.authenticate").await,
        "deny: not_an_admin"
    );
    let boss = tc
        .admin_post(
            "/api/v1/admin/users",
            json!({"name": "boss", "role": "admin"}),
        )
        .await;
    let boss = TestUser {
        name: "boss".into(),
        password: boss["password"].as_str().expect("pw").into(),
        totp_secret: boss["totp"]["secret"].as_str().expect("secret").into(),
    };
    let boss_dev = tc.enroll("boss").await;
    let (status, login) = tc.login(&boss_dev, &boss).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let (status, users) = tc
        .with_device(&boss_dev)
        .get("/api/v1/admin/users", login["token"].as_str())
        .await;
    assert_eq!(status, StatusCode::OK, "{users}");
    let reads = tc.audit("admin.read").await;
    assert!(
        reads
            .iter()
            .any(|r| r["actor"] == "user:boss" && r["resource"] == "/api/v1/admin/users")
    );
    let records = tc.audit("user.create").await;
    assert_eq!(
        records.first().expect("record")["actor"],
        "admin_token:bootstrap-admin"
    );
}

#[tokio::test]
async fn the_bootstrap_credential_works_once_and_only_for_the_exchange() {
    let tc = start().await;
    // `start` exchanged it already; a replay of the same text is refused.
    let records = tc.audit("admin.bootstrap.issue").await;
    assert_eq!(records.len(), 1);
    let (status, _) = tc
        .public()
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/bootstrap",
            Some(&tc.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("admin.bootstrap.exchange").await,
        "deny: bootstrap_token_malformed"
    );
}

#[tokio::test]
async fn secrets_stay_sealed_at_rest_and_a_wrong_kek_is_refused() {
    let tc = start().await;
    let user = tc.create_user("alice", &[]).await;
    tc.enroll("alice").await;
    let kept = tc.stop();
    let dir = kept.path().to_owned();
    let kek_file = dir.join("kek");

    // The SQLite file never holds the TOTP secret, the CA key or the signing key in the clear.
    let mut raw_bytes = Vec::new();
    for name in ["umbra.db", "umbra.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            raw_bytes.extend(b);
        }
    }
    let haystack = String::from_utf8_lossy(&raw_bytes);
    assert!(
        !haystack.contains(&user.totp_secret),
        "TOTP secret found in the database file"
    );
    assert!(!haystack.contains("PRIVATE KEY"));

    // A different KEK cannot open the store: refused with a clear error.
    let (_, wrong) = umbra_pki::Kek::generate().expect("kek");
    std::fs::write(&kek_file, wrong.as_str()).expect("write");
    let config = RawConfig::from_toml(
        &dir.join("c.toml"),
        &format!("data_dir = {dir:?}\nkek_file = {kek_file:?}\n"),
    )
    .expect("toml")
    .validate(None)
    .expect("config");
    let err = Controller::start(config, Arc::new(SystemClock))
        .await
        .expect_err("wrong KEK");
    assert!(err.to_string().contains("key-encryption key"), "{err}");
}

#[tokio::test]
async fn controller_restart_keeps_the_ca_users_and_issues_no_new_bootstrap() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let (_, kek) = umbra_pki::Kek::generate().expect("kek");
    let toml = format!("data_dir = {:?}\n", dir.path());
    let make = || {
        RawConfig::from_toml(&dir.path().join("c"), &toml)
            .expect("toml")
            .validate(Some(kek.as_str()))
            .expect("cfg")
    };
    let first = Controller::start(make(), Arc::new(SystemClock))
        .await
        .expect("start");
    let pin = first.ca.pin();
    let jwks = serde_json::to_value(first.signer.jwks(0)).expect("jwks");
    assert!(first.bootstrap_file.is_some());
    first.issue_admin_token("ops", "test").await.expect("token");
    drop(first);
    let second = Controller::start(make(), Arc::new(SystemClock))
        .await
        .expect("restart");
    assert_eq!(second.ca.pin(), pin, "the CA is loaded, not recreated");
    assert_eq!(
        serde_json::to_value(second.signer.jwks(0)).expect("jwks"),
        jwks
    );
    assert!(
        second.bootstrap_file.is_none(),
        "an administrator exists: no new bootstrap credential"
    );
}

#[tokio::test]
async fn public_endpoints_and_json_errors_for_unknown_routes() {
    let tc = start().await;
    let http = tc.public();
    let (status, body) = http.get("/healthz", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body) = http.get("/readyz", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let (status, body) = http.get("/api/v1/ca", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .expect("pem")
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let (status, body) = http.get("/api/v1/nope", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = http.get("/api/v1/auth/login", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "invalid_request")
    );
    assert!(body["error"]["request_id"].is_string());
    let (status, body) = http
        .get("/api/v1/admin/audit?limit=lots", Some(&tc.admin_token))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}
