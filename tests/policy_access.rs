//! The policy at the gateway: the controller's native rules, compliance
//! policies and Umbra's own Rego package decide every request there, with
//! the device's latest posture and the session's MFA time; step-up MFA end
//! to end, through the real API and the real agent. Users, devices,
//! sessions and policies are all made through the API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::access::{Rig, eventually};
use crate::cli::{agent_cli, connect, curl};
use crate::support::{Body, error_code, free_port, oathtool, posture};

/// A rig whose controller reads `policy` as its native policy file.
pub async fn rig_with_policy(policy: &str) -> (Rig, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).expect("policy file");
    let rig = Rig::start_with_controller(&format!(
        "[policy]\nfile = {:?}\n",
        path.to_str().expect("path")
    ))
    .await;
    (rig, dir)
}

/// Moves the shared clock on, then waits for the gateway's next heartbeat:
/// a jump past the staleness bound makes it fail closed until then.
pub async fn advance(rig: &Rig, secs: i64) {
    rig.tc.clock.advance(secs);
    let view = rig.gw.view.clone();
    eventually(
        "the gateway is fresh again",
        Duration::from_secs(15),
        || view.is_fresh(),
    )
    .await;
}

const STEP_UP_POLICY: &str = r#"
[[rule]]
name = "billing-admin"
priority = 10
effect = "allow"
users = ["alice"]
services = ["billing"]
paths = ["/v1/charges/admin"]
max_mfa_age_seconds = 300
"#;

pub async fn step_up(rig: &Rig, token: &str, code: &str) -> (StatusCode, Value) {
    rig.tc
        .with_device(&rig.device)
        .call(
            Method::POST,
            "/api/v1/auth/step-up",
            Some(token),
            Some(Body::Json(json!({ "totp": code }))),
        )
        .await
}

#[tokio::test]
async fn a_rule_that_wants_a_fresh_mfa_steps_up_and_only_a_fresh_totp_meets_it() {
    let (rig, _policy) = rig_with_policy(STEP_UP_POLICY).await;
    let admin = "/v1/charges/admin";
    let (status, body) = rig
        .get(&rig.device, "billing", admin, Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "MFA at login is fresh: {body}");

    advance(&rig, 301).await;
    let resp = rig
        .client(Some(&rig.device))
        .get(format!("{}{admin}", rig.gw_url))
        .header("host", "billing")
        .bearer_auth(&rig.token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(challenge, "Umbra error=\"step_up_required\"");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(error_code(&body), "step_up_required", "{body}");
    let audit = rig
        .tc
        .wait_audit("gateway.access", "step_up_required")
        .await;
    let reason = audit["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("MFA was 301 s ago; rule billing-admin needs it within 300 s"),
        "{reason}"
    );
    // The rest of the service needs no step-up: the grant covers it.
    let (status, _) = rig
        .get(&rig.device, "billing", "/v1/charges", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);

    // Attacks on the step-up itself: a wrong code, the code the login
    // already used (its time step is spent), no device certificate, and
    // another device presenting this session's token.
    let secret = &rig.alice.totp_secret;
    let login_time = rig.tc.now() - 301;
    let (status, body) = step_up(&rig, &rig.token, "000000").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "authentication_failed");
    assert!(
        rig.tc
            .last_audit_reason("auth.step_up")
            .await
            .starts_with("deny: bad_totp; failure 1 of")
    );
    let (status, _) = step_up(&rig, &rig.token, &oathtool(secret, login_time)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a spent or stale code");
    let (status, _) = rig
        .tc
        .public()
        .call(
            Method::POST,
            "/api/v1/auth/step-up",
            Some(&rig.token),
            Some(Body::Json(
                json!({ "totp": oathtool(secret, rig.tc.now()) }),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no client certificate");
    let other = rig.tc.enroll("alice").await;
    let (status, _) = rig
        .tc
        .with_device(&other)
        .call(
            Method::POST,
            "/api/v1/auth/step-up",
            Some(&rig.token),
            Some(Body::Json(
                json!({ "totp": oathtool(secret, rig.tc.now()) }),
            )),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token bound to another device"
    );
    assert_eq!(
        rig.tc.last_audit_reason("auth.step_up").await,
        "deny: token_not_bound_to_certificate"
    );
    let (status, body) = step_up(&rig, &rig.token, "1234567890123456789").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A forged token: this session's, with its MFA time moved to now and
    // the signature kept.
    let mut parts: Vec<String> = rig.token.split('.').map(str::to_owned).collect();
    let payload =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .expect("payload");
    let mut claims: Value = serde_json::from_slice(&payload).expect("claims");
    claims["mfa_at"] = json!(rig.tc.now());
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims.to_string(),
    );
    let forged = parts.join(".");
    let (status, _) = step_up(&rig, &forged, &oathtool(secret, rig.tc.now())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a forged token");
    let (status, _) = rig
        .get(&rig.device, "billing", admin, Some(&forged), &[])
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "nor does the gateway take it"
    );

    // The real thing: a fresh code, a new token for the same session.
    let (status, body) = step_up(&rig, &rig.token, &oathtool(secret, rig.tc.now())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["session_id"], rig.login["session_id"]);
    let fresh = body["token"].as_str().expect("token");
    let (status, body) = rig
        .get(&rig.device, "billing", admin, Some(fresh), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        rig.tc
            .audit("auth.step_up")
            .await
            .iter()
            .any(|r| r["outcome"] == "allow")
    );
    // The same code again is a replay, even within its window.
    let (status, _) = step_up(&rig, fresh, &oathtool(secret, rig.tc.now())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        rig.tc
            .last_audit_reason("auth.step_up")
            .await
            .starts_with("deny: totp_replayed")
    );

    // A revoked session steps up no more.
    let (status, _) = rig
        .tc
        .with_device(&rig.device)
        .call(Method::POST, "/api/v1/auth/logout", Some(fresh), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    advance(&rig, 30).await;
    let (status, _) = step_up(&rig, fresh, &oathtool(secret, rig.tc.now())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        rig.tc.last_audit_reason("auth.step_up").await,
        "deny: session_revoked"
    );
}

#[tokio::test]
async fn repeated_bad_step_up_codes_lock_the_account_like_bad_logins() {
    let (rig, _policy) = rig_with_policy(STEP_UP_POLICY).await;
    for _ in 0..5 {
        let (status, _) = step_up(&rig, &rig.token, "000000").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        rig.tc
            .last_audit_reason("auth.step_up")
            .await
            .contains("account locked after 5 failures")
    );
    advance(&rig, 30).await;
    let code = oathtool(&rig.alice.totp_secret, rig.tc.now());
    let (status, _) = step_up(&rig, &rig.token, &code).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "locked, even with the right code"
    );
    assert_eq!(
        rig.tc.last_audit_reason("auth.step_up").await,
        "deny: account_locked"
    );
}

/// Sends a posture report for the rig's device (its certificate), with the
/// firewall on or off, and waits until the gateway has it.
pub async fn demo(rig: &Rig) -> StatusCode {
    rig.get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await
        .0
}

pub async fn report(rig: &Rig, firewall: bool) {
    let mut p = posture(true);
    p["firewall_enabled"] = json!(firewall);
    let (status, body) = rig
        .tc
        .with_device(&rig.device)
        .post("/api/v1/devices/posture", None, json!({ "posture": p }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Pushed to the gateway as `posture_changed`.
    let (gw, device) = (rig.gw.clone(), rig.device.id.clone());
    eventually(
        "the posture reached the gateway",
        Duration::from_secs(10),
        || {
            gw.view
                .read()
                .postures
                .get(&device)
                .is_some_and(|p| p.firewall_enabled == firewall)
        },
    )
    .await;
}

const FIREWALL_POLICY: &str = r#"
[compliance]
required = "fw"
report_only = REPORT_ONLY

[compliance.policies.fw]
require_firewall = true
"#;

#[tokio::test]
async fn compliance_is_decided_at_the_gateway_from_the_latest_posture() {
    let (rig, _policy) = rig_with_policy(&FIREWALL_POLICY.replace("REPORT_ONLY", "false")).await;
    assert_eq!(demo(&rig).await, StatusCode::OK, "enrolled with a firewall");

    report(&rig, false).await;
    // The controller ends the live session (`on_failure` defaults to
    // terminate: tests/continuous.rs); a session opened now, on the
    // failing device, is refused by the gateway's own check.
    rig.tc
        .wait_audit("session.reevaluate", "terminate: device fails")
        .await;
    advance(&rig, 30).await;
    let (status, login) = rig.tc.login(&rig.device, &rig.alice).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["token"].as_str().expect("token").to_owned();
    let demo_with = |token: String| {
        let rig = &rig;
        async move { rig.get(&rig.device, "demo", "/", Some(&token), &[]).await.0 }
    };
    // The peer learns nothing; the audit trail names the failing check.
    assert_eq!(demo_with(token.clone()).await, StatusCode::NOT_FOUND);
    rig.tc
        .wait_audit("gateway.access", "Firewall is disabled")
        .await;

    report(&rig, true).await;
    assert_eq!(demo_with(token).await, StatusCode::OK);
}

#[tokio::test]
async fn report_only_compliance_lets_through_and_says_what_it_would_have_denied() {
    let (rig, _policy) = rig_with_policy(&FIREWALL_POLICY.replace("REPORT_ONLY", "true")).await;
    report(&rig, false).await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let record = rig
        .tc
        .wait_audit("gateway.access", "report-only: Firewall is disabled")
        .await;
    assert_eq!(record["outcome"], "allow");
}

const UMBRA_REGO: &str = r#"package umbra.authz

import rego.v1

default decision := {"allow": false, "reasons": ["only reads are allowed"]}

decision := {"allow": true} if {
    input.request.method in {"GET", "HEAD"}
    not input.request.service in data.umbra.frozen
}
"#;

#[tokio::test]
async fn umbras_rego_package_loaded_through_the_opa_api_decides_beside_the_grants() {
    let rig = Rig::start().await;
    let post = |rig: &Rig| {
        let req = rig
            .client(Some(&rig.device))
            .post(format!("{}/", rig.gw_url))
            .header("host", "demo")
            .bearer_auth(&rig.token)
            .body("x");
        async move { req.send().await.expect("request").status() }
    };
    assert_eq!(post(&rig).await, StatusCode::OK, "grants alone");

    let admin = |method: Method, path: &str, body: Option<Body>| {
        let (tc, path) = (&rig.tc, path.to_owned());
        async move {
            tc.public()
                .call(method, &path, Some(&tc.admin_token), body)
                .await
        }
    };
    let (status, body) = admin(
        Method::PUT,
        "/v1/data/umbra/frozen",
        Some(Body::Json(json!([]))),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = admin(
        Method::PUT,
        "/v1/policies/umbra-authz",
        Some(Body::Raw(UMBRA_REGO.into())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let gw = rig.gw.clone();
    eventually(
        "the gateway has the Rego policy",
        Duration::from_secs(10),
        || gw.view.read().policy.point.rego.is_some(),
    )
    .await;
    assert_eq!(
        post(&rig).await,
        StatusCode::NOT_FOUND,
        "Rego denies writes"
    );
    rig.tc
        .wait_audit("gateway.access", "only reads are allowed")
        .await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Rego allows reads, and so does the grant"
    );
    // Rego cannot grant what no rule grants.
    let (status, _) = rig
        .get(&rig.device, "billing", "/v1/charges", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "billing is alice's");

    // Its data counts too: freezing demo denies even reads.
    let (status, _) = admin(
        Method::PUT,
        "/v1/data/umbra/frozen",
        Some(Body::Json(json!(["demo"]))),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let rig_ref = &rig;
    let mut denied = false;
    for _ in 0..100 {
        let (status, _) = rig_ref
            .get(&rig_ref.device, "demo", "/", Some(&rig_ref.token), &[])
            .await;
        if status == StatusCode::NOT_FOUND {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(denied, "the frozen list reached the gateway");

    // A module that does not compile is refused; the gateway keeps the set.
    let (status, _) = admin(
        Method::PUT,
        "/v1/policies/umbra-authz",
        Some(Body::Raw("package umbra.authz\ndecision := {".into())),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(gw.view.read().policy.point.rego.is_some());

    let (status, _) = admin(Method::DELETE, "/v1/policies/umbra-authz", None).await;
    assert_eq!(status, StatusCode::OK);
    eventually(
        "the gateway dropped the Rego policy",
        Duration::from_secs(10),
        || gw.view.read().policy.point.rego.is_none(),
    )
    .await;
    assert_eq!(post(&rig).await, StatusCode::OK, "grants alone again");
}

// Multi-threaded: the agent and curl are blocking child processes, and the
// in-process controller and gateway must go on serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_asks_for_a_step_up_and_connect_uses_the_new_token() {
    let (rig, _policy) = rig_with_policy(STEP_UP_POLICY).await;
    let agent = tempfile::tempdir().expect("tempdir");
    let dir = agent.path().to_str().expect("path");
    let token = rig.tc.enrollment_token("alice").await;
    let out = agent_cli(
        dir,
        &["enroll", "--controller", &rig.tc.url, "--token", &token],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rig's own login spent the current TOTP step.
    advance(&rig, 30).await;
    let secret = rig.alice.totp_secret.clone();
    let out = agent_cli(
        dir,
        &[
            "login",
            "--user",
            "alice",
            "--password-stdin",
            "--totp",
            &oathtool(&secret, rig.tc.now()),
        ],
        Some(&rig.alice.password),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let _connect = connect(dir, "billing", port);
    let admin = "/v1/charges/admin";
    assert_eq!(curl(port, admin, &[]).0, 200);

    advance(&rig, 301).await;
    let (status, body) = curl(port, admin, &[]);
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(error_code(&body), "step_up_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("umbra agent step-up"),
        "the user is told what to do: {body}"
    );

    let out = agent_cli(dir, &["step-up", "--totp", "123456"], None);
    assert!(!out.status.success(), "a wrong code fails");
    let out = agent_cli(
        dir,
        &["step-up", "--totp", &oathtool(&secret, rig.tc.now())],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("MFA renewed"));
    // `connect` re-reads the session for every request.
    assert_eq!(curl(port, admin, &[]).0, 200);
}
