//! `/metrics` on the controller and the gateway: real events (logins good
//! and bad, requests allowed and denied, a revocation) show up as the
//! values they should, and Debian's stock `promtool check metrics` accepts
//! both scrapes (the Prometheus text format, `DESIGN.md` Contracts).
//!
//! promtool must be installed (`.ci/run` installs the `prometheus`
//! package); with CI=true its absence fails the test, elsewhere the
//! promtool check is skipped with a message.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::access::Rig;
use crate::support::oathtool;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

fn promtool_available() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool must be installed (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
    }
    found
}

/// `promtool check metrics` reads the scrape on stdin: format and lint.
fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics refused the {what} scrape ({}):\n{}{}\n--- scrape ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// GETs `url` with `client`; the body, after checking the content type.
async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let resp = client.get(url).send().await.expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, CONTENT_TYPE, "{url}");
    resp.text().await.expect("body")
}

/// Scrapes until `line` is in the scrape (bounded); the scrape.
async fn scrape_until(client: &reqwest::Client, url: &str, line: &str) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(client, url).await;
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{line} never appeared in {url}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "{line} is not in the scrape:\n{text}"
    );
}

/// The value of the sample that is exactly `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} is not in the scrape:\n{text}"))
}

#[tokio::test]
async fn both_endpoints_count_what_happened_and_promtool_accepts_them() {
    // The rig logs alice in once (a success) and syncs the gateway.
    let rig = Rig::start().await;
    let tc = &rig.tc;

    // A wrong password, from the enrolled device: one failure.
    let (status, _) = tc
        .with_device(&rig.device)
        .post(
            "/api/v1/auth/login",
            None,
            json!({
                "user": rig.alice.name,
                "password": "not-the-password",
                "totp": oathtool(&rig.alice.totp_secret, tc.now()),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Through the gateway: allowed, denied by policy, and no session.
    let (status, _) = rig
        .get(
            &rig.device,
            "billing",
            "/v1/charges/7",
            Some(&rig.token),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = rig
        .get(&rig.device, "secret", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = rig
        .get(&rig.device, "billing", "/v1/charges/7", None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The controller's /metrics is public: no client certificate.
    let tls = umbra_pki::tls::client_config(&tc.ca(), None).expect("tls");
    let controller_client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let controller_url = format!("{}/metrics", tc.url);
    let controller = scrape(&controller_client, &controller_url).await;
    has(&controller, "# TYPE ztna_auth_attempts_total counter");
    has(
        &controller,
        r#"ztna_auth_attempts_total{method="password_totp",result="success"} 1"#,
    );
    has(
        &controller,
        r#"ztna_auth_attempts_total{method="password_totp",result="failure"} 1"#,
    );
    has(
        &controller,
        r#"ztna_auth_attempts_total{method="step_up",result="success"} 0"#,
    );
    // Only the good login got as far as a risk score.
    has(&controller, "ztna_risk_scores_count 1");
    has(&controller, r#"ztna_risk_scores_bucket{le="100"} 1"#);
    has(&controller, r#"ztna_active_sessions{zone="all"} 1"#);
    let devices: f64 = ["compliant", "non_compliant", "unknown"]
        .iter()
        .map(|s| {
            value(
                &controller,
                &format!(r#"ztna_device_compliance{{status="{s}"}}"#),
            )
        })
        .sum();
    assert_eq!(devices, 1.0, "one approved device:\n{controller}");
    has(&controller, "umbra_controller_gateways_connected 1");
    assert!(
        value(
            &controller,
            r#"umbra_controller_events_published_total{kind="grant_changed"}"#
        ) >= 6.0,
        "{controller}"
    );

    // The gateway's metrics listener: plain HTTP, no certificate.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway_url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(umbra_gateway::metrics::serve(
        rig.gw.clone(),
        listener,
        stop.clone(),
    ));
    let plain = reqwest::Client::new();
    let gateway = scrape(&plain, &gateway_url).await;
    has(&gateway, "# TYPE ztna_access_requests_total counter");
    has(
        &gateway,
        r#"ztna_access_requests_total{decision="allow",resource="billing"} 1"#,
    );
    has(
        &gateway,
        r#"ztna_access_requests_total{decision="deny",resource="secret"} 1"#,
    );
    has(
        &gateway,
        r#"ztna_access_requests_total{decision="deny",resource="-"} 1"#,
    );
    has(
        &gateway,
        r#"umbra_gateway_request_duration_seconds_count{service="billing"} 1"#,
    );
    has(&gateway, "umbra_gateway_controller_connected 1");
    has(&gateway, "umbra_gateway_state_fresh 1");
    assert!(
        value(&gateway, "umbra_gateway_controller_contact_age_seconds") <= 60.0,
        "{gateway}"
    );
    let (status, health) = (
        plain
            .get(gateway_url.replace("/metrics", "/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        plain
            .get(gateway_url.replace("/metrics", "/admin"))
            .send()
            .await
            .expect("other path")
            .status(),
    );
    assert_eq!(
        (status, health),
        (StatusCode::OK, StatusCode::NOT_FOUND),
        "the metrics listener serves /metrics and /healthz only"
    );

    // A revocation: the gateway times its cut, the session is gone.
    let sid = rig.login["session_id"].as_str().expect("session id");
    tc.admin_post(&format!("/api/v1/admin/sessions/{sid}/revoke"), json!({}))
        .await;
    let gateway = scrape_until(
        &plain,
        &gateway_url,
        "umbra_gateway_revocation_seconds_count 1",
    )
    .await;
    let controller = scrape(&controller_client, &controller_url).await;
    has(&controller, r#"ztna_active_sessions{zone="all"} 0"#);
    has(
        &controller,
        r#"umbra_controller_events_published_total{kind="session_revoked"} 1"#,
    );

    if promtool_available() {
        promtool_check("controller", &controller);
        promtool_check("gateway", &gateway);
    }
    stop.cancel();
}

#[tokio::test]
async fn a_dark_gateway_counts_spa_packets_and_open_pinholes() {
    let rig = Rig::start_dark(30).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(umbra_gateway::metrics::serve(
        rig.gw.clone(),
        listener,
        stop.clone(),
    ));
    // Noise at the SPA port: dropped by the cheap checks, unanswered.
    let port = rig.gw.spa_port.expect("dark gateway has an SPA port");
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    udp.send_to(b"not a knock", ("127.0.0.1", port))
        .await
        .expect("send");
    let text = scrape_until(
        &reqwest::Client::new(),
        &url,
        r#"umbra_gateway_spa_packets_total{outcome="dropped"} 1"#,
    )
    .await;
    has(
        &text,
        r#"umbra_gateway_spa_packets_total{outcome="accepted"} 0"#,
    );
    assert!(value(&text, "umbra_gateway_pinholes_open") >= 0.0, "{text}");
    if promtool_available() {
        promtool_check("dark gateway", &text);
    }
    stop.cancel();
}
