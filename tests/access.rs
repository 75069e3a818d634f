//! The access path in one process: controller, gateway and an echo
//! upstream on loopback, with users, devices, sessions, the gateway and its
//! grants created through the real API. Each attack from the issue is a
//! test; the happy path checks what the upstream receives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use umbra_gateway::Gateway;
use umbra_gateway::config::{RawConfig, RawRoute};

use crate::support::{self, Body, TestController, TestDevice, error_code};

/// How a dark rig's gateway is set up.
pub struct Dark {
    pub spa: umbra_gateway::spa_config::RawSpa,
    pub firewall: umbra_firewall::FirewallConfig,
    /// The address the gateway listens on and is reached at (default
    /// 127.0.0.1); it is also in the gateway certificate's SANs.
    pub gateway_ip: Option<String>,
}

pub struct Rig {
    pub tc: TestController,
    pub gw: Arc<Gateway>,
    pub gw_url: String,
    pub device: TestDevice,
    /// The user the rig logged in (groups: eng).
    pub alice: support::TestUser,
    pub token: String,
    /// The login response, as an agent would keep it.
    pub login: Value,
    _state: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Rig {
    pub async fn start() -> Self {
        Self::start_with_resync(300).await
    }

    pub async fn start_with_resync(resync_secs: u64) -> Self {
        Self::start_custom(resync_secs, umbra_gateway::config::RawLimits::default()).await
    }

    /// With extra routes, granted to alice.
    pub async fn start_routes(extra: Vec<RawRoute>) -> Self {
        Self::build(
            300,
            umbra_gateway::config::RawLimits::default(),
            extra,
            None,
            "",
        )
        .await
    }

    pub async fn start_custom(resync_secs: u64, limits: umbra_gateway::config::RawLimits) -> Self {
        Self::build(resync_secs, limits, Vec::new(), None, "").await
    }

    /// With `controller_toml` added to the controller's configuration.
    pub async fn start_with_controller(controller_toml: &str) -> Self {
        Self::build(
            300,
            umbra_gateway::config::RawLimits::default(),
            Vec::new(),
            None,
            controller_toml,
        )
        .await
    }

    /// A dark gateway: SPA on a loopback UDP port, userspace pinholes of
    /// `pinhole_seconds`.
    pub async fn start_dark(pinhole_seconds: u64) -> Self {
        Self::start_dark_with(umbra_gateway::spa_config::RawSpa {
            listen: Some("127.0.0.1:0".into()),
            pinhole_seconds: Some(pinhole_seconds),
            ..Default::default()
        })
        .await
    }

    pub async fn start_dark_with(spa: umbra_gateway::spa_config::RawSpa) -> Self {
        Self::start_dark_custom(Dark {
            spa,
            firewall: umbra_firewall::FirewallConfig {
                backend: umbra_firewall::BackendKind::Userspace,
                ..Default::default()
            },
            gateway_ip: None,
        })
        .await
    }

    pub async fn start_dark_custom(dark: Dark) -> Self {
        Self::build(
            300,
            umbra_gateway::config::RawLimits::default(),
            Vec::new(),
            Some(dark),
            "",
        )
        .await
    }

    async fn build(
        resync_secs: u64,
        limits: umbra_gateway::config::RawLimits,
        extra: Vec<RawRoute>,
        dark: Option<Dark>,
        controller_toml: &str,
    ) -> Self {
        let gateway_ip = dark
            .as_ref()
            .and_then(|d| d.gateway_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let extra_services: Vec<String> = extra.iter().map(|r| r.service.clone()).collect();
        let tc = support::start_with(controller_toml).await;
        let alice = tc.create_user("alice", &["eng"]).await;
        let device = tc.enroll("alice").await;
        let token = tc
            .admin_post(
                "/api/v1/admin/gateways",
                json!({ "name": "gw1", "sans": [gateway_ip, "localhost", "h2", "demo"] }),
            )
            .await["token"]
            .as_str()
            .expect("gateway token")
            .to_owned();
        let shutdown = CancellationToken::new();
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let upstream_url = format!("http://{}", upstream.local_addr().expect("addr"));
        tokio::spawn(umbra_gateway::demo::serve(upstream, shutdown.clone()));
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let echo_url = format!("tcp://{}", echo.local_addr().expect("addr"));
        tokio::spawn(umbra_gateway::demo::serve_tcp_echo(echo, shutdown.clone()));
        let listener = tokio::net::TcpListener::bind((gateway_ip.as_str(), 0))
            .await
            .expect("bind");
        let gw_url = format!(
            "https://{gateway_ip}:{}",
            listener.local_addr().expect("a").port()
        );
        let state = tempfile::tempdir().expect("tempdir");
        let route = |service: &str, prefix: &str| RawRoute {
            service: service.into(),
            host: None,
            path_prefix: Some(prefix.into()),
            upstream: upstream_url.clone(),
            protocol: None,
            upstream_http2: None,
        };
        let mut raw = RawConfig {
            controller_url: tc.url.clone(),
            listen: listener.local_addr().expect("addr").to_string(),
            public_url: Some(gw_url.clone()),
            state_dir: state.path().join("gw"),
            enrollment_token: Some(token),
            enrollment_token_file: None,
            max_staleness_seconds: None,
            resync_interval_seconds: Some(resync_secs),
            assertion_ttl_seconds: None,
            workers: None,
            firewall: dark.as_ref().map(|d| d.firewall.clone()),
            spa: dark.map(|d| d.spa),
            limits,
            forward_auth: None,
            metrics: None,
            routes: vec![
                route("billing", "/v1/charges"),
                route("demo", "/"),
                route("secret", "/"),
                RawRoute {
                    service: "down".into(),
                    host: None,
                    path_prefix: None,
                    upstream: format!("http://127.0.0.1:{}", support::free_port()),
                    protocol: None,
                    upstream_http2: None,
                },
                RawRoute {
                    service: "echo".into(),
                    host: None,
                    path_prefix: None,
                    upstream: echo_url.clone(),
                    protocol: Some("tcp".into()),
                    upstream_http2: None,
                },
                RawRoute {
                    service: "secret-tcp".into(),
                    host: None,
                    path_prefix: None,
                    upstream: echo_url,
                    protocol: Some("tcp".into()),
                    upstream_http2: None,
                },
            ],
        };
        raw.routes.extend(extra);
        let gw = Gateway::start(raw.validate().expect("config"), Arc::new(tc.clock.clone()))
            .await
            .expect("gateway start");
        tokio::spawn(umbra_gateway::server::run(
            gw.clone(),
            listener,
            shutdown.clone(),
        ));
        let put = |name: &str, grant: Value| {
            let tc = &tc;
            let name = name.to_owned();
            async move {
                let (status, body) = tc
                    .public()
                    .call(
                        Method::PUT,
                        &format!("/api/v1/admin/services/{name}"),
                        Some(&tc.admin_token),
                        Some(Body::Json(grant)),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        };
        put("billing", json!({ "allow_users": ["alice"] })).await;
        put("demo", json!({ "allow_groups": ["eng"] })).await;
        put("secret", json!({ "allow_users": ["bob"] })).await;
        put("echo", json!({ "allow_users": ["alice"] })).await;
        put("down", json!({ "allow_users": ["alice"] })).await;
        for service in &extra_services {
            put(service, json!({ "allow_users": ["alice"] })).await;
        }
        put("secret-tcp", json!({ "allow_users": ["bob"] })).await;
        // The login lists the services of registered gateways: wait for the
        // registration (its own task), or a loaded machine races it.
        let registered = gw.clone();
        eventually("the gateway registered", Duration::from_secs(15), || {
            registered
                .issuer
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some()
        })
        .await;
        let (status, login) = tc.login(&device, &alice).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        let session_token = login["token"].as_str().expect("token").to_owned();
        let mut expected = vec!["billing", "demo", "down", "echo"];
        expected.extend(extra_services.iter().map(String::as_str));
        expected.sort_unstable();
        let services: Vec<&str> = login["services"]
            .as_array()
            .expect("services")
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(services, expected, "login lists granted services only");
        let view = gw.view.clone();
        eventually(
            "gateway synced with all grants",
            Duration::from_secs(10),
            || view.is_fresh() && view.seq() >= Some(6 + extra_services.len() as i64),
        )
        .await;
        Self {
            tc,
            gw,
            gw_url,
            device,
            alice,
            token: session_token,
            login,
            _state: state,
            shutdown,
        }
    }

    /// A client of the gateway presenting `device`'s certificate (or none).
    pub fn client(&self, device: Option<&TestDevice>) -> reqwest::Client {
        let identity = device.map(|d| {
            (
                vec![CertificateDer::from_pem_slice(d.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(d.key_pem.as_bytes()).expect("key"),
            )
        });
        let tls = umbra_pki::tls::client_config(&self.tc.ca(), identity).expect("tls");
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .build()
            .expect("client")
    }

    /// GET `path` for `host` with `token` as the device; status and JSON.
    pub async fn get(
        &self,
        device: &TestDevice,
        host: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .client(Some(device))
            .get(format!("{}{path}", self.gw_url))
            .header("host", host);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends exactly `target` as the request target (no client-side
    /// normalization), over mTLS as `device`; returns the status.
    pub async fn raw_get(&self, device: &TestDevice, host: &str, target: &str) -> (u16, String) {
        let chain = vec![CertificateDer::from_pem_slice(device.cert_pem.as_bytes()).expect("c")];
        let key = PrivateKeyDer::from_pem_slice(device.key_pem.as_bytes()).expect("k");
        let tls = umbra_pki::tls::client_config(&self.tc.ca(), Some((chain, key))).expect("tls");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let addr = self.gw_url.trim_start_matches("https://");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let mut s = connector.connect(name, tcp).await.expect("tls");
        let req = format!(
            "GET {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            self.token
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

#[tokio::test]
async fn the_upstream_receives_the_identity_and_a_verifiable_assertion_and_no_forgeries() {
    let rig = Rig::start().await;
    let (status, echo) = rig
        .get(
            &rig.device,
            "billing",
            "/v1/charges/42?x=1",
            Some(&rig.token),
            &[
                ("X-Auth-User", "admin"),
                ("X_Auth_User", "root"),
                ("x-auth-groups", "admins"),
                ("X-Real-IP", "10.9.9.9"),
                ("X-Forwarded-For", "10.9.9.9"),
                ("X-Umbra-Jwt-Assertion", "forged"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    let h = &echo["headers"];
    assert_eq!(echo["path"], "/v1/charges/42?x=1");
    assert_eq!(h["x-auth-user"], "alice");
    assert_eq!(h["x-auth-groups"], "eng");
    assert_eq!(h["x-device-id"], rig.device.id.as_str());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert!(h["x-session-id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        h["x-risk-score"]
            .as_str()
            .is_some_and(|r| r.parse::<u8>().is_ok())
    );
    let names: Vec<&String> = h.as_object().expect("headers").keys().collect();
    for forged in ["x_auth_user", "x-real-ip", "authorization"] {
        assert!(
            !names.iter().any(|n| n.as_str() == forged),
            "{forged} reached the upstream"
        );
    }

    // The assertion verifies with the controller's JWKS, for this service only.
    let jwt = h["x-umbra-jwt-assertion"].as_str().expect("assertion");
    let (_, jwks) = rig.tc.public().get("/.well-known/jwks.json", None).await;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).expect("jwks");
    let kid = jsonwebtoken::decode_header(jwt)
        .expect("header")
        .kid
        .expect("kid");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).expect("gateway key in JWKS"))
        .expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.set_audience(&["billing"]);
    v.set_issuer(&["umbra-gateway:gw1"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &v).expect("assertion verifies");
    assert_eq!(claims.claims["sub"], "alice");
    let exp = claims.claims["exp"].as_i64().expect("exp");
    assert!(exp - rig.tc.now() <= 60, "assertions are short-lived");
    v.set_audience(&["demo"]);
    assert!(
        jsonwebtoken::decode::<Value>(jwt, &key, &v).is_err(),
        "an assertion for billing is refused at another service"
    );

    // Allowed requests reach the audit trail (batched by the gateway).
    rig.tc
        .wait_audit("gateway.access", "rule grant:billing allows this request")
        .await;
}

#[tokio::test]
async fn certificates_that_are_missing_foreign_or_revoked_never_complete_the_handshake() {
    let rig = Rig::start().await;
    let no_cert = rig
        .client(None)
        .get(format!("{}/", rig.gw_url))
        .header("host", "demo")
        .bearer_auth(&rig.token)
        .send()
        .await;
    assert!(no_cert.is_err(), "no client certificate: handshake refused");

    // A certificate from another CA (same shape, other issuer).
    let other = support::start().await;
    let bob = other.create_user("bob", &[]).await;
    let foreign = other.enroll(&bob.name).await;
    let r = rig
        .client(Some(&foreign))
        .get(format!("{}/", rig.gw_url))
        .send()
        .await;
    assert!(r.is_err(), "foreign CA: handshake refused");

    // Revoking the certificate reaches the gateway, which then refuses it
    // at the handshake (and the token bound to it).
    rig.tc
        .admin_post(
            &format!("/api/v1/admin/certificates/{}/revoke", rig.device.serial),
            json!({}),
        )
        .await;
    let view = rig.gw.view.clone();
    let serial = rig.device.serial.clone();
    eventually("revocation pushed", Duration::from_secs(5), || {
        view.read().certificates.contains(&serial)
    })
    .await;
    let r = rig
        .client(Some(&rig.device))
        .get(format!("{}/", rig.gw_url))
        .header("host", "demo")
        .bearer_auth(&rig.token)
        .send()
        .await;
    assert!(r.is_err(), "revoked certificate: handshake refused");
    let refused = rig.tc.wait_audit("tls.handshake", "Revoked").await;
    assert_eq!(refused["source_ip"], "127.0.0.1", "{refused}");
}

#[tokio::test]
async fn an_expired_device_certificate_is_refused_at_the_handshake() {
    let rig = Rig::start().await;
    rig.tc.clock.advance(25 * 3600);
    let r = rig
        .client(Some(&rig.device))
        .get(format!("{}/", rig.gw_url))
        .header("host", "demo")
        .send()
        .await;
    assert!(r.is_err(), "expired certificate: handshake refused");
}

#[tokio::test]
async fn sessions_are_required_bound_to_their_device_and_unexpired() {
    let rig = Rig::start().await;
    // A valid certificate without a session.
    let (status, body) = rig.get(&rig.device, "demo", "/", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "authentication_failed");
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some("not.a.jwt"), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The token presented with another device's certificate.
    let other = rig.tc.enroll("alice").await;
    let (status, _) = rig.get(&other, "demo", "/", Some(&rig.token), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    rig.tc
        .wait_audit("gateway.access", "token_not_bound_to_certificate")
        .await;

    // An expired token (the certificate is still valid). The gateway's
    // view ages with the clock too; the next heartbeat refreshes it.
    rig.tc.clock.advance(2 * 3600);
    let view = rig.gw.view.clone();
    eventually("heartbeat after the jump", Duration::from_secs(15), || {
        view.is_fresh()
    })
    .await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    rig.tc.wait_audit("gateway.access", "token_expired").await;
}

#[tokio::test]
async fn path_tricks_and_ungranted_services_get_the_same_refusal_as_nothing() {
    let rig = Rig::start().await;
    let d = &rig.device;
    // billing is routed at /v1/charges only: whole segments.
    assert_eq!(rig.raw_get(d, "billing", "/v1/charges").await.0, 200);
    assert_eq!(rig.raw_get(d, "billing", "/v1/charges-admin").await.0, 404);
    assert_eq!(
        rig.raw_get(d, "billing", "/v1/charges/../admin").await.0,
        404
    );
    assert_eq!(rig.raw_get(d, "billing", "/v1/../admin").await.0, 404);
    assert_eq!(
        rig.raw_get(d, "billing", "/v1/charges/%2e%2e/%2E%2E/admin")
            .await
            .0,
        404
    );
    assert_eq!(rig.raw_get(d, "billing", "/../v1/charges").await.0, 400);
    assert_eq!(
        rig.raw_get(d, "billing", "/v1/charges%2f..%2fadmin")
            .await
            .0,
        400
    );
    // An absolute-form target names the host (RFC 9112 3.2.2), not the
    // Host header: no routing on one and forwarding for the other.
    assert_eq!(rig.raw_get(d, "demo", "http://billing/admin").await.0, 404);
    let (status, text) = rig.raw_get(d, "demo", "http://billing/v1/charges").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""host":"billing""#), "{text}");
    // `//` collapses; the upstream gets the normalized path.
    let (status, text) = rig.raw_get(d, "billing", "//v1//charges/./7").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""path":"/v1/charges/7""#), "{text}");

    // An ungranted service and a nonexistent one look the same.
    let (s1, b1) = rig.get(d, "secret", "/", Some(&rig.token), &[]).await;
    let (s2, b2) = rig.get(d, "nothing", "/", Some(&rig.token), &[]).await;
    assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(b1["error"]["code"], b2["error"]["code"]);
    assert_eq!(b1["error"]["message"], b2["error"]["message"]);
    rig.tc
        .wait_audit(
            "gateway.access",
            "no rule grants user alice access to secret",
        )
        .await;
}

#[tokio::test]
async fn a_suspended_users_next_request_is_refused() {
    let rig = Rig::start().await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    rig.tc
        .admin_post("/api/v1/admin/users/alice/suspend", json!({}))
        .await;
    let view = rig.gw.view.clone();
    eventually("suspension pushed", Duration::from_secs(5), || {
        view.read().users.contains("alice")
    })
    .await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Resuming the user does not revive the sessions the suspension ended.
    rig.tc
        .admin_post("/api/v1/admin/users/alice/resume", json!({}))
        .await;
    eventually("resume pushed", Duration::from_secs(5), || {
        !view.read().users.contains("alice")
    })
    .await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token stays dead");
}

#[tokio::test]
async fn a_revocation_reaches_the_gateway_by_push_well_within_a_second() {
    // Periodic resynchronization every 10 minutes: only a push can be fast.
    let rig = Rig::start_with_resync(600).await;
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let sessions = rig.tc.admin_get("/api/v1/admin/sessions").await;
    let sid = sessions["items"][0]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    rig.tc
        .admin_post(&format!("/api/v1/admin/sessions/{sid}/revoke"), json!({}))
        .await;
    let revoked_at = Instant::now();
    let view = rig.gw.view.clone();
    eventually("revocation at the gateway", Duration::from_secs(1), || {
        view.read().sessions.contains(&sid)
    })
    .await;
    eprintln!(
        "revocation reached the gateway after {:?}",
        revoked_at.elapsed()
    );
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn grants_change_at_once_and_the_gateway_fails_closed_when_stale() {
    let rig = Rig::start().await;
    let (status, _) = rig
        .get(&rig.device, "billing", "/v1/charges", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = rig.gw.view.seq();
    let (status, body) = rig
        .tc
        .public()
        .call(
            Method::DELETE,
            "/api/v1/admin/services/billing",
            Some(&rig.tc.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = rig.gw.view.clone();
    eventually("grant removal pushed", Duration::from_secs(5), || {
        view.seq() > before
    })
    .await;
    let (status, _) = rig
        .get(&rig.device, "billing", "/v1/charges", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing heard from the controller for longer than the bound: refuse.
    rig.tc.clock.advance(120);
    let (status, body) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

/// Reads control-channel frames until `n` have arrived (bounded).
async fn frames(resp: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("frames in time")
            .expect("stream")
            .expect("open");
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).expect("json frame"));
        }
    }
    out
}

#[tokio::test]
async fn the_control_channel_resumes_after_a_sequence_number_or_resyncs_when_too_far_behind() {
    let rig = Rig::start().await;
    let dir = rig._state.path().join("gw");
    let cert = std::fs::read_to_string(dir.join("gateway.crt")).expect("cert");
    let key = std::fs::read_to_string(dir.join("gateway.key")).expect("key");
    let identity = Some((
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
    ));
    let tls = umbra_pki::tls::client_config(&rig.tc.ca(), identity).expect("tls");
    let gateway = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let last = rig.gw.view.seq().expect("synced");
    let open = |after: Option<i64>| {
        let mut url = format!("{}/api/v1/gateway/control", rig.tc.url);
        if let Some(a) = after {
            url.push_str(&format!("?after={a}"));
        }
        gateway.get(url).send()
    };

    // Resume: the events after `last - 2`, in order, no snapshot.
    let mut resp = open(Some(last - 2)).await.expect("open");
    assert_eq!(resp.status(), StatusCode::OK);
    let got = frames(&mut resp, 2).await;
    assert_eq!(got[0]["type"], "event");
    assert_eq!(got[0]["seq"], last - 1);
    assert_eq!(got[1]["seq"], last);
    drop(resp);

    // No position: a snapshot at the newest sequence number.
    let mut resp = open(None).await.expect("open");
    let got = frames(&mut resp, 1).await;
    assert_eq!(got[0]["type"], "snapshot");
    assert_eq!(got[0]["seq"], last);
    assert_eq!(got[0]["state"]["grants"].as_array().map(Vec::len), Some(6));
    drop(resp);

    // Two hours on, the controller has pruned the log: too far behind for
    // a replay, so a snapshot again.
    rig.tc.clock.advance(2 * 3600);
    rig.tc
        .admin_post("/api/v1/admin/users/alice/suspend", json!({}))
        .await;
    let mut pruned = false;
    for _ in 0..100 {
        let mut resp = open(Some(1)).await.expect("open");
        let first = frames(&mut resp, 1).await.remove(0);
        if first["type"] == "snapshot" {
            assert!(first["seq"].as_i64() > Some(last));
            assert_eq!(first["state"]["revocations"]["users"], json!(["alice"]));
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pruned, "a gateway behind the retained log gets a snapshot");

    // A gateway registers its assertion key only under its own key id: it
    // cannot take over another gateway's or the controller's.
    let (_, jwks) = rig.tc.public().get("/.well-known/jwks.json", None).await;
    let mut jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| {
            k["kid"]
                .as_str()
                .is_some_and(|kid| kid.starts_with("gw-gw1-"))
        })
        .expect("the gateway's key, named for it")
        .clone();
    let controller_kid = jwks["keys"][0]["kid"].clone();
    jwk["kid"] = controller_kid;
    let r = gateway
        .post(format!("{}/api/v1/gateway/register", rig.tc.url))
        .json(&json!({ "url": rig.gw_url, "routes": [], "assertion_jwk": jwk }))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Only a gateway certificate opens the channel; a device's does not.
    let device = rig.client(Some(&rig.device));
    let r = device
        .get(format!("{}/api/v1/gateway/control", rig.tc.url))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_renewed_gateway_certificate_replaces_the_old_one_everywhere() {
    let rig = Rig::start().await;
    let dir = rig._state.path().join("gw");
    let old_cert = std::fs::read_to_string(dir.join("gateway.crt")).expect("cert");
    let old_key = std::fs::read_to_string(dir.join("gateway.key")).expect("key");
    let (not_before, not_after) = rig.gw.validity();
    assert_eq!(
        not_after - not_before,
        30 * 86400 + 300,
        "30 days (+ backdating)"
    );
    let serial = umbra_gateway::renew::renew(&rig.gw).await.expect("renew");
    let gateways = rig.tc.admin_get("/api/v1/admin/gateways").await;
    assert_eq!(gateways["items"][0]["certificate_serial"], serial.as_str());
    assert_ne!(
        std::fs::read_to_string(dir.join("gateway.crt")).expect("cert"),
        old_cert,
        "the renewed certificate is on disk"
    );
    // New handshakes get the new certificate, and traffic flows.
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    // The old certificate opens nothing at the controller any more.
    let identity = Some((
        vec![CertificateDer::from_pem_slice(old_cert.as_bytes()).expect("cert")],
        PrivateKeyDer::from_pem_slice(old_key.as_bytes()).expect("key"),
    ));
    let tls = umbra_pki::tls::client_config(&rig.tc.ca(), identity).expect("tls");
    let old = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let r = old
        .get(format!("{}/api/v1/gateway/control", rig.tc.url))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    rig.tc
        .wait_audit("gateway.authenticate", "gateway_certificate_superseded")
        .await;
    assert!(umbra_gateway::renew::renew_at(not_before, not_after) < not_after);
}

#[tokio::test]
async fn refusals_are_in_the_audit_trail_before_the_response_even_in_a_burst_of_large_ones() {
    let rig = Rig::start().await;
    let client = rig.client(Some(&rig.device));
    let long = "x".repeat(4000);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let req = client
            .get(format!("{}/{long}/{i}", rig.gw_url))
            .header("host", "nothing")
            .bearer_auth(&rig.token);
        tasks.push(tokio::spawn(async move {
            req.send().await.expect("request").status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::NOT_FOUND);
    }
    // No waiting: each refusal was stored before it was answered.
    let denied = rig
        .tc
        .audit("gateway.access")
        .await
        .into_iter()
        .filter(|r| {
            r["outcome"] == "deny"
                && r["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("no_route"))
        })
        .count();
    assert_eq!(denied, 60);
}

impl Rig {
    /// An agent state directory for `device` holding this rig's session.
    pub fn agent_dir(
        &self,
        device: &TestDevice,
    ) -> (tempfile::TempDir, umbra_agent::dir::AgentDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = umbra_agent::dir::AgentDir::new(tmp.path());
        let w = |name: &str, text: &str| {
            std::fs::write(tmp.path().join(name), text).expect("write");
        };
        w("device.crt", &device.cert_pem);
        w("device.key", &device.key_pem);
        w("ca.pem", self.tc.controller.ca.cert_pem());
        w(
            "agent.json",
            &json!({
                "controller_url": self.tc.url,
                "device_id": device.id,
                "spiffe_id": format!("spiffe://{}/device/{}", self.tc.controller.ca.trust_domain(), device.id),
            })
            .to_string(),
        );
        w("spa.key", &device.spa_secret);
        w("session.json", &self.login.to_string());
        (tmp, dir)
    }

    pub fn tcp_access(&self, service: &str) -> umbra_proto::control::ServiceAccess {
        umbra_proto::control::ServiceAccess {
            name: service.into(),
            gateway_url: self.gw_url.clone(),
            host: service.into(),
            protocol: umbra_proto::control::Protocol::Tcp,
            gateway: "gw1".into(),
            spa_port: None,
        }
    }
}

pub async fn echo_round_trip<S>(s: &mut S, text: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(text).await.expect("write");
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read");
    assert!(back == text, "the echo differs");
}

#[tokio::test]
async fn a_tcp_service_is_reached_through_a_tunnel_with_the_same_checks_as_http() {
    let rig = Rig::start().await;
    let services = &rig.login["services"];
    assert!(
        services
            .as_array()
            .expect("services")
            .iter()
            .any(|s| s["name"] == "echo" && s["protocol"] == "tcp"),
        "login says how to reach the TCP service: {services}"
    );
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut tunnel = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("tunnel");
    echo_round_trip(&mut tunnel, b"hello through the gateway\n").await;
    // Large writes flow (backpressure both ways, nothing buffered whole).
    let big = vec![b'x'; 1 << 20];
    echo_round_trip(&mut tunnel, &big).await;
    rig.tc.wait_audit("gateway.tunnel", "tunnel opened").await;

    // An ungranted TCP service and a nonexistent one: the same refusal.
    for service in ["secret-tcp", "nothing"] {
        match umbra_agent::tunnel::open(&dir, &rig.tcp_access(service)).await {
            Err(umbra_agent::AgentError::Refused { code, .. }) => assert_eq!(code, "not_found"),
            other => panic!("{service}: {:?}", other.map(|_| ())),
        }
    }
    // The token with another device's certificate.
    let other = rig.tc.enroll("alice").await;
    let (_keep2, other_dir) = rig.agent_dir(&other);
    match umbra_agent::tunnel::open(&other_dir, &rig.tcp_access("echo")).await {
        Err(umbra_agent::AgentError::Refused { code, .. }) => {
            assert_eq!(code, "authentication_failed");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    rig.tc
        .wait_audit("gateway.tunnel", "token_not_bound_to_certificate")
        .await;

    // A live tunnel is cut when its session is revoked.
    let sid = rig.login["session_id"].as_str().expect("sid").to_owned();
    rig.tc
        .admin_post(&format!("/api/v1/admin/sessions/{sid}/revoke"), json!({}))
        .await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .expect("the tunnel is cut in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF after the revocation");
    rig.tc
        .wait_audit("gateway.tunnel", "tunnel cut: session_revoked")
        .await;
}

#[tokio::test]
async fn a_tunnel_without_a_valid_opening_frame_is_refused() {
    let rig = Rig::start().await;
    let chain = vec![CertificateDer::from_pem_slice(rig.device.cert_pem.as_bytes()).expect("c")];
    let key = PrivateKeyDer::from_pem_slice(rig.device.key_pem.as_bytes()).expect("k");
    let mut tls = umbra_pki::tls::client_config(&rig.tc.ca(), Some((chain, key))).expect("tls");
    tls.alpn_protocols = vec![umbra_proto::control::TUNNEL_ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let oversized = vec![b'{'; 20_000];
    for garbage in [&b"not json\n"[..], &oversized[..]] {
        let tcp = tokio::net::TcpStream::connect(rig.gw_url.trim_start_matches("https://"))
            .await
            .expect("connect");
        let mut s = connector
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
            .expect("tls");
        let _ = s.write_all(garbage).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("invalid_request"), "{text}");
    }
    rig.tc
        .wait_audit("gateway.tunnel", "tunnel_open_malformed_or_late")
        .await;
}

impl Rig {
    async fn tls(&self) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let chain =
            vec![CertificateDer::from_pem_slice(self.device.cert_pem.as_bytes()).expect("c")];
        let key = PrivateKeyDer::from_pem_slice(self.device.key_pem.as_bytes()).expect("k");
        let tls = umbra_pki::tls::client_config(&self.tc.ca(), Some((chain, key))).expect("tls");
        let tcp =
            tokio::net::TcpStream::connect(self.gw_url.trim_start_matches("https://")).await?;
        tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
    }
}

#[tokio::test]
async fn limits_hold_slow_clients_large_requests_and_connection_hoarders_off() {
    let limits = umbra_gateway::config::RawLimits {
        header_timeout_seconds: Some(1),
        max_header_bytes: Some(8192),
        max_body_bytes: Some(1000),
        max_connections_per_source: Some(3),
        ..Default::default()
    };
    let rig = Rig::start_custom(300, limits).await;

    // Slowloris: half a request, then silence; the gateway hangs up.
    let mut slow = rig.tls().await.expect("tls");
    slow.write_all(b"GET / HTTP/1.1\r\nhost: demo\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "a client too slow with its headers is disconnected"
    );
    drop(slow);

    // Headers over the limit.
    let big = "x".repeat(20_000);
    let (status, _) = rig
        .get(
            &rig.device,
            "demo",
            "/",
            Some(&rig.token),
            &[("x-filler", big.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::from_u16(431).expect("status"));

    // A declared body over the limit: 413, audited.
    let r = rig
        .client(Some(&rig.device))
        .post(format!("{}/upload", rig.gw_url))
        .header("host", "demo")
        .bearer_auth(&rig.token)
        .body(vec![b'a'; 5000])
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    rig.tc.wait_audit("gateway.access", "body_too_large").await;

    // Three connections from one address; the fourth is turned away until
    // one of the three closes.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(rig.tls().await.expect("within the limit"));
    }
    assert!(rig.tls().await.is_err(), "the fourth connection is refused");
    held.pop();
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = rig.tls().await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a freed place can be taken again");
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_a_clear_502_and_an_audit_record() {
    let rig = Rig::start().await;
    let (status, body) = rig
        .get(&rig.device, "down", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "upstream_unavailable");
    rig.tc.wait_audit("gateway.access", "upstream failed").await;
}

/// `sshd` on a loopback port with throw-away keys, for the test's own
/// user (key authentication only). Needs root (privilege separation).
struct Sshd {
    _process: support::Running,
    port: u16,
    client_key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn keygen(path: &std::path::Path) {
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen must be installed (apt-get install openssh-client)")
        .success();
    assert!(ok, "ssh-keygen");
}

impl Sshd {
    /// `None` (after saying why) where sshd cannot run; under CI=true that
    /// is a failure.
    fn start() -> Option<Self> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let sshd = std::path::Path::new("/usr/sbin/sshd");
        // sshd's privilege separation needs root.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !sshd.exists() || !root {
            assert!(
                !ci,
                "CI needs sshd (openssh-server) and root for the SSH tunnel test"
            );
            eprintln!("skipping: sshd or root unavailable");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("keys");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = support::free_port();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile none\n\
                 AuthorizedKeysFile {keys}\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\n",
                host = d.join("host_key").display(),
                keys = d.join("authorized_keys").display(),
            ),
        )
        .expect("config");
        let process = support::Running(
            std::process::Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sshd"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            _process: process,
            port,
            client_key: d.join("client_key"),
            _dir: dir,
        })
    }
}

// Multi-threaded: the gateway and the agent run here while `ssh` runs as a
// child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_works_through_a_tcp_tunnel() {
    let Some(sshd) = Sshd::start() else { return };
    let rig = Rig::start_routes(vec![RawRoute {
        service: "ssh".into(),
        host: None,
        path_prefix: None,
        upstream: format!("tcp://127.0.0.1:{}", sshd.port),
        protocol: Some("tcp".into()),
        upstream_http2: None,
    }])
    .await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let local = listener.local_addr().expect("addr").port();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(umbra_agent::tunnel::run(
        dir,
        Arc::new(rig.tcp_access("ssh")),
        listener,
        stop,
    ));
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let out = tokio::process::Command::new("ssh")
        .args(["-p", &local.to_string(), "-i"])
        .arg(&sshd.client_key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg("echo through-the-tunnel")
        .output()
        .await
        .expect("ssh");
    assert!(
        out.status.success(),
        "ssh through the tunnel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through-the-tunnel"
    );
    rig.tc.wait_audit("gateway.tunnel", "tunnel opened").await;
}

/// A WebSocket echo server on a loopback port (the service behind the gateway).
async fn websocket_echo(shutdown: CancellationToken) -> u16 {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => match a { Ok((t, _)) => t, Err(_) => continue },
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn websockets_upgrade_through_the_gateway_and_are_cut_on_revocation() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let ws_port = websocket_echo(stop).await;
    let rig = Rig::start_routes(vec![RawRoute {
        service: "ws".into(),
        host: None,
        path_prefix: None,
        upstream: format!("http://127.0.0.1:{ws_port}"),
        protocol: None,
        upstream_http2: None,
    }])
    .await;
    let tls = rig.tls().await.expect("tls");
    let mut request = "wss://ws/chat".into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", rig.token).parse().expect("header"),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("the upgrade succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hello over a websocket"))
        .await
        .expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("ok");
    assert_eq!(
        echoed.into_text().expect("text").as_str(),
        "hello over a websocket"
    );
    rig.tc.wait_audit("gateway.access", "upgraded").await;

    // Through the agent's local port, as a browser or CLI would use it.
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let local = listener.local_addr().expect("addr");
    let agent_stop = CancellationToken::new();
    let _agent_stop = agent_stop.clone().drop_guard();
    tokio::spawn(async move { umbra_agent::connect::run(dir, "ws", listener, agent_stop).await });
    let (mut via_agent, _) = tokio_tungstenite::connect_async(format!("ws://{local}/chat"))
        .await
        .expect("upgrade through the agent");
    via_agent
        .send(Message::text("via the agent"))
        .await
        .expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), via_agent.next())
        .await
        .expect("echo in time")
        .expect("a message")
        .expect("ok");
    assert_eq!(echoed.into_text().expect("text").as_str(), "via the agent");

    // Without a session token the upgrade is refused like any request.
    let tls = rig.tls().await.expect("tls");
    let refused = tokio_tungstenite::client_async("wss://ws/chat", tls).await;
    assert!(refused.is_err(), "no token, no upgrade");

    // Revoking the session cuts the live WebSocket.
    let sid = rig.login["session_id"].as_str().expect("sid").to_owned();
    rig.tc
        .admin_post(&format!("/api/v1/admin/sessions/{sid}/revoke"), json!({}))
        .await;
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the socket is cut in time");
    assert!(
        !matches!(next, Some(Ok(Message::Text(_)))),
        "no more messages after the revocation: {next:?}"
    );
    rig.tc
        .wait_audit("gateway.access", "upgraded connection cut: session_revoked")
        .await;
}

#[tokio::test]
async fn http2_from_the_client_and_to_an_upstream_that_speaks_it() {
    // The same demo upstream speaks h2c; this route asks for it.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = upstream.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(umbra_gateway::demo::serve(upstream, stop));
    let rig = Rig::start_routes(vec![RawRoute {
        service: "h2".into(),
        host: None,
        path_prefix: None,
        upstream: format!("http://{addr}"),
        protocol: None,
        upstream_http2: Some(true),
    }])
    .await;
    let chain = vec![CertificateDer::from_pem_slice(rig.device.cert_pem.as_bytes()).expect("c")];
    let key = PrivateKeyDer::from_pem_slice(rig.device.key_pem.as_bytes()).expect("k");
    let mut tls = umbra_pki::tls::client_config(&rig.tc.ca(), Some((chain, key))).expect("tls");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    // Over HTTP/2 the service is named by :authority, so the client uses
    // the service's name (one of the gateway certificate's SANs).
    let gw_addr: std::net::SocketAddr = rig
        .gw_url
        .trim_start_matches("https://")
        .parse()
        .expect("addr");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("h2", gw_addr)
        .resolve("demo", gw_addr)
        .build()
        .expect("client");
    for (service, upstream_version) in [("h2", "HTTP/2.0"), ("demo", "HTTP/1.1")] {
        let resp = client
            .get(format!("https://{service}:{}/v/1", gw_addr.port()))
            .bearer_auth(&rig.token)
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "client side is h2"
        );
        let echo: Value = resp.json().await.expect("json");
        assert_eq!(echo["version"], upstream_version, "{service}: {echo}");
        assert_eq!(echo["headers"]["x-auth-user"], "alice");
    }
}

#[tokio::test]
async fn withdrawing_a_grant_cuts_the_live_tunnels_to_that_service() {
    let rig = Rig::start().await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut tunnel = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("tunnel");
    echo_round_trip(&mut tunnel, b"before\n").await;
    let (status, body) = rig
        .tc
        .public()
        .call(
            Method::DELETE,
            "/api/v1/admin/services/echo",
            Some(&rig.tc.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .expect("the tunnel is cut in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF once the grant is gone");
    rig.tc
        .wait_audit("gateway.tunnel", "tunnel cut: policy_withdrawn")
        .await;
}
