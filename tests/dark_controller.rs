//! A dark controller on loopback: its login surface answers only after a
//! knock, its public endpoints (health, the CA, enrollment) on their own
//! listener; userspace pinholes, so the checks are about who gets a TLS
//! session, not about what a scan sees (the kernel version of the same
//! pinholes is tested with nmap in `dark.rs`).
//!
//! Loopback has many source addresses: 127.0.0.2 is exempt (this harness,
//! the admin), 127.0.0.1 is where the real `umbra agent` binary speaks
//! from, and each attack comes from an address of its own.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use umbra_spa::native::{Knock, OpenAddr, seal};
use umbra_spa::{DeviceSecret, derive_gateway_key};

use crate::cli::agent_cli;
use crate::spa::unix_now;
use crate::support::{self, TestController, TestDevice, http_from, oathtool};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A knock at the controller as the agent seals it.
fn knock(tc: &TestController, device: &TestDevice, target: &str, at: u64) -> Vec<u8> {
    let secret = DeviceSecret::from_base64(&device.spa_secret).expect("secret");
    let td = tc.controller.ca.trust_domain();
    let key = derive_gateway_key(&secret, &format!("spiffe://{td}/{target}"));
    let id = uuid::Uuid::parse_str(&device.id).expect("uuid");
    seal(
        &key,
        &Knock::new(id, vec!["controller".into()], OpenAddr::Source, at),
    )
    .expect("seal")
}

/// Sends `packet` from `from` to the knock port; nothing may come back.
async fn send_from(tc: &TestController, from: &str, packet: &[u8]) {
    let socket = UdpSocket::bind((ip(from), 0)).await.expect("bind");
    let port = tc.controller.dark.get().expect("dark").spa_port;
    let to: SocketAddr = (ip("127.0.0.1"), port).into();
    socket.send_to(packet, to).await.expect("send");
    let mut buf = [0u8; 2048];
    let reply = tokio::time::timeout(Duration::from_millis(150), socket.recv_from(&mut buf)).await;
    assert!(reply.is_err(), "the controller answered a knock: {reply:?}");
}

/// Whether a TLS session to the login surface from `from` gets an HTTP
/// answer at all. No client certificate: a revoked device's would fail
/// the handshake whether or not a pinhole let it in.
async fn reaches(tc: &TestController, from: &str) -> bool {
    http_from(&tc.url, &tc.ca(), None, Some(ip(from)))
        .try_call(reqwest::Method::GET, "/api/v1/auth/session", None, None)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dark_controller_shows_only_its_public_endpoints_until_a_knock() {
    let tc = support::start_dark(30).await;
    let dark = *tc.controller.dark.get().expect("dark");

    // The public endpoints moved, the rest did not follow them.
    let public = tc.public_endpoints();
    assert_eq!(public.get("/healthz", None).await.0, StatusCode::OK);
    assert_eq!(public.get("/api/v1/ca", None).await.0, StatusCode::OK);
    assert_eq!(public.get("/metrics", None).await.0, StatusCode::OK);
    let (status, _) = public
        .get("/api/v1/admin/users", Some(&tc.admin_token))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "admin API on the public listener"
    );
    assert_eq!(
        tc.public().get("/healthz", None).await.0,
        StatusCode::NOT_FOUND
    );

    // A device enrolled over the public listener is told where to knock.
    let alice = tc.create_user("alice", &["eng"]).await;
    let d = tc.enroll("alice").await;
    assert!(!reaches(&tc, "127.0.0.3").await, "open before any knock");

    // Attacks from .4: none opens anything, none is answered.
    let good = knock(&tc, &d, "controller", unix_now());
    let mut tampered = good.clone();
    tampered[40] ^= 0x01;
    let stale = knock(&tc, &d, "controller", unix_now() - 3600);
    let for_a_gateway = knock(&tc, &d, "gateway/gw1", unix_now());
    for packet in [
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        good[..good.len() - 1].to_vec(),
        tampered,
        stale,
        for_a_gateway,
        vec![0u8; 1500],
    ] {
        send_from(&tc, "127.0.0.4", &packet).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !reaches(&tc, "127.0.0.4").await,
        "a bad knock opened the door"
    );

    // A valid knock opens for its source alone; the same packet again,
    // from elsewhere, is a replay and opens nothing.
    send_from(&tc, "127.0.0.5", &good).await;
    let mut opened = false;
    for _ in 0..50 {
        if reaches(&tc, "127.0.0.5").await {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(opened, "a valid knock did not open the login surface");
    send_from(&tc, "127.0.0.6", &good).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reaches(&tc, "127.0.0.6").await, "a replay opened the door");
    assert!(
        !reaches(&tc, "127.0.0.4").await,
        "opened for another source"
    );
    let replay = tc.wait_audit("spa.knock", "replay").await;
    assert_eq!(replay["outcome"], "deny");
    assert_eq!(replay["source_ip"], "127.0.0.6");
    let allowed = tc
        .wait_audit("spa.knock", &format!("device {}", d.id))
        .await;
    assert_eq!(allowed["actor"], "user:alice");
    assert_eq!(allowed["outcome"], "allow");

    // The real agent: enrolls at the public URL, then logs in from
    // 127.0.0.1, knocking first by itself.
    let agent = tempfile::tempdir().expect("tempdir");
    let agent_dir = agent.path().to_str().expect("path");
    let token = tc.enrollment_token("alice").await;
    let out = agent_cli(
        agent_dir,
        &["enroll", "--controller", &tc.public_url, "--token", &token],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.path().join("agent.json")).expect("agent.json"),
    )
    .expect("json");
    assert_eq!(
        state["dark"],
        json!({ "login_port": dark.login_port, "spa_port": dark.spa_port })
    );
    let out = agent_cli(
        agent_dir,
        &[
            "login",
            "--user",
            "alice",
            "--password-stdin",
            "--totp",
            &oathtool(&alice.totp_secret, tc.now()),
        ],
        Some(&alice.password),
    );
    assert!(
        out.status.success(),
        "agent login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_device_or_a_suspended_user_knocks_at_the_controller_in_vain() {
    let tc = support::start_dark(30).await;
    tc.create_user("alice", &["eng"]).await;
    tc.create_user("bob", &["eng"]).await;
    let a = tc.enroll("alice").await;
    let b = tc.enroll("bob").await;

    // Both can knock to begin with.
    send_from(&tc, "127.0.0.7", &knock(&tc, &a, "controller", unix_now())).await;
    send_from(&tc, "127.0.0.8", &knock(&tc, &b, "controller", unix_now())).await;
    tc.wait_audit("spa.knock", &format!("device {}", a.id))
        .await;
    tc.wait_audit("spa.knock", &format!("device {}", b.id))
        .await;

    tc.admin_post(&format!("/api/v1/admin/devices/{}/revoke", a.id), json!({}))
        .await;
    tc.admin_post("/api/v1/admin/users/bob/suspend", json!({}))
        .await;
    // The controller follows its own event log, so the change lands
    // shortly after the admin's answer: each device knocks (from a fresh
    // address each time) until a knock is dropped as from an unknown
    // device, and that address must then stay closed.
    for (d, who, net) in [(&a, "a revoked device", 9), (&b, "a suspended user", 10)] {
        let mut dropped_at = None;
        for i in 1..=50 {
            let from = format!("127.0.{net}.{i}");
            let before = tc.controller.knock_counters.dropped.get();
            send_from(&tc, &from, &knock(&tc, d, "controller", unix_now())).await;
            let mut waited = 0;
            while tc.controller.knock_counters.dropped.get() == before && waited < 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            if tc.controller.knock_counters.dropped.get() > before {
                dropped_at = Some(from);
                break;
            }
        }
        let from = dropped_at.unwrap_or_else(|| panic!("{who} still knocks after 50 tries"));
        assert!(!reaches(&tc, &from).await, "{who} got in");
    }

    // Resumed, bob's device may knock again.
    tc.admin_post("/api/v1/admin/users/bob/resume", json!({}))
        .await;
    let mut opened = false;
    for i in 0..25 {
        let from = format!("127.0.1.{}", i + 1);
        send_from(&tc, &from, &knock(&tc, &b, "controller", unix_now())).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if reaches(&tc, &from).await {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(opened, "a resumed user's device could not knock");
}
