//! A dark gateway in one process: SPA on loopback with userspace pinholes.
//! Knocks are made as the agent makes them (the device's SPA secret from
//! its real enrollment, the key derived for the gateway); the attacks are
//! the issue's: replayed, stale, tampered, wrong-key, truncated, random and
//! misdirected packets open nothing and get no reply.
//!
//! Loopback gives several source addresses (127.0.0.x), so "open for the
//! knocking address only" is checked without namespaces; the kernel
//! (nftables) version of these checks runs in `crates/firewall`'s
//! namespace tests.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::UdpSocket;
use umbra_spa::native::{Knock, OpenAddr, seal};
use umbra_spa::{DeviceSecret, derive_gateway_key};

use crate::access::{Rig, eventually};
use crate::support::TestDevice;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

/// A knock as the agent seals it, for `gateway` (its name).
pub fn knock_for(
    rig: &Rig,
    device: &TestDevice,
    gateway: &str,
    services: &[&str],
    open: OpenAddr,
    at: u64,
) -> Vec<u8> {
    let secret = DeviceSecret::from_base64(&device.spa_secret).expect("secret");
    let td = rig.tc.controller.ca.trust_domain();
    let key = derive_gateway_key(&secret, &format!("spiffe://{td}/gateway/{gateway}"));
    let id = uuid::Uuid::parse_str(&device.id).expect("uuid");
    let services = services.iter().map(|s| (*s).to_owned()).collect();
    seal(&key, &Knock::new(id, services, open, at)).expect("seal")
}

/// Sends `packet` from `from` to the gateway's SPA port and checks that
/// nothing at all comes back.
async fn send_from(rig: &Rig, from: &str, packet: &[u8]) {
    let socket = UdpSocket::bind((ip(from), 0)).await.expect("bind");
    let to: SocketAddr = (ip("127.0.0.1"), rig.gw.spa_port.expect("dark")).into();
    socket.send_to(packet, to).await.expect("send");
    let mut buf = [0u8; 2048];
    let reply = tokio::time::timeout(Duration::from_millis(150), socket.recv_from(&mut buf)).await;
    assert!(reply.is_err(), "the gateway answered a knock: {reply:?}");
}

/// A fresh client (a new connection) from `from`.
fn client_from(rig: &Rig, from: &str) -> reqwest::Client {
    let d = &rig.device;
    let identity = (
        vec![
            rustls_pki_types::pem::PemObject::from_pem_slice(d.cert_pem.as_bytes()).expect("cert"),
        ],
        rustls_pki_types::pem::PemObject::from_pem_slice(d.key_pem.as_bytes()).expect("key"),
    );
    let tls = umbra_pki::tls::client_config(&rig.tc.ca(), Some(identity)).expect("tls");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .local_address(ip(from))
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

async fn get_with(rig: &Rig, client: &reqwest::Client) -> Result<StatusCode, reqwest::Error> {
    client
        .get(format!("{}/", rig.gw_url))
        .header("host", "demo")
        .bearer_auth(&rig.token)
        .send()
        .await
        .map(|r| r.status())
}

async fn get_from(rig: &Rig, from: &str) -> Result<StatusCode, reqwest::Error> {
    get_with(rig, &client_from(rig, from)).await
}

async fn refused_from(rig: &Rig, from: &str, why: &str) {
    let r = get_from(rig, from).await;
    assert!(
        r.is_err(),
        "{why}: a connection from {from} got through: {r:?}"
    );
}

async fn opened_for(rig: &Rig, from: &str) {
    let mut ok = false;
    for _ in 0..50 {
        if matches!(get_from(rig, from).await, Ok(StatusCode::OK)) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the knock from {from} opened nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dark_gateway_opens_for_a_valid_knock_only_and_only_to_the_knocking_address() {
    let rig = Rig::start_dark(30).await;
    let port = rig.gw.spa_port.expect("dark");
    let listed: Vec<&Value> = rig.login["services"]
        .as_array()
        .expect("services")
        .iter()
        .collect();
    assert!(
        listed
            .iter()
            .all(|s| s["spa_port"] == port && s["gateway"] == "gw1"),
        "the login tells the agent where to knock: {listed:?}"
    );
    refused_from(&rig, "127.0.0.2", "before any knock").await;

    let d = &rig.device;
    let good = knock_for(&rig, d, "gw1", &["demo"], OpenAddr::Source, unix_now());
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let random: Vec<u8> = (0..8)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .collect();
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("truncated", good[..good.len() - 5].to_vec()),
        ("tampered", tampered),
        (
            "a knock for another gateway",
            knock_for(&rig, d, "gw2", &["demo"], OpenAddr::Source, unix_now()),
        ),
        (
            "stale",
            knock_for(
                &rig,
                d,
                "gw1",
                &["demo"],
                OpenAddr::Source,
                unix_now() - 600,
            ),
        ),
        (
            "from the future",
            knock_for(
                &rig,
                d,
                "gw1",
                &["demo"],
                OpenAddr::Source,
                unix_now() + 600,
            ),
        ),
        (
            "a service not granted",
            knock_for(&rig, d, "gw1", &["secret"], OpenAddr::Source, unix_now()),
        ),
        (
            "a service not here",
            knock_for(&rig, d, "gw1", &["elsewhere"], OpenAddr::Source, unix_now()),
        ),
        (
            "for another address",
            knock_for(
                &rig,
                d,
                "gw1",
                &["demo"],
                OpenAddr::Addr(ip("127.0.0.9")),
                unix_now(),
            ),
        ),
    ];
    for (what, packet) in &attacks {
        send_from(&rig, "127.0.0.2", packet).await;
        refused_from(&rig, "127.0.0.2", what).await;
        refused_from(&rig, "127.0.0.9", what).await;
    }

    send_from(&rig, "127.0.0.2", &good).await;
    opened_for(&rig, "127.0.0.2").await;
    refused_from(&rig, "127.0.0.3", "another address after a knock").await;
    // The same packet again, from elsewhere: a replay opens nothing.
    send_from(&rig, "127.0.0.3", &good).await;
    refused_from(&rig, "127.0.0.3", "a replayed knock").await;

    // Refused knocks are recorded without waiting (summed up per source
    // and reason): wait for the last one, the replay, to be uploaded.
    let mut knocks = Vec::new();
    for _ in 0..100 {
        knocks = rig.tc.audit("spa.knock").await;
        if knocks.iter().any(|r| r["reason"] == "replay") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reasons: Vec<&str> = knocks.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(
        knocks.iter().any(|r| r["outcome"] == "allow"
            && r["actor"] == "user:alice"
            && r["source_ip"] == "127.0.0.2"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.ends_with("may reach demo"))),
        "{knocks:?}"
    );
    // Stamped before the gateway started: refused as such, whatever the
    // window (replays survive restarts that way).
    for reason in [
        "no_requested_service_granted_here",
        "address_mismatch",
        "replay",
        "before_startup",
        "future",
        "bad_mac",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "no {reason} in {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinhole_expires_but_the_connection_it_let_in_lives_on() {
    let rig = Rig::start_dark(1).await;
    send_from(
        &rig,
        "127.0.0.4",
        &knock_for(
            &rig,
            &rig.device,
            "gw1",
            &["demo"],
            OpenAddr::Source,
            unix_now(),
        ),
    )
    .await;
    opened_for(&rig, "127.0.0.4").await;
    let kept = client_from(&rig, "127.0.0.4");
    assert_eq!(
        get_with(&rig, &kept).await.expect("in time"),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refused_from(&rig, "127.0.0.4", "after the pinhole expired").await;
    assert_eq!(
        get_with(&rig, &kept)
            .await
            .expect("the established connection lives on"),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn suspending_the_user_closes_the_pinholes_their_knocks_opened() {
    let rig = Rig::start_dark(30).await;
    let packet = knock_for(
        &rig,
        &rig.device,
        "gw1",
        &["demo"],
        OpenAddr::Source,
        unix_now(),
    );
    send_from(&rig, "127.0.0.6", &packet).await;
    opened_for(&rig, "127.0.0.6").await;
    let pinholes = rig.gw.pinholes.clone().expect("a dark gateway");
    let open_from =
        |list: &[umbra_firewall::OpenPinhole]| list.iter().any(|p| p.key.source == ip("127.0.0.6"));
    assert!(open_from(&pinholes.list().await.expect("list")));

    rig.tc
        .admin_post("/api/v1/admin/users/alice/suspend", serde_json::json!({}))
        .await;
    // Well before its 30 s would run out.
    let mut closed = false;
    for _ in 0..100 {
        if !open_from(&pinholes.list().await.expect("list")) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the pinhole outlived the suspension");
    refused_from(&rig, "127.0.0.6", "a suspended user's pinhole").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_device_knocks_in_vain() {
    let rig = Rig::start_dark(30).await;
    let packet = knock_for(
        &rig,
        &rig.device,
        "gw1",
        &["demo"],
        OpenAddr::Source,
        unix_now(),
    );
    rig.tc
        .admin_post(
            &format!("/api/v1/admin/devices/{}/revoke", rig.device.id),
            serde_json::json!({}),
        )
        .await;
    let gw = rig.gw.clone();
    let id = uuid::Uuid::parse_str(&rig.device.id).expect("uuid");
    eventually(
        "the gateway forgets the device",
        Duration::from_secs(5),
        || !gw.view.read().spa.contains_key(&id),
    )
    .await;
    send_from(&rig, "127.0.0.5", &packet).await;
    refused_from(&rig, "127.0.0.5", "a revoked device's knock").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_knocks_by_itself_before_opening_a_tunnel() {
    let rig = Rig::start_dark(30).await;
    let (_tmp, dir) = rig.agent_dir(&rig.device);
    let access = umbra_agent::connect::service_access(&dir, "echo").expect("echo");
    assert!(access.spa_port.is_some());
    let mut stream = umbra_agent::tunnel::open(&dir, &access)
        .await
        .expect("tunnel through a dark gateway");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"knock knock").await.expect("write");
    let mut back = [0u8; 11];
    stream.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"knock knock");
}

/// A dark gateway taking fwknop knocks with fresh keys: the rig, the keys
/// (base64) and the directory of its `access.conf`.
async fn fwknop_rig() -> (Rig, String, String, tempfile::TempDir) {
    use base64::Engine as _;
    let b64 = |n: usize| {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let (key, hmac) = (b64(2), b64(4));
    let conf = tempfile::tempdir().expect("tempdir");
    let access = conf.path().join("access.conf");
    std::fs::write(
        &access,
        format!("SOURCE ANY\nKEY_BASE64 {key}\nHMAC_KEY_BASE64 {hmac}\nFW_ACCESS_TIMEOUT 30\n"),
    )
    .expect("access.conf");
    let rig = Rig::start_dark_with(umbra_gateway::spa_config::RawSpa {
        listen: Some("127.0.0.1:0".into()),
        fwknop_access_file: Some(access),
        ..Default::default()
    })
    .await;
    (rig, key, hmac, conf)
}

/// Waits (bounded) for an allowed `spa.knock` record of an fwknop knock.
async fn fwknop_allowed(rig: &Rig) {
    let mut allowed = Vec::new();
    for _ in 0..100 {
        allowed = rig
            .tc
            .audit("spa.knock")
            .await
            .into_iter()
            .filter(|r| r["outcome"] == "allow")
            .collect();
        if !allowed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        allowed.iter().any(|r| r["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("fwknop:"))
            && r["reason"] == "fwknop stanza 1"),
        "{allowed:?}"
    );
}

/// The stock `fwknop` client (Debian's fwknop-client 2.6.10) opens a dark
/// gateway through its fwknop-compatible mode.
#[tokio::test(flavor = "multi_thread")]
async fn the_stock_fwknop_client_opens_a_dark_gateway() {
    if std::process::Command::new("fwknop")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the stock fwknop client is needed (apt-get install fwknop-client)"
        );
        eprintln!("SKIPPED: no fwknop client (apt-get install fwknop-client)");
        return;
    }
    let (rig, key, hmac, conf) = fwknop_rig().await;
    refused_from(&rig, "127.0.0.1", "before the fwknop knock").await;
    let gw_port = rig.gw_url.rsplit(':').next().expect("port").to_owned();
    let rc = conf.path().join("fwknoprc");
    std::fs::write(&rc, "").expect("rc");
    let out = std::process::Command::new("fwknop")
        .args(["--rc-file", &rc.to_string_lossy(), "--no-save-args"])
        .args([
            "-A",
            &format!("tcp/{gw_port}"),
            "-a",
            "127.0.0.1",
            "-D",
            "127.0.0.1",
        ])
        .args(["--server-port", &rig.gw.spa_port.expect("dark").to_string()])
        .args([
            "--use-hmac",
            "--key-base64-rijndael",
            &key,
            "--key-base64-hmac",
            &hmac,
        ])
        .env("HOME", conf.path())
        .output()
        .expect("fwknop");
    assert!(
        out.status.success(),
        "fwknop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    opened_for(&rig, "127.0.0.1").await;
    refused_from(&rig, "127.0.0.7", "another address").await;
    fwknop_allowed(&rig).await;
}

/// `umbra agent knock --fwknop` speaks the same format; a wrong HMAC key
/// opens nothing.
#[tokio::test(flavor = "multi_thread")]
async fn umbra_agent_knock_speaks_fwknop_too() {
    let (rig, key, hmac, _conf) = fwknop_rig().await;
    let gw_port = rig.gw_url.rsplit(':').next().expect("port").to_owned();
    let spa = rig.gw.spa_port.expect("dark").to_string();
    let knock = |hmac: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_umbra"))
            .args(["agent", "knock", "--fwknop", "--destination", "127.0.0.1"])
            .args(["--server-port", &spa, "--access", &format!("tcp/{gw_port}")])
            .args(["--key-base64", &key, "--hmac-key-base64", hmac])
            .output()
            .expect("umbra agent knock")
    };
    let wrong = knock("c2VjcmV0IGJ1dCB3cm9uZyBzZWNyZXQgYnV0IHdyb25n");
    assert!(
        wrong.status.success(),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    refused_from(&rig, "127.0.0.1", "a knock with the wrong HMAC key").await;
    let out = knock(&hmac);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    opened_for(&rig, "127.0.0.1").await;
    fwknop_allowed(&rig).await;
}
