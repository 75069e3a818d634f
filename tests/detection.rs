//! Threat detection and response: a brute-force run raises an alert that
//! a webhook receives (signed, and retried while the receiver is down,
//! without holding anything up), the account locks and an admin unlocks
//! it; a session moving over 100 MB through a gateway, over a tunnel or
//! in plain HTTP bodies, is suspended at once. Everything through the real API, the real gateway and tunnels.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access::Rig;
use crate::support::{self, free_port};

const SECRET: &str = "0123456789abcdef-webhook-secret";

/// What a webhook receiver got: the headers that matter and the body.
#[derive(Clone, Debug)]
struct Delivery {
    timestamp: String,
    signature: String,
    delivery: String,
    body: String,
}

/// A webhook receiver on `port`: answers 200 to every POST and keeps it.
async fn receiver(port: u16, got: Arc<Mutex<Vec<Delivery>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the receiver");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                            .unwrap_or_default()
                    };
                    let length: usize = header("content-length").parse().unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    got.lock().expect("lock").push(Delivery {
                        timestamp: header("x-umbra-timestamp"),
                        signature: header("x-umbra-signature"),
                        delivery: header("x-umbra-delivery"),
                        body: body[..length].to_owned(),
                    });
                    let _ = tcp
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_run_alerts_a_webhook_that_was_down_and_locks_until_an_admin_unlocks() {
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret_file = secret_dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret");
    // The receiver is down when the alert is raised.
    let port = free_port();
    let tc = support::start_with(&format!(
        "[[detection.webhook]]\nurl = \"http://127.0.0.1:{port}/umbra\"\nsecret_file = {:?}\n",
        secret_file.to_str().expect("path")
    ))
    .await;
    let alice = tc.create_user("alice", &["eng"]).await;
    let device = tc.enroll("alice").await;
    let mut wrong = support::TestUser {
        name: alice.name.clone(),
        password: "not-her-password".into(),
        totp_secret: alice.totp_secret.clone(),
    };
    for attempt in 1..=5 {
        let (status, _) = tc.login(&device, &wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let alert = tc.wait_audit("threat.alert", "failed_logins").await;
    let reason = alert["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("threat 0.80"), "{reason}");
    assert!(reason.contains("5 failed logins in 15 minutes"), "{reason}");
    assert_eq!(alert["actor"], "user:alice");
    // The automatic lock: the right password does not get in now. (This
    // request, like the audit reads, is answered while the dead webhook's
    // delivery is still being retried, minutes of it: nothing waits on it.)
    wrong.password = alice.password.clone();
    let (status, _) = tc.login(&device, &wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.login").await,
        "deny: account_locked"
    );

    // The receiver comes up: the alert arrives on a retry, signed.
    let got = Arc::new(Mutex::new(Vec::new()));
    receiver(port, got.clone()).await;
    let mut delivered = None;
    for _ in 0..300 {
        if let Some(d) = got.lock().expect("lock").first().cloned() {
            delivered = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = delivered.expect("the alert is delivered once the receiver is up");
    let ts: i64 = d.timestamp.parse().expect("timestamp");
    assert_eq!(
        d.signature,
        umbra_controller::webhook::signature(SECRET.as_bytes(), ts, &d.body),
        "signed over timestamp and body"
    );
    let body: Value = serde_json::from_str(&d.body).expect("json");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["id"], d.delivery);
    assert_eq!(body["factors"][0]["name"], "failed_logins");
    assert_eq!(
        body["recommended_actions"][0],
        "Require additional MFA verification"
    );
    assert!(
        reason.contains(body["id"].as_str().expect("id")),
        "{reason}"
    );

    // An admin unlocks: the right password works again.
    tc.admin_post("/api/v1/admin/users/alice/unlock", json!({}))
        .await;
    tc.clock.advance(30);
    let (status, body) = tc.login(&device, &alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !tc.audit("user.unlock").await.is_empty(),
        "the unlock is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moving_over_100_mb_through_a_gateway_is_suspended_at_once() {
    let rig = Rig::start().await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let tunnel = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("tunnel");
    let (mut read, mut write) = tokio::io::split(tunnel);
    // Out and back until the gateway cuts it (at most 4 GB): past 100 MB
    // moved, the session is suspended.
    const CAP: u64 = 4 << 30;
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..(CAP >> 20) {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let cut = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received += n as u64,
            }
        }
    })
    .await
    .expect("the tunnel ends in time");
    writer.abort();
    assert!(
        cut > 40 << 20 && cut < CAP,
        "the tunnel was cut after the limit, not before and not never ({cut} bytes back)"
    );

    let alert = rig.tc.wait_audit("threat.alert", "data_exfiltration").await;
    let reason = alert["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("threat 0.90"), "{reason}");
    assert!(reason.contains("user suspended for 3600 s"), "{reason}");
    rig.tc.wait_audit("threat.suspend", "threat 0.90").await;
    // The suspension revokes the session too: either names the cut.
    let cut = rig.tc.wait_audit("gateway.tunnel", "tunnel cut: ").await;
    let why = cut["reason"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("tunnel cut: user_suspended")
            || why.starts_with("tunnel cut: session_revoked"),
        "{why}"
    );
    let users = rig.tc.admin_get("/api/v1/admin/users").await;
    let alice = users["items"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == "alice")
        .cloned()
        .expect("alice");
    assert_eq!(alice["status"], "suspended", "{alice}");

    // The source is blocked at the gateway: nothing from it is served.
    let blocks = rig.tc.admin_get("/api/v1/admin/blocks").await;
    assert_eq!(blocks["items"][0]["address"], "127.0.0.1", "{blocks}");
    let (gw, ip) = (rig.gw.clone(), "127.0.0.1".parse().expect("ip"));
    crate::access::eventually("the gateway has the block", Duration::from_secs(10), || {
        gw.view.read().is_blocked(ip, gw.now())
    })
    .await;
    assert!(
        umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
            .await
            .is_err(),
        "a blocked source gets nothing"
    );

    // Reversible by an admin: resume the user, lift the block.
    rig.tc
        .admin_post("/api/v1/admin/users/alice/resume", json!({}))
        .await;
    let (status, body) = rig
        .tc
        .public()
        .call(
            reqwest::Method::DELETE,
            "/api/v1/admin/blocks/127.0.0.1",
            Some(&rig.tc.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    rig.tc.clock.advance(30);
    let (status, login) = rig.tc.login(&rig.device, &rig.alice).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let (keep, dir) = rig.agent_dir(&rig.device);
    std::fs::write(keep.path().join("session.json"), login.to_string()).expect("session");
    crate::access::eventually(
        "the gateway lifted the block",
        Duration::from_secs(10),
        || !gw.view.read().is_blocked(ip, gw.now()),
    )
    .await;
    let mut tunnel = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("served again");
    crate::access::echo_round_trip(&mut tunnel, b"back\n").await;
    for action in ["threat.suspend", "user.resume", "source.unblock"] {
        assert!(!rig.tc.audit(action).await.is_empty(), "{action} audited");
    }
}

/// An upstream that reads each request's body and answers it with `size`
/// bytes: an upload and a download per request.
async fn bulk_upstream(size: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 64 << 10];
                let mut data = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    // The head, then as many body bytes as it announces.
                    let end = loop {
                        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while data.len() < end + length {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    }
                    data.drain(..end + length);
                    let start = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                    if tcp.write_all(start.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut left = size;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if tcp.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                }
            });
        }
    });
    url
}

/// The bytes the gateway reported for plain HTTP bodies in the rig's
/// session.
async fn http_bytes_reported(rig: &Rig) -> u64 {
    let sid = rig.login["session_id"].as_str().expect("sid");
    let needle = format!("in HTTP bodies in session {sid}");
    rig.tc
        .audit("gateway.transfer")
        .await
        .iter()
        .filter(|r| r["reason"].as_str().is_some_and(|s| s.ends_with(&needle)))
        .filter_map(|r| r["reason"].as_str()?.split_once(' ')?.0.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_moving_over_100_mb_are_exfiltration_too() {
    const EACH: usize = 2 << 20;
    let upstream = bulk_upstream(EACH).await;
    let rig = Rig::start_routes(vec![umbra_gateway::config::RawRoute {
        service: "bulk".into(),
        host: Some("bulk".into()),
        path_prefix: None,
        upstream,
        protocol: None,
        upstream_http2: None,
    }])
    .await;
    let client = rig.client(Some(&rig.device));
    // Plain POSTs, 2 MiB up and 2 MiB down each, until the gateway stops
    // answering (at most 1 GiB): past 100 MB, counted both ways, the
    // session is suspended and the source blocked.
    let (mut sent, mut received) = (0u64, 0u64);
    for _ in 0..256 {
        let resp = client
            .post(format!("{}/upload", rig.gw_url))
            .header("host", "bulk")
            .bearer_auth(&rig.token)
            .body(vec![b'u'; EACH])
            .send()
            .await;
        let Ok(resp) = resp else { break };
        if resp.status() != StatusCode::OK {
            break;
        }
        sent += EACH as u64;
        match resp.bytes().await {
            Ok(b) => received += b.len() as u64,
            Err(_) => break,
        }
    }
    assert!(
        sent + received > 90 << 20 && sent + received < 1 << 30,
        "the requests stopped after the limit, not before and not never \
         ({sent} bytes up, {received} down)"
    );
    let alert = rig.tc.wait_audit("threat.alert", "data_exfiltration").await;
    let reason = alert["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("threat 0.90"), "{reason}");
    rig.tc.wait_audit("threat.suspend", "threat 0.90").await;

    // Both directions counted: what the gateway reported covers what went
    // up and came down, short of the session's unreported tally at most.
    let mut reported = 0;
    for _ in 0..100 {
        reported = http_bytes_reported(&rig).await;
        if reported + umbra_gateway::transfer::REPORT_FROM >= sent + received {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        reported + umbra_gateway::transfer::REPORT_FROM >= sent + received,
        "reported {reported} bytes of {sent} up and {received} down"
    );
    let (status, _) = rig.tc.login(&rig.device, &rig.alice).await;
    assert_ne!(status, StatusCode::OK, "the user is suspended");
}
