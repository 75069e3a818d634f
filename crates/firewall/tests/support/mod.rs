//! A two-namespace lab for the nftables tests: a "server" namespace whose
//! firewall is under test and a "client" namespace, joined by a veth pair,
//! private addresses only:
//!
//! ```text
//! server  10.200.0.1/24  fd00:200::1/64  ── veth ──  client  10.200.0.2, .3  fd00:200::2, ::3
//! ```
//!
//! Names are unique per test (pid + counter), tests run one at a time
//! ([`serial`]), and the namespaces are deleted on drop, so a failing test
//! cleans up too. Listening and connecting happen on threads that entered
//! the namespace (`setns`): a socket stays in the namespace it was made in.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

pub const SERVER4: &str = "10.200.0.1";
pub const CLIENT4: &str = "10.200.0.2";
pub const OTHER4: &str = "10.200.0.3";
pub const SERVER6: &str = "fd00:200::1";
pub const CLIENT6: &str = "fd00:200::2";
pub const OTHER6: &str = "fd00:200::3";
/// Short enough to keep the suite fast, long enough for a veth round trip.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Holds the suite to one test at a time (an async lock: it is held
/// across awaits, and a failed test does not poison it).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct Lab {
    pub server: String,
    pub client: String,
}

/// What a connection attempt ran into.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    Connected,
    /// No answer at all: the port is hidden (dropped).
    Filtered,
    /// Anything else (refused, unreachable).
    Other(String),
}

impl Lab {
    /// Builds the lab, or returns None (after saying why) where the host
    /// cannot; with `CI=true` that is a failure instead.
    pub fn new() -> Option<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("umbra-fw-{}-{n}", std::process::id());
        let lab = Self {
            server: format!("{base}-s"),
            client: format!("{base}-c"),
        };
        match lab.build() {
            Ok(()) => Some(lab),
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!(
                    "nftables namespace test cannot run (CI=true needs root, iproute2 and nftables): {why}"
                )
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED: nftables namespace test needs root, iproute2 and nftables: {why}"
                );
                None
            }
        }
    }

    fn build(&self) -> Result<(), String> {
        sh(&["nft", "--version"])?;
        let (s, c) = (self.server.as_str(), self.client.as_str());
        sh(&["ip", "netns", "add", s])?;
        sh(&["ip", "netns", "add", c])?;
        sh(&[
            "ip", "-n", s, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            "netns", c,
        ])?;
        for (ns, dev, addrs) in [
            (s, "veth0", [&["10.200.0.1/24"][..], &["fd00:200::1/64"]]),
            (
                c,
                "veth1",
                [
                    &["10.200.0.2/24", "10.200.0.3/24"][..],
                    &["fd00:200::2/64", "fd00:200::3/64"],
                ],
            ),
        ] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            for a in addrs[0] {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev])?;
            }
            // nodad: usable at once instead of after duplicate detection.
            for a in addrs[1] {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad"])?;
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        // Fail here, not in the test, if nft cannot work in the namespace.
        sh(&["ip", "netns", "exec", s, "nft", "list", "ruleset"]).map(drop)
    }

    /// The nft command prefix for the server namespace.
    pub fn nft_command(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.server, "nft"]
            .map(String::from)
            .to_vec()
    }

    /// Runs `nft ARGS` in the server namespace.
    pub fn nft(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["ip", "netns", "exec", &self.server, "nft"];
        argv.extend_from_slice(args);
        sh(&argv)
    }

    /// Starts an echo server on `[::]:port` (IPv4 too) in the server namespace.
    pub fn listen(&self, port: u16) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, flag) = (self.server.clone(), Arc::clone(&stop));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let listener = TcpListener::bind(("::", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => drop(std::thread::spawn(move || echo(stream))),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Listener {
            stop,
            thread: Some(thread),
        }
    }

    /// Starts a UDP echo server on `[::]:port` in the server namespace.
    pub fn udp_echo(&self, port: u16) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, flag) = (self.server.clone(), Arc::clone(&stop));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let socket = UdpSocket::bind(("::", port)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Listener {
            stop,
            thread: Some(thread),
        }
    }

    /// Whether a datagram from `from` to `to:port` gets its echo back.
    pub fn udp_answered(&self, from: &str, to: &str, port: u16) -> bool {
        let ns = self.client.clone();
        let (from, to) = (ip(from), SocketAddr::new(ip(to), port));
        std::thread::spawn(move || {
            enter(&ns);
            let socket = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
            socket.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
            socket.send_to(b"knock-knock", to).unwrap();
            let mut buf = [0u8; 64];
            socket
                .recv_from(&mut buf)
                .is_ok_and(|(n, _)| &buf[..n] == b"knock-knock")
        })
        .join()
        .unwrap()
    }

    /// Connects from `from` (a client address) to `to:port`.
    pub fn connect(&self, from: &str, to: &str, port: u16) -> Result<TcpStream, Probe> {
        let ns = self.client.clone();
        let (from, to) = (ip(from), SocketAddr::new(ip(to), port));
        std::thread::spawn(move || {
            enter(&ns);
            let domain = socket2::Domain::for_address(to);
            let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
            match socket.connect_timeout(&to.into(), CONNECT_TIMEOUT) {
                Ok(()) => Ok(socket.into()),
                Err(e) if e.kind() == ErrorKind::TimedOut => Err(Probe::Filtered),
                Err(e) => Err(Probe::Other(e.to_string())),
            }
        })
        .join()
        .unwrap()
    }

    pub fn probe(&self, from: &str, to: &str, port: u16) -> Probe {
        match self.connect(from, to, port) {
            Ok(_) => Probe::Connected,
            Err(p) => p,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            if let Err(e) = sh(&["ip", "netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn enter(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    setns(file, CloneFlags::CLONE_NEWNET).unwrap();
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Sends `msg` on an established connection and reads the echo back.
pub fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(msg)?;
    let mut buf = vec![0u8; msg.len()];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
