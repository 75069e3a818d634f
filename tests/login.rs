//! Login over mTLS with password + TOTP, and the attacks on it.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn oathtool_codes_log_in_and_a_code_is_accepted_once() {
    let tc = start().await;
    let user = tc.create_user("alice", &["eng"]).await;
    let dev = tc.enroll("alice").await;
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["groups"], json!(["eng"]));
    assert_eq!(body["device_id"], dev.id.as_str());
    // Healthy posture, no failures, but no history yet: half the
    // behaviour weight (seed 003's 0.3), as for anything unknown.
    assert_eq!(body["risk"], 15, "{body}");
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("allow: risk 15 [no_baseline:15]")
    );

    // The very same code again: refused, and the reason is precise.
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "authentication_failed");
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("deny: totp_replayed")
    );
    // An older code is refused too; the next step's code works.
    let (status, _) = tc.login_at(&dev, &user, tc.now() - 30).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = tc.login_at(&dev, &user, tc.now() + 30).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn wrong_password_and_wrong_totp_are_refused_generically() {
    let tc = start().await;
    let user = tc.create_user("bob", &[]).await;
    let dev = tc.enroll("bob").await;
    let http = tc.with_device(&dev);
    let code = oathtool(&user.totp_secret, tc.now());
    let (status, body) = http
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": "bob", "password": "wrong-password!", "totp": code}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "authentication_failed")
    );
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("deny: bad_password")
    );
    let (status, body) = http
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": "bob", "password": user.password, "totp": wrong_code(&user, tc.now())}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "authentication_failed")
    );
    let reason = tc.last_audit_reason("auth.login").await;
    assert!(reason.starts_with("deny: bad_totp"), "{reason}");
    let (status, body) = http
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": "nobody", "password": "x", "totp": "123456"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "authentication_failed")
    );
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("deny: unknown_user")
    );
    // No session came out of any of it.
    assert_eq!(
        tc.admin_get("/api/v1/admin/sessions").await["items"],
        json!([])
    );
}

#[tokio::test]
async fn brute_force_locks_the_account_until_unlock_or_timeout() {
    // A generous per-address budget: this test is about the account lockout.
    let tc = start_with("[auth]\nlogin_burst = 100\n").await;
    let user = tc.create_user("carol", &[]).await;
    let dev = tc.enroll("carol").await;
    let http = tc.with_device(&dev);
    for _ in 0..5 {
        let (status, _) = http
            .post(
                "/api/v1/auth/login",
                None,
                json!({"user": "carol", "password": "guess-guess-guess", "totp": "111111"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .contains("account locked after 5 failures")
    );
    let u = tc.admin_get("/api/v1/admin/users/carol").await;
    assert!(u["locked_until"].is_string(), "{u}");
    // Correct credentials are refused while locked, without consuming the code.
    let (status, _) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: account_locked"
    );
    // Admin unlock.
    tc.admin_post("/api/v1/admin/users/carol/unlock", json!(null))
        .await;
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        tc.admin_get("/api/v1/admin/users/carol").await["failed_logins"],
        0
    );

    // Timed unlock: lock again, then let the lockout (900 s) pass.
    for _ in 0..5 {
        http.post(
            "/api/v1/auth/login",
            None,
            json!({"user": "carol", "password": "guess-guess-guess", "totp": "111111"}),
        )
        .await;
    }
    let (status, _) = tc.login_at(&dev, &user, tc.now() + 30).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tc.clock.advance(901);
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_device_logs_in_only_its_own_user() {
    let tc = start().await;
    let _mallory = tc.create_user("mallory", &[]).await;
    let victim = tc.create_user("victim", &["finance"]).await;
    let mallory_device = tc.enroll("mallory").await;
    let (status, body) = tc.login(&mallory_device, &victim).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "authentication_failed")
    );
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: device_enrolled_for_other_user:mallory"
    );
    // The victim's code was not burnt and the victim's counter is untouched.
    let victim_device = tc.enroll("victim").await;
    let (status, body) = tc.login(&victim_device, &victim).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn login_needs_a_device_certificate_from_this_ca() {
    let tc = start().await;
    let user = tc.create_user("dave", &[]).await;
    let code = oathtool(&user.totp_secret, tc.now());
    let (status, body) = tc
        .public()
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": "dave", "password": user.password, "totp": code}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "client_certificate_required")
    );

    // A certificate from another CA does not complete the handshake.
    let other_td = umbra_pki::TrustDomain::new("umbra.local").expect("td");
    let other = umbra_pki::CertificateAuthority::generate(other_td, tc.now(), 86400).expect("ca");
    let (key_pem, csr) = key_and_csr();
    let foreign = other
        .sign_device_csr(&csr, "foreign-device", tc.now(), 86400)
        .expect("sign");
    let client = http(&tc.url, &tc.ca(), Some((&foreign.pem, &key_pem)));
    let result = client
        .try_call(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(Body::Json(json!({}))),
        )
        .await;
    assert!(
        result.is_err(),
        "foreign certificate must be refused at the TLS layer: {result:?}"
    );
    let record = tc
        .wait_audit("tls.handshake", "client_certificate_refused")
        .await;
    assert_eq!(record["outcome"], "deny");

    // An expired certificate from the right CA (a device's old certificate).
    let dev = tc.enroll("dave").await;
    let (old_key, old_csr) = key_and_csr();
    let expired = tc
        .controller
        .ca
        .sign_device_csr(&old_csr, &dev.id, tc.now() - 3 * 86400, 86400)
        .expect("sign");
    let client = http(&tc.url, &tc.ca(), Some((&expired.pem, &old_key)));
    let result = client
        .try_call(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(Body::Json(json!({}))),
        )
        .await;
    assert!(
        result.is_err(),
        "expired certificate must be refused: {result:?}"
    );
    let record = tc.wait_audit("tls.handshake", "xpired").await;
    assert_eq!(record["outcome"], "deny");
}

#[tokio::test]
async fn revoked_certificates_and_devices_cannot_log_in() {
    let tc = start().await;
    let user = tc.create_user("erin", &[]).await;
    let dev = tc.enroll("erin").await;
    let (status, login) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK);
    let token = login["token"].as_str().expect("token").to_owned();

    tc.admin_post(
        &format!("/api/v1/admin/certificates/{}/revoke", dev.serial),
        json!(null),
    )
    .await;
    let (status, _) = tc.login_at(&dev, &user, tc.now() + 30).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: certificate_revoked"
    );
    // Its session died with it.
    let (status, _) = tc
        .with_device(&dev)
        .get("/api/v1/auth/session", Some(&token))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let dev2 = tc.enroll("erin").await;
    tc.admin_post(
        &format!("/api/v1/admin/devices/{}/revoke", dev2.id),
        json!(null),
    )
    .await;
    let (status, _) = tc.login_at(&dev2, &user, tc.now() + 30).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Revoking a device revokes its certificates too.
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: certificate_revoked"
    );
}

#[tokio::test]
async fn suspended_users_lose_their_sessions_and_cannot_log_in() {
    let tc = start().await;
    let user = tc.create_user("frank", &[]).await;
    let dev = tc.enroll("frank").await;
    let (_, login) = tc.login(&dev, &user).await;
    let token = login["token"].as_str().expect("token").to_owned();
    tc.admin_post("/api/v1/admin/users/frank/suspend", json!(null))
        .await;
    let (status, _) = tc
        .with_device(&dev)
        .get("/api/v1/auth/session", Some(&token))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = tc.login_at(&dev, &user, tc.now() + 30).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: user_suspended"
    );
    tc.admin_post("/api/v1/admin/users/frank/resume", json!(null))
        .await;
    let (status, body) = tc.login_at(&dev, &user, tc.now() + 30).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_source_address() {
    let tc = start_with("[auth]\nlogin_burst = 3\nlogin_rate_per_minute = 1\n").await;
    let _user = tc.create_user("gina", &[]).await;
    let dev = tc.enroll("gina").await;
    let http = tc.with_device(&dev);
    let attempt = json!({"user": "gina", "password": "nope-nope-nope", "totp": "123456"});
    // The enrollment above used one token of the bucket.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            http.post("/api/v1/auth/login", None, attempt.clone())
                .await
                .0,
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let (status, body) = http.post("/api/v1/auth/login", None, attempt.clone()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: rate_limited"
    );
    // Rate-limited attempts did not count towards the lockout.
    assert_eq!(
        tc.admin_get("/api/v1/admin/users/gina").await["failed_logins"],
        2
    );
}

#[tokio::test]
async fn pending_devices_wait_for_approval() {
    let tc = start_with("[devices]\nrequire_approval = true\n").await;
    let user = tc.create_user("hank", &[]).await;
    let dev = tc.enroll("hank").await;
    let (status, _) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: device_pending_approval"
    );
    tc.admin_post(
        &format!("/api/v1/admin/devices/{}/approve", dev.id),
        json!(null),
    )
    .await;
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn recovery_codes_replace_a_totp_code_once_and_count_as_failures_when_wrong() {
    let tc = start().await;
    let user = tc.create_user("rob", &[]).await;
    let dev = tc.enroll("rob").await;
    let codes = tc
        .admin_post("/api/v1/admin/users/rob/recovery-codes", json!(null))
        .await;
    let codes: Vec<String> = codes["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let http = tc.with_device(&dev);
    let with_code =
        |code: &str| json!({"user": "rob", "password": user.password, "recovery_code": code});
    let (status, body) = http
        .post("/api/v1/auth/login", None, with_code(&codes[0]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .contains("recovery code used, 9 left")
    );
    // Once only.
    let (status, _) = http
        .post("/api/v1/auth/login", None, with_code(&codes[0]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("deny: bad_recovery_code; failure 1")
    );
    // A code still needs the password.
    let (status, _) = http
        .post(
            "/api/v1/auth/login",
            None,
            json!({"user": "rob", "password": "not-the-password", "recovery_code": codes[1]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("deny: bad_password")
    );
    // Both factors at once, or none, is refused before any check.
    let code = oathtool(&user.totp_secret, tc.now());
    let (status, _) = http
        .post("/api/v1/auth/login", None, json!({"user": "rob", "password": user.password, "totp": code, "recovery_code": codes[1]}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: second_factor_missing_or_ambiguous"
    );
    // A new set retires the old one; codes are stored only as keyed hashes.
    tc.admin_post("/api/v1/admin/users/rob/recovery-codes", json!(null))
        .await;
    let (status, _) = http
        .post("/api/v1/auth/login", None, with_code(&codes[2]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let db = std::fs::read(tc.dir.path().join("umbra.db")).unwrap_or_default();
    let wal = std::fs::read(tc.dir.path().join("umbra.db-wal")).unwrap_or_default();
    let text = String::from_utf8_lossy(&[db, wal].concat()).into_owned();
    assert!(
        !codes
            .iter()
            .any(|c| text.contains(c.as_str()) || text.contains(&c.replace('-', "")))
    );
}

/// A well-formed code that is wrong for every step of the ±1 window.
fn wrong_code(user: &TestUser, at: i64) -> String {
    let valid: Vec<String> = [at - 30, at, at + 30]
        .iter()
        .map(|&t| oathtool(&user.totp_secret, t))
        .collect();
    (0..1000u32)
        .map(|n| format!("{:06}", n * 997 % 1_000_000))
        .find(|c| !valid.contains(c))
        .expect("some code is wrong")
}

/// The login's risk learns the user's usual hours and networks from their
/// own audit history: after ten logins the unknown baseline costs nothing,
/// while a new network, an unusual hour or failed attempts cost their share.
#[tokio::test]
async fn login_risk_learns_the_users_usual_networks_and_hours_from_their_history() {
    let tc = start().await;
    let user = tc.create_user("alice", &["eng"]).await;
    let dev = tc.enroll("alice").await;
    let mut risks = Vec::new();
    for _ in 0..11 {
        tc.clock.advance(30);
        let (status, body) = tc.login(&dev, &user).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        risks.push(body["risk"].as_i64().expect("risk"));
    }
    assert_eq!(risks[..10], [15; 10], "no baseline for the first ten");
    assert_eq!(risks[10], 0, "then usual: same hour, same network");
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .starts_with("allow: risk 0 [], session")
    );

    // The same device from another network (127.0.1.0/24 is not 127.0.0.0/24).
    tc.clock.advance(30);
    let elsewhere = http_from(
        &tc.url,
        &tc.ca(),
        Some((&dev.cert_pem, &dev.key_pem)),
        Some("127.0.1.1".parse().expect("ip")),
    );
    let (status, body) = elsewhere
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "user": user.name, "password": user.password,
                    "totp": oathtool(&user.totp_secret, tc.now()) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["risk"], 10, "a third of the behaviour weight");
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .contains("[new_network:10]")
    );

    // Twelve hours on, with two failed attempts since the last success:
    // an unusual hour and the failures count.
    tc.clock.advance(12 * 3600);
    for _ in 0..2 {
        let (status, _) = tc
            .with_device(&dev)
            .post(
                "/api/v1/auth/login",
                None,
                json!({ "user": user.name, "password": "wrong password!", "totp": "000000" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["risk"], 20, "{body}");
    assert!(
        tc.last_audit_reason("auth.login")
            .await
            .contains("[unusual_hour:10,recent_failed_logins:10]")
    );
}
