//! `GET /auth/verify` on the gateway: forward authentication for services
//! a reverse proxy fronts. These tests play the proxy themselves (every
//! header it would send, from a trusted or an untrusted address); the
//! real nginx in front is in `forward_auth_nginx`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use umbra_gateway::forward_auth::{ForwardAuth, serve};
use umbra_gateway::forward_auth_config::RawForwardAuth;

use crate::access::{Rig, eventually};
use crate::support::{TestDevice, error_code};

pub const LOGIN_URL: &str = "https://login.example.test/";

/// A verify listener on 127.0.0.1 for `rig`'s gateway, trusting
/// `trusted`; its URL. Stops with the returned token.
pub async fn verify_listener(rig: &Rig, trusted: &[&str]) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/auth/verify",
        listener.local_addr().expect("addr")
    );
    let config = RawForwardAuth {
        listen: listener.local_addr().expect("addr").to_string(),
        trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
        login_url: Some(LOGIN_URL.into()),
        step_up_url: None,
    }
    .validate()
    .expect("forward_auth config");
    let fa = ForwardAuth::new(rig.gw.clone(), config).expect("forward auth");
    let stop = CancellationToken::new();
    tokio::spawn(serve(Arc::new(fa), listener, stop.clone()));
    (url, stop)
}

/// What nginx's `$ssl_client_escaped_cert` holds: the PEM, URL-escaped.
pub fn escaped(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One verify request as a proxy would send it, from `local`.
struct Ask<'a> {
    url: &'a str,
    local: &'static str,
    device: Option<&'a TestDevice>,
    token: Option<&'a str>,
    method: &'a str,
    uri: &'a str,
    host: &'a str,
    extra: Vec<(&'a str, String)>,
}

impl<'a> Ask<'a> {
    fn new(url: &'a str, rig: &'a Rig, host: &'a str, uri: &'a str) -> Self {
        Self {
            url,
            local: "127.0.0.1",
            device: Some(&rig.device),
            token: Some(rig.token.as_str()),
            method: "GET",
            uri,
            host,
            extra: Vec::new(),
        }
    }

    async fn send(&self) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let client = reqwest::Client::builder()
            .local_address(Some(self.local.parse().expect("ip")))
            .build()
            .expect("client");
        let mut req = client
            .get(self.url)
            .header("x-original-method", self.method)
            .header("x-original-uri", self.uri)
            .header("x-forwarded-host", self.host)
            .header("x-real-ip", "192.0.2.10");
        if let Some(d) = self.device {
            req = req.header("x-client-cert", escaped(&d.cert_pem));
        }
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &self.extra {
            req = req.header(*k, v);
        }
        let resp = req.send().await.expect("verify request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Waits (bounded, 10 s) for a `gateway.verify` record that `f` accepts:
/// allowed requests are uploaded in batches.
pub async fn wait_verify(tc: &crate::support::TestController, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        if let Some(r) = tc.audit("gateway.verify").await.into_iter().find(&f) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no matching gateway.verify record within 10 s");
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn a_granted_request_is_allowed_with_the_identity_headers() {
    let rig = Rig::start().await;
    let (url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    let (status, h, body) = Ask::new(&url, &rig, "billing", "/v1/charges/42?x=1")
        .send()
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&h, "x-auth-user"), "alice");
    assert_eq!(header(&h, "x-auth-groups"), "eng");
    assert!(header(&h, "x-risk-score").parse::<u8>().is_ok(), "{h:?}");
    assert_eq!(
        header(&h, "x-session-id"),
        rig.login["session_id"].as_str().unwrap_or_default()
    );
    assert!(!header(&h, "x-umbra-jwt-assertion").is_empty());
    let record = wait_verify(&rig.tc, |r| r["outcome"] == "allow").await;
    assert_eq!(record["actor"], "user:alice", "{record}");
    assert_eq!(record["source_ip"], "192.0.2.10", "{record}");
    assert_eq!(
        record["resource"],
        "service:billing GET /v1/charges/42 via gateway:gw1"
    );
}

#[tokio::test]
async fn missing_forged_and_misbound_sessions_are_asked_to_log_in() {
    let rig = Rig::start().await;
    let (url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    let login_asked = |status: StatusCode, h: &reqwest::header::HeaderMap, body: &Value| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(error_code(body), "authentication_failed");
        assert_eq!(header(h, "www-authenticate"), "Bearer realm=\"umbra\"");
        // The login page, told where the user was going.
        let location = header(h, "location");
        assert!(
            location.starts_with(&format!("{LOGIN_URL}?rd=https%3A%2F%2Fdemo%2F")),
            "{location}"
        );
        assert!(header(h, "x-auth-user").is_empty());
    };
    // No token.
    let mut ask = Ask::new(&url, &rig, "demo", "/");
    ask.token = None;
    let (s, h, b) = ask.send().await;
    login_asked(s, &h, &b);
    rig.tc
        .wait_audit("gateway.verify", "no_session_token")
        .await;
    // A forged token: garbage, then a real one with another signature.
    ask.token = Some("not.a.jwt");
    let (s, h, b) = ask.send().await;
    login_asked(s, &h, &b);
    let mut parts: Vec<&str> = rig.token.split('.').collect();
    let forged_sig = "A".repeat(86);
    parts[2] = &forged_sig;
    let forged = parts.join(".");
    ask.token = Some(forged.as_str());
    let (s, h, b) = ask.send().await;
    login_asked(s, &h, &b);
    rig.tc
        .wait_audit("gateway.verify", "token_bad_signature")
        .await;
    // No client certificate: the bearer token alone is not enough.
    let mut ask = Ask::new(&url, &rig, "demo", "/");
    ask.device = None;
    let (s, h, b) = ask.send().await;
    login_asked(s, &h, &b);
    rig.tc
        .wait_audit("gateway.verify", "no_client_certificate")
        .await;
    // The token with another device's certificate.
    let other = rig.tc.enroll("alice").await;
    let mut ask = Ask::new(&url, &rig, "demo", "/");
    ask.device = Some(&other);
    let (s, h, b) = ask.send().await;
    login_asked(s, &h, &b);
    rig.tc
        .wait_audit("gateway.verify", "token_not_bound_to_certificate")
        .await;
    // A certificate the Umbra CA never signed, claiming the device's ID.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://umbra.local/device/{}", rig.device.id)
            .try_into()
            .expect("uri"),
    )];
    let fake = params.self_signed(&key).expect("cert");
    let fake = TestDevice {
        id: rig.device.id.clone(),
        serial: String::new(),
        cert_pem: fake.pem(),
        key_pem: String::new(),
        spa_secret: String::new(),
    };
    let mut ask = Ask::new(&url, &rig, "demo", "/");
    ask.device = Some(&fake);
    let (s, h, b) = ask.send().await;
    login_asked(s, &h, &b);
    rig.tc
        .wait_audit("gateway.verify", "client_certificate_refused")
        .await;

    // An expired token; the view ages with the clock and is refreshed by
    // the next heartbeat.
    rig.tc.clock.advance(2 * 3600);
    let view = rig.gw.view.clone();
    eventually("heartbeat after the jump", Duration::from_secs(15), || {
        view.is_fresh()
    })
    .await;
    let (s, h, b) = Ask::new(&url, &rig, "demo", "/").send().await;
    login_asked(s, &h, &b);
    rig.tc.wait_audit("gateway.verify", "token_expired").await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_address_are_refused() {
    let rig = Rig::start().await;
    // Only 127.0.0.1 is the proxy; 127.0.0.2 is anyone else.
    let (url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    let mut ask = Ask::new(&url, &rig, "demo", "/");
    ask.local = "127.0.0.2";
    let (status, h, body) = ask.send().await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "forbidden");
    assert!(header(&h, "x-auth-user").is_empty());
    let record = rig.tc.wait_audit("gateway.verify", "untrusted_proxy").await;
    assert_eq!(record["source_ip"], "127.0.0.2", "{record}");
    // The same request from the proxy passes: only the source differs.
    ask.local = "127.0.0.1";
    assert_eq!(ask.send().await.0, StatusCode::OK);
}

#[tokio::test]
async fn spoofed_methods_uris_and_hosts_are_decided_on_what_the_user_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"no-deletes\"\npriority = 5\neffect = \"deny\"\n\
         users = [\"alice\"]\nservices = [\"demo\"]\nmethods = [\"DELETE\"]\n",
    )
    .expect("policy");
    let rig = Rig::start_with_controller(&format!(
        "[policy]\nfile = {:?}\n",
        policy.to_str().expect("path")
    ))
    .await;
    let (url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    assert_eq!(Ask::new(&url, &rig, "demo", "/a").send().await.0, 200);
    // The verify request is a GET; the user's is a DELETE.
    let mut ask = Ask::new(&url, &rig, "demo", "/a");
    ask.method = "DELETE";
    let (status, _, body) = ask.send().await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    rig.tc.wait_audit("gateway.verify", "no-deletes").await;
    // A service granted to someone else, directly or by a path trick.
    for (host, uri) in [
        ("secret", "/"),
        ("billing", "/v1/charges-admin"),
        ("billing", "/v1/charges/../admin"),
        ("billing", "/v1/charges/%2e%2e/admin"),
        ("nowhere", "/"),
    ] {
        let (status, _, body) = Ask::new(&url, &rig, host, uri).send().await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}{uri}: {body}");
    }
    // A client's own copy of the original-request headers next to the
    // proxy's, an absolute URI, a path escaping the root: refused.
    let mut twice = Ask::new(&url, &rig, "demo", "/");
    twice.extra.push(("x-original-uri", "/admin".into()));
    // A client's X-Forwarded-Uri passed through beside the proxy's
    // X-Original-URI (or the other way round, as Traefik would).
    let mut both = Ask::new(&url, &rig, "demo", "/");
    both.extra.push(("x-forwarded-uri", "/".into()));
    let mut certs = Ask::new(&url, &rig, "demo", "/");
    certs
        .extra
        .push(("x-forwarded-tls-client-cert", escaped(&rig.device.cert_pem)));
    let mut absolute = Ask::new(&url, &rig, "demo", "https://secret/");
    absolute.extra.clear();
    let escape = Ask::new(&url, &rig, "demo", "/../../etc/passwd");
    let mut no_method = Ask::new(&url, &rig, "demo", "/");
    no_method.method = "";
    for (what, ask) in [
        ("duplicated URI", twice),
        ("both URI spellings", both),
        ("both certificate headers", certs),
        ("absolute URI", absolute),
        ("escaping path", escape),
        ("no method", no_method),
    ] {
        let (status, h, body) = ask.send().await;
        assert!(
            matches!(status.as_u16(), 400 | 401 | 403),
            "{what}: {status} {body}"
        );
        assert!(header(&h, "x-auth-user").is_empty(), "{what}");
    }
}

#[tokio::test]
async fn a_rule_wanting_a_fresh_mfa_answers_step_up_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"billing-admin\"\npriority = 10\neffect = \"allow\"\n\
         users = [\"alice\"]\nservices = [\"billing\"]\npaths = [\"/v1/charges/admin\"]\n\
         max_mfa_age_seconds = 300\n",
    )
    .expect("policy");
    let rig = Rig::start_with_controller(&format!(
        "[policy]\nfile = {:?}\n",
        policy.to_str().expect("path")
    ))
    .await;
    let (url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    let admin = Ask::new(&url, &rig, "billing", "/v1/charges/admin");
    assert_eq!(
        admin.send().await.0,
        StatusCode::OK,
        "MFA at login is fresh"
    );
    rig.tc.clock.advance(301);
    let view = rig.gw.view.clone();
    eventually("heartbeat after the jump", Duration::from_secs(15), || {
        view.is_fresh()
    })
    .await;
    let (status, h, body) = admin.send().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "step_up_required");
    assert_eq!(
        header(&h, "www-authenticate"),
        "Umbra error=\"step_up_required\""
    );
    rig.tc
        .wait_audit("gateway.verify", "step_up_required")
        .await;
    // The rest of billing needs no step-up.
    let (status, _, _) = Ask::new(&url, &rig, "billing", "/v1/charges/1")
        .send()
        .await;
    assert_eq!(status, StatusCode::OK);
}
