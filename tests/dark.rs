//! A dark gateway seen from other hosts: network namespaces this test
//! creates, the kernel's nftables, `nmap`, `tcpdump` and the `umbra agent`
//! binary, private addresses only.
//!
//! ```text
//!   client A  10.201.1.2 ── veth ── 10.201.1.1  server S  10.201.2.1 ── veth ── 10.201.2.2  client B
//! ```
//!
//! The controller, the gateway (nftables backend, its own table) and the
//! demo services run in this process, on threads that entered S before they
//! were made (a thread inherits its creator's namespace), so every socket
//! and every `nft` they use is in S. What A and B do runs as processes in
//! A and B. Namespaces are deleted on drop, even when the test fails;
//! every wait is bounded.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use umbra_spa::native::OpenAddr;

use crate::access::{Dark, Rig};
use crate::spa::{knock_for, unix_now};

const GW_IP: &str = "10.201.1.1";
/// A knock from A asking to open B's address is refused.
const B_IP: &str = "10.201.2.2";

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// One namespace test at a time (they are few, and nmap is slow).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Lab {
    s: String,
    a: String,
    b: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.s, &self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

fn ok(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lab, or `None` (after saying why) where it cannot be made and CI
/// does not insist.
fn lab() -> Option<Lab> {
    let missing: Vec<&str> = ["ip", "nft", "nmap", "tcpdump", "python3"]
        .into_iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    let root = nix::unistd::geteuid().is_root();
    if !root || !missing.is_empty() {
        let why = format!(
            "needs root ({root}) and {missing:?} (apt-get install nftables iproute2 nmap tcpdump)"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", std::process::id());
    let lab = Lab {
        s: format!("umbra-dark-s-{id}"),
        a: format!("umbra-dark-a-{id}"),
        b: format!("umbra-dark-b-{id}"),
    };
    for ns in [&lab.s, &lab.a, &lab.b] {
        ok(&["ip", "netns", "add", ns]);
        ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    for (client, near, far, side) in [
        (&lab.a, "10.201.1.2/24", "10.201.1.1/24", "to-a"),
        (&lab.b, "10.201.2.2/24", "10.201.2.1/24", "to-b"),
    ] {
        ok(&[
            "ip", "link", "add", side, "netns", &lab.s, "type", "veth", "peer", "name", "to-s",
            "netns", client,
        ]);
        ok(&["ip", "-n", &lab.s, "addr", "add", far, "dev", side]);
        ok(&["ip", "-n", &lab.s, "link", "set", side, "up"]);
        ok(&["ip", "-n", client, "addr", "add", near, "dev", "to-s"]);
        ok(&["ip", "-n", client, "link", "set", "to-s", "up"]);
        let gw = far.split('/').next().unwrap_or_default();
        ok(&["ip", "-n", client, "route", "add", "default", "via", gw]);
    }
    Some(lab)
}

/// What nmap from `ns` says of `port` at the gateway: `open`, `filtered`, …
fn nmap(ns: &str, port: u16) -> String {
    let out = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "nmap",
        "-Pn",
        "-n",
        "-p",
        &port.to_string(),
        "--max-retries",
        "1",
        "--host-timeout",
        "10s",
        "-oG",
        "-",
        GW_IP,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("Ports: ")
        .nth(1)
        .and_then(|p| p.split('/').nth(1))
        .unwrap_or("unknown")
        .to_owned()
}

/// Sends `packet` as one UDP datagram from namespace `ns`.
fn send_from(ns: &str, packet: &[u8], port: u16) {
    ok(&[
        "ip",
        "netns",
        "exec",
        ns,
        "python3",
        "-c",
        "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], int(sys.argv[3])))",
        &packet
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        GW_IP,
        &port.to_string(),
    ]);
}

/// Waits (bounded) until nmap from `ns` sees `want`.
fn eventually_nmap(ns: &str, port: u16, want: &str) {
    let start = Instant::now();
    loop {
        let state = nmap(ns, port);
        if state == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nmap from {ns}: {state}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `scenario(a, b)` on a runtime whose threads are in S; the lab is
/// gone afterwards, whatever happened.
fn in_lab<F, Fut>(scenario: F)
where
    F: FnOnce(String, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.blocking_lock();
    let Some(lab) = lab() else { return };
    let netns = std::fs::File::open(format!("/run/netns/{}", lab.s)).expect("netns file");
    let (a, b) = (lab.a.clone(), lab.b.clone());
    let body = std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenario(a, b));
    });
    let result = body.join();
    drop(lab);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_dark_gateway_is_filtered_to_nmap_until_a_knock_opens_it_for_that_host_alone() {
    in_lab(|a, b| async move { scenario(&a, &b).await });
}

async fn scenario(a: &str, b: &str) {
    let rig = Rig::start_dark_custom(Dark {
        spa: umbra_gateway::spa_config::RawSpa {
            listen: Some(format!("{GW_IP}:0")),
            pinhole_seconds: Some(4),
            ..Default::default()
        },
        firewall: umbra_firewall::FirewallConfig::default(),
        gateway_ip: Some(GW_IP.to_owned()),
    })
    .await;
    let port: u16 = rig
        .gw_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let spa = rig.gw.spa_port.expect("dark");
    let (a, b) = (a.to_owned(), b.to_owned());
    let (_agent_tmp, agent) = rig.agent_dir(&rig.device);
    let agent_path = agent.path.clone();
    let d = &rig.device;
    let attacks = {
        let good = knock_for(&rig, d, "gw1", &["demo"], OpenAddr::Source, unix_now());
        let mut tampered = good.clone();
        tampered[40] ^= 0x80;
        vec![
            b"not a knock at all".to_vec(),
            good[..good.len() - 1].to_vec(),
            tampered,
            knock_for(&rig, d, "gw2", &["demo"], OpenAddr::Source, unix_now()),
            knock_for(
                &rig,
                d,
                "gw1",
                &["demo"],
                OpenAddr::Source,
                unix_now() - 3600,
            ),
            knock_for(
                &rig,
                d,
                "gw1",
                &["demo"],
                OpenAddr::Addr(B_IP.parse().expect("ip")),
                unix_now(),
            ),
        ]
    };
    let replayed = knock_for(&rig, d, "gw1", &["demo"], OpenAddr::Source, unix_now());
    let from_b: Vec<Vec<u8>> = (0..10)
        .map(|_| knock_for(&rig, d, "gw1", &["demo"], OpenAddr::Source, unix_now()))
        .collect();
    let (a2, b2) = (a.clone(), b.clone());
    tokio::task::spawn_blocking(move || {
        let (a, b) = (a2, b2);
        assert_eq!(nmap(&a, port), "filtered", "before any knock");
        assert_eq!(nmap(&b, port), "filtered", "before any knock");

        // Everything below from A gets no answer of any kind: a capture
        // in A of what S sends it, TCP aside (nmap's probes), stays empty.
        let pcap = std::env::temp_dir().join(format!("umbra-dark-{}.pcap", std::process::id()));
        let mut capture = Command::new("ip")
            .args(["netns", "exec", &a, "tcpdump", "-i", "to-s", "-n", "-U", "-w"])
            .arg(&pcap)
            .args(["src", "host", GW_IP, "and", "not", "tcp", "and", "not", "arp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump");
        std::thread::sleep(Duration::from_millis(800));
        for packet in &attacks {
            send_from(&a, packet, spa);
        }
        assert_eq!(nmap(&a, port), "filtered", "after bad knocks");

        // The agent, as a user runs it, in A.
        let out = run(&[
            "ip", "netns", "exec", &a, env!("CARGO_BIN_EXE_umbra"), "agent", "--dir",
            &agent_path.to_string_lossy(), "knock", "demo",
        ]);
        assert!(out.status.success(), "umbra agent knock: {}", String::from_utf8_lossy(&out.stderr));
        let knocked = Instant::now();
        eventually_nmap(&a, port, "open");
        assert_eq!(nmap(&b, port), "filtered", "opened for A only");

        // A connection made through the pinhole outlives it.
        let held = Command::new("ip")
            .args(["netns", "exec", &a, "python3", "-c",
                "import socket,sys,time\ns=socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)\nprint('connected', flush=True)\ntime.sleep(float(sys.argv[3]))\ns.settimeout(3)\ns.sendall(b'\\x16\\x03\\x01\\x00\\x05hello')\ntry:\n    d = s.recv(100)\n    print('answered', len(d), flush=True)\nexcept socket.timeout:\n    print('silent', flush=True)\n"])
            .args([GW_IP, &port.to_string(), "6"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");

        // A replay from B of a packet A used opens nothing for B.
        send_from(&a, &replayed, spa);
        send_from(&b, &replayed, spa);
        assert_eq!(nmap(&b, port), "filtered", "a replayed knock");

        // A flood of garbage from B does not stop B's own valid knock.
        let flood = Command::new("ip")
            .args(["netns", "exec", &b, "python3", "-c",
                "import os,socket,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(30000):\n    s.sendto(os.urandom(60 + i % 500), (sys.argv[1], int(sys.argv[2])))\n"])
            .args([GW_IP, &spa.to_string()])
            .spawn()
            .expect("flood");
        // UDP promises nothing under a flood: the kernel may drop a knock
        // before the gateway reads it, and on a slow machine the 4 s
        // pinhole may close before nmap gets a turn. So B knocks again,
        // afresh, until nmap sees the port open, as a client would.
        let start = Instant::now();
        for knock in from_b.iter().cycle() {
            send_from(&b, knock, spa);
            let state = nmap(&b, port);
            if state == "open" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "nmap from {b} during a flood: {state}, not open");
        }
        let _ = flood.wait_with_output();

        // The pinhole expires on time (4 s); the held connection lives on.
        let left = Duration::from_secs(5).saturating_sub(knocked.elapsed());
        std::thread::sleep(left);
        eventually_nmap(&a, port, "filtered");
        let out = held.wait_with_output().expect("held");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("connected") && said.contains("answered"), "held connection: {said}");

        let _ = Command::new("kill").args(["-INT", &capture.id().to_string()]).status();
        let _ = capture.wait();
        let read = run(&["tcpdump", "-r", &pcap.to_string_lossy(), "-n"]);
        let replies = String::from_utf8_lossy(&read.stdout).lines().count();
        let _ = std::fs::remove_file(&pcap);
        assert_eq!(replies, 0, "the gateway answered a knock: {}", String::from_utf8_lossy(&read.stdout));
        let _ = capture.kill();
    })
    .await
    .expect("scenario");
}

/// Runs the stock `fwknop` client in `ns` with `args` after the common ones.
fn fwknop_from(ns: &str, home: &std::path::Path, spa: u16, key: &str, hmac: &str, args: &[&str]) {
    let rc = home.join("fwknoprc");
    std::fs::write(&rc, "").expect("rc");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "fwknop", "--rc-file"])
        .arg(&rc)
        .args([
            "--no-save-args",
            "-D",
            GW_IP,
            "--server-port",
            &spa.to_string(),
        ])
        .args([
            "--use-hmac",
            "--key-base64-rijndael",
            key,
            "--key-base64-hmac",
            hmac,
        ])
        .args(args)
        .env("HOME", home)
        .output()
        .expect("fwknop");
    assert!(
        out.status.success(),
        "fwknop {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stock fwknop client, in a client namespace, opens a port the
/// gateway keeps dark in the kernel (nftables): that port alone, for that
/// host alone; a wrong HMAC key and a request to open another host's
/// address open nothing.
#[test]
fn the_stock_fwknop_client_opens_an_nftables_pinhole_from_another_host() {
    if Command::new("fwknop").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the stock fwknop client is needed (apt-get install fwknop-client)"
        );
        eprintln!("SKIPPED: no fwknop client (apt-get install fwknop-client)");
        return;
    }
    in_lab(|a, b| async move { fwknop_scenario(&a, &b).await });
}

async fn fwknop_scenario(a: &str, b: &str) {
    use base64::Engine as _;
    // A service of the host, not proxied: fwknop's classic use (SSH).
    let service = tokio::net::TcpListener::bind((GW_IP, 0))
        .await
        .expect("bind");
    let svc_port = service.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = service.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = conn.write_all(b"SSH-2.0-umbra-test\r\n").await;
        }
    });
    let b64 = |n: usize| {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let (key, hmac, wrong_hmac) = (b64(2), b64(4), b64(4));
    let home = tempfile::tempdir().expect("tempdir");
    let access = home.path().join("access.conf");
    std::fs::write(
        &access,
        format!(
            "SOURCE ANY\nOPEN_PORTS tcp/{svc_port}\nKEY_BASE64 {key}\nHMAC_KEY_BASE64 {hmac}\nFW_ACCESS_TIMEOUT 30\n"
        ),
    )
    .expect("access.conf");
    let rig = Rig::start_dark_custom(Dark {
        spa: umbra_gateway::spa_config::RawSpa {
            listen: Some(format!("{GW_IP}:0")),
            fwknop_access_file: Some(access),
            protect: vec![format!("tcp/{svc_port}")],
            ..Default::default()
        },
        firewall: umbra_firewall::FirewallConfig::default(),
        gateway_ip: Some(GW_IP.to_owned()),
    })
    .await;
    let gw_port: u16 = rig
        .gw_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let spa = rig.gw.spa_port.expect("dark");
    let (a, b) = (a.to_owned(), b.to_owned());
    let home_path = home.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let fwknop = |ns: &str, hmac: &str, args: &[&str]| {
            fwknop_from(ns, &home_path, spa, &key, hmac, args);
        };
        let open = format!("tcp/{svc_port}");
        assert_eq!(nmap(&a, svc_port), "filtered", "before any knock");

        // Attacks first: a wrong HMAC key from B; from A, a request to open
        // B's address (REQUIRE_SOURCE_ADDRESS is on by default).
        fwknop(&b, &wrong_hmac, &["-A", &open, "-a", B_IP]);
        fwknop(&a, &hmac, &["-A", &open, "-a", B_IP]);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            nmap(&b, svc_port),
            "filtered",
            "a wrong key or a misdirected knock"
        );

        // The real thing, from A, for A.
        fwknop(&a, &hmac, &["-A", &open, "-a", "10.201.1.2"]);
        eventually_nmap(&a, svc_port, "open");
        assert_eq!(nmap(&b, svc_port), "filtered", "opened for A only");
        assert_eq!(
            nmap(&a, gw_port),
            "filtered",
            "the stanza opens its port only"
        );
    })
    .await
    .expect("fwknop scenario");
    // Gateways upload their records in batches: wait (bounded) for it.
    let start = Instant::now();
    loop {
        let records = rig.tc.audit("spa.knock").await;
        if records
            .iter()
            .any(|r| r["outcome"] == "deny" && r["source_ip"] == "10.201.1.2")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the misdirected knock is not in the audit trail: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
