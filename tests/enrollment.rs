//! Device enrollment: tokens, CSRs, posture, and bad input.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn enrollment_issues_a_short_lived_spiffe_certificate() {
    let tc = start().await;
    tc.create_user("alice", &[]).await;
    let token = tc.enrollment_token("alice").await;
    let pin = umbra_controller::secrets::pin_text(&tc.controller.ca.pin());
    assert!(
        token.starts_with(&format!("ue1.{pin}.")),
        "the token pins the CA"
    );
    let (key, csr) = key_and_csr();
    let (status, body) = tc
        .public()
        .post(
            "/api/v1/enroll",
            None,
            json!({"token": token, "csr_pem": csr, "posture": posture(true)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["device_id"].as_str().expect("id");
    assert_eq!(
        body["spiffe_id"],
        format!("spiffe://umbra.local/device/{id}")
    );
    assert_eq!(body["status"], "approved");
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(
        body["certificate_pem"].as_str().expect("pem").as_bytes(),
    )
    .map(|d: rustls_pki_types::CertificateDer<'static>| d)
    .expect("der");
    let peer =
        umbra_pki::PeerCertificate::parse(&der, tc.controller.ca.trust_domain()).expect("parse");
    assert_eq!(peer.device_id, id);
    assert_eq!(peer.not_after - tc.now(), 86400, "24 h by default");
    let devices = tc.admin_get("/api/v1/admin/devices").await;
    assert_eq!(devices["items"][0]["user"], "alice");
    assert_eq!(devices["items"][0]["posture"]["firewall_enabled"], true);
    drop(key);
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_expiring_and_bound_to_this_ca() {
    let tc = start().await;
    tc.create_user("bob", &[]).await;
    let token = tc.enrollment_token("bob").await;
    let enroll = |token: String| {
        let (_, csr) = key_and_csr();
        json!({"token": token, "csr_pem": csr, "posture": posture(true)})
    };
    let (status, _) = tc
        .public()
        .post("/api/v1/enroll", None, enroll(token.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = tc
        .public()
        .post("/api/v1/enroll", None, enroll(token.clone()))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "enrollment_refused")
    );
    assert_eq!(
        tc.last_audit_reason("device.enroll").await,
        "deny: token_used"
    );

    let short = tc
        .admin_post(
            "/api/v1/admin/enrollment-tokens",
            json!({"user": "bob", "ttl_seconds": 60}),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    tc.clock.advance(61);
    let (status, _) = tc
        .public()
        .post("/api/v1/enroll", None, enroll(short))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        tc.last_audit_reason("device.enroll").await,
        "deny: token_expired"
    );

    // A forged secret, and a genuine secret presented with another CA's pin.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = "A".repeat(43);
    let (status, _) = tc
        .public()
        .post("/api/v1/enroll", None, enroll(parts.join(".")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        tc.last_audit_reason("device.enroll").await,
        "deny: token_unknown"
    );
    let fresh = tc.enrollment_token("bob").await;
    let mut parts: Vec<String> = fresh.split('.').map(str::to_owned).collect();
    parts[1] = "B".repeat(43);
    let (status, _) = tc
        .public()
        .post("/api/v1/enroll", None, enroll(parts.join(".")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        tc.last_audit_reason("device.enroll").await,
        "deny: token_for_another_ca"
    );
    let (status, _) = tc
        .public()
        .post("/api/v1/enroll", None, enroll("garbage".into()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Only the first enrollment made a device.
    assert_eq!(
        tc.admin_get("/api/v1/admin/devices").await["items"]
            .as_array()
            .expect("items")
            .len(),
        1
    );
    // The untouched fresh token still works.
    let (status, body) = tc
        .public()
        .post("/api/v1/enroll", None, enroll(fresh))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn bad_csrs_are_refused_and_do_not_spend_the_token() {
    let tc = start().await;
    tc.create_user("carol", &[]).await;
    let token = tc.enrollment_token("carol").await;
    let post = |csr: String| {
        let token = token.clone();
        let http = tc.public();
        async move {
            http.post(
                "/api/v1/enroll",
                None,
                json!({"token": token, "csr_pem": csr, "posture": posture(true)}),
            )
            .await
        }
    };
    // Not a CSR at all.
    let (status, body) = post(
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_csr")
    );
    // A CSR whose signature was not made by its key: flip a signature byte.
    let (_, csr) = key_and_csr();
    use base64::Engine as _;
    let b64: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("b64");
    let n = der.len() - 4;
    der[n] ^= 0xff;
    let forged = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let (status, body) = post(forged).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_csr")
    );
    assert!(
        tc.last_audit_reason("device.enroll")
            .await
            .starts_with("deny: invalid_csr")
    );
    // Oversized.
    let (status, body) = post("A".repeat(20_000)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_csr")
    );
    // Nothing was enrolled and the token still works.
    assert_eq!(
        tc.admin_get("/api/v1/admin/devices").await["items"],
        json!([])
    );
    let (_, good) = key_and_csr();
    let (status, body) = post(good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn malformed_and_oversized_json_get_specific_errors_and_change_nothing() {
    let tc = start().await;
    let http = tc.public();
    let (status, body) = http
        .call(
            reqwest::Method::POST,
            "/api/v1/enroll",
            None,
            Some(Body::Raw("{not json".into())),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    assert!(body["error"]["request_id"].is_string());
    let (status, body) = http
        .post("/api/v1/enroll", None, json!({"token": "x"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("csr_pem"),
        "{body}"
    );
    let (status, body) = http
        .post(
            "/api/v1/enroll",
            None,
            json!({"token": "x", "csr_pem": "y", "posture": posture(true), "extra": 1}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let huge = json!({"token": "x".repeat(100_000), "csr_pem": "", "posture": posture(true)});
    let (status, body) = http.post("/api/v1/enroll", None, huge).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let mut bad_posture = posture(true);
    bad_posture["hostname"] = json!("host\u{0}name");
    let (status, body) = http
        .post(
            "/api/v1/enroll",
            None,
            json!({"token": "x", "csr_pem": "y", "posture": bad_posture}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    // Admin input errors name the field and create nothing.
    let (status, body) = http
        .post(
            "/api/v1/admin/users",
            Some(&tc.admin_token),
            json!({"name": "bad name!"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (status, body) = http
        .post(
            "/api/v1/admin/users",
            Some(&tc.admin_token),
            json!({"name": "ok", "password": "short"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (status, body) = http
        .post(
            "/api/v1/admin/users",
            Some(&tc.admin_token),
            json!({"name": "ok", "role": "root"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    assert_eq!(
        tc.admin_get("/api/v1/admin/users").await["items"],
        json!([])
    );
    tc.create_user("dup", &[]).await;
    let (status, body) = http
        .post(
            "/api/v1/admin/users",
            Some(&tc.admin_token),
            json!({"name": "dup"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );
}

#[tokio::test]
async fn devices_renew_over_mtls_before_expiry_and_not_after_revocation() {
    let tc = start().await;
    let user = tc.create_user("rita", &[]).await;
    let dev = tc.enroll("rita").await;
    let (_, csr) = key_and_csr();
    let (status, body) = tc
        .public()
        .post("/api/v1/devices/renew", None, json!({"csr_pem": csr}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "client_certificate_required")
    );

    // An hour before the 24 h certificate expires, the device renews with a fresh key.
    tc.clock.advance(23 * 3600);
    let (key2, csr2) = key_and_csr();
    let (status, body) = tc
        .with_device(&dev)
        .post("/api/v1/devices/renew", None, json!({"csr_pem": csr2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], dev.id.as_str());
    assert_ne!(body["serial"], dev.serial.as_str());
    let renewed = TestDevice {
        id: dev.id.clone(),
        serial: body["serial"].as_str().expect("serial").into(),
        cert_pem: body["certificate_pem"].as_str().expect("cert").into(),
        key_pem: key2,
        spa_secret: body["spa_secret"].as_str().expect("spa secret").into(),
    };
    assert_eq!(
        renewed.spa_secret, dev.spa_secret,
        "the SPA secret is the device's, not the certificate's"
    );
    assert!(
        tc.last_audit_reason("device.renew")
            .await
            .starts_with("allow: serial")
    );

    // Past the old certificate's expiry (by the controller's clock, which the
    // TLS layer uses too) the old one fails the handshake; the new one logs in.
    tc.clock.advance(2 * 3600);
    let old = tc
        .with_device(&dev)
        .try_call(
            reqwest::Method::POST,
            "/api/v1/devices/renew",
            None,
            Some(Body::Json(json!({"csr_pem": "x"}))),
        )
        .await;
    assert!(old.is_err(), "an expired certificate cannot renew: {old:?}");
    tc.wait_audit("tls.handshake", "xpired").await;
    let (status, body) = tc.login(&renewed, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A bad CSR changes nothing; a revoked device cannot renew.
    let (status, body) = tc
        .with_device(&renewed)
        .post("/api/v1/devices/renew", None, json!({"csr_pem": "garbage"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_csr")
    );
    tc.admin_post(
        &format!("/api/v1/admin/devices/{}/revoke", dev.id),
        json!(null),
    )
    .await;
    let (_, csr3) = key_and_csr();
    let (status, _) = tc
        .with_device(&renewed)
        .post("/api/v1/devices/renew", None, json!({"csr_pem": csr3}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("device.renew").await,
        "deny: certificate_revoked"
    );
}

#[tokio::test]
async fn devices_report_fresh_posture_over_mtls_and_revoked_ones_cannot() {
    let tc = start().await;
    tc.create_user("alice", &[]).await;
    let device = tc.enroll("alice").await;
    let mut report = posture(false);
    report["device_id"] = json!("somebody-else");
    // Without the device certificate: refused.
    let (status, body) = tc
        .public()
        .post(
            "/api/v1/devices/posture",
            None,
            json!({ "posture": report }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "client_certificate_required");
    // With it: stored for the certificate's device, whatever the report says.
    let (status, body) = tc
        .with_device(&device)
        .post(
            "/api/v1/devices/posture",
            None,
            json!({ "posture": report }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], device.id.as_str());
    let devices = tc.admin_get("/api/v1/admin/devices").await;
    let stored = &devices["items"][0]["posture"];
    assert_eq!(stored["device_id"], device.id.as_str());
    assert_eq!(stored["disk_encryption"], false);
    let audit = tc
        .wait_audit("device.posture", "disk_encryption: true -> false")
        .await;
    assert_eq!(audit["outcome"], "allow");
    // Malformed reports are refused with the field named.
    let mut bad = posture(true);
    bad["hostname"] = json!("");
    let (status, body) = tc
        .with_device(&device)
        .post("/api/v1/devices/posture", None, json!({ "posture": bad }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A revoked device reports nothing.
    tc.admin_post(
        &format!("/api/v1/admin/devices/{}/revoke", device.id),
        json!({}),
    )
    .await;
    let (status, _) = tc
        .with_device(&device)
        .post(
            "/api/v1/devices/posture",
            None,
            json!({ "posture": posture(true) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
