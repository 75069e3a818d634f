//! Load generator for `bench/proxy.sh` (see bench/RESULTS.md).
//!
//! Modes:
//! - `load`: N keep-alive HTTP/1.1 connections over mTLS, closed loop (one
//!   request in flight per connection), for a fixed time after a warm-up:
//!   requests/s, latency percentiles, errors by kind.
//! - `connect`: new mTLS connections one at a time: TCP connect, full TLS
//!   handshake (no resumption), one request, time to the first response byte.
//! - `hold`: opens N connections, sends one request on each (so each is
//!   authorized), then keeps them open and idle, reporting how many stay open.
//! - `upstream`: the trivial HTTP upstream every proxy forwards to, and the
//!   trivial auth endpoint of nginx `auth_request` (`/auth`).
//!
//! Machine-readable results are printed as one `RESULT {json}` line.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "mTLS HTTP/1.1 load generator for bench/proxy.sh")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Keep-alive load: requests/s and latency.
    Load(LoadArgs),
    /// New mTLS connection to first response byte, one at a time.
    Connect(ConnectArgs),
    /// Open N authorized connections and hold them idle.
    Hold(HoldArgs),
    /// The trivial upstream (any path: 200) and auth endpoint (/auth: 204).
    Upstream(UpstreamArgs),
    /// Wait until the other processes of the machine are idle.
    Quiet(QuietArgs),
}

#[derive(Args, Clone)]
struct Target {
    /// Proxy address, IP:port.
    #[arg(long)]
    addr: SocketAddr,
    /// TLS server name to verify (a DNS name or an IP address).
    #[arg(long)]
    server_name: String,
    /// PEM file of a CA to trust; repeat for several.
    #[arg(long = "ca", required = true)]
    cas: Vec<String>,
    /// Client certificate (PEM) presented in the handshake.
    #[arg(long)]
    cert: String,
    /// Its private key (PEM, PKCS#8 or SEC1).
    #[arg(long)]
    key: String,
    /// Value of the Host header.
    #[arg(long)]
    host: String,
    /// File holding the session token, sent as `Authorization: Bearer`.
    #[arg(long)]
    token_file: Option<String>,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Key exchange groups offered: `x25519` (only X25519) or `pq`
    /// (X25519MLKEM768 first, then X25519, as the Umbra agent does).
    #[arg(long, default_value = "x25519")]
    kx: String,
    /// Expected response status.
    #[arg(long, default_value_t = 200)]
    expect: u16,
    /// Label in the output.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Warm-up seconds, not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// CPU time to report over the measured window: NAME=PID[,PID...]
    /// (all threads of each process); repeatable.
    #[arg(long = "watch")]
    watch: Vec<String>,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    target: Target,
    /// Measured connections.
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Connections before, not counted.
    #[arg(long, default_value_t = 20)]
    warmup_count: usize,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Spread the connections over this many source addresses
    /// (127.0.1.1, 127.0.1.2, ...), round robin; 0: let the kernel choose
    /// (127.0.0.1).
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// Seconds to hold once every connection is open.
    #[arg(long, default_value_t = 20.0)]
    hold: f64,
}

#[derive(Args)]
struct QuietArgs {
    /// Idle means: all user processes together used less than this many
    /// cores over the window.
    #[arg(long, default_value_t = 0.05)]
    max_cores: f64,
    #[arg(long, default_value_t = 3.0)]
    window: f64,
    /// Give up (with a warning, exit 0) after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
}

#[derive(Args)]
struct UpstreamArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.mode {
            Mode::Load(a) => load(a).await,
            Mode::Connect(a) => connect_mode(a).await,
            Mode::Hold(a) => hold(a).await,
            Mode::Upstream(a) => upstream(a).await,
            Mode::Quiet(a) => quiet(a).await,
        }
    })
}

// ---- TLS ------------------------------------------------------------------

struct Client {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    addr: SocketAddr,
    host: String,
    authorization: Option<String>,
    path: String,
    expect: u16,
}

fn client(t: &Target) -> Result<Client, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in &t.cas {
        for c in CertificateDer::pem_file_iter(ca)? {
            roots.add(c?)?;
        }
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&t.cert)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&t.key)?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    use rustls::crypto::aws_lc_rs::kx_group;
    provider.kx_groups = match t.kx.as_str() {
        "x25519" => vec![kx_group::X25519],
        "pq" => vec![kx_group::X25519MLKEM768, kx_group::X25519],
        other => return Err(format!("--kx {other}: expected x25519 or pq").into()),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    // Every new connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let authorization = match &t.token_file {
        Some(f) => Some(format!("Bearer {}", std::fs::read_to_string(f)?.trim())),
        None => None,
    };
    Ok(Client {
        tls: TlsConnector::from(Arc::new(config)),
        server_name: ServerName::try_from(t.server_name.clone())?,
        addr: t.addr,
        host: t.host.clone(),
        authorization,
        path: t.path.clone(),
        expect: t.expect,
    })
}

impl Client {
    async fn tls_connect(&self, source: Option<IpAddr>) -> Result<TlsStream<TcpStream>, BoxError> {
        let tcp = match source {
            None => TcpStream::connect(self.addr).await?,
            Some(ip) => {
                let s = TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(ip, 0))?;
                s.connect(self.addr).await?
            }
        };
        tcp.set_nodelay(true)?;
        Ok(self.tls.connect(self.server_name.clone(), tcp).await?)
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut b = Request::get(self.path.as_str()).header("host", self.host.as_str());
        if let Some(a) = &self.authorization {
            b = b.header("authorization", a.as_str());
        }
        b.body(Empty::new()).expect("valid request")
    }

    /// The same request as raw bytes, with `Connection: close`.
    fn raw_request(&self) -> Vec<u8> {
        let mut s = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.host);
        if let Some(a) = &self.authorization {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        s.push_str("Connection: close\r\n\r\n");
        s.into_bytes()
    }
}

fn tls_info(s: &TlsStream<TcpStream>) -> serde_json::Value {
    let c = s.get_ref().1;
    json!({
        "version": c.protocol_version().map(|v| format!("{v:?}")),
        "cipher": c.negotiated_cipher_suite().map(|v| format!("{:?}", v.suite())),
        "kx": c.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())),
        "alpn": c.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
    })
}

// ---- statistics -----------------------------------------------------------

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    f64::from(sorted[rank.min(sorted.len()) - 1]) / 1000.0
}

fn summary(mut v: Vec<u32>) -> serde_json::Value {
    v.sort_unstable();
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 / 1000.0
    };
    json!({
        "n": v.len(),
        "p50": pct(&v, 50.0), "p90": pct(&v, 90.0), "p99": pct(&v, 99.0),
        "p999": pct(&v, 99.9), "max": pct(&v, 100.0), "mean": mean,
    })
}

fn ms(v: &serde_json::Value, k: &str) -> String {
    v[k].as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

fn line(name: &str, v: &serde_json::Value) -> String {
    format!(
        "{name:<22} n={:<7} p50={:>8} p90={:>8} p99={:>8} p99.9={:>8} max={:>8} mean={:>8} ms",
        v["n"],
        ms(v, "p50"),
        ms(v, "p90"),
        ms(v, "p99"),
        ms(v, "p999"),
        ms(v, "max"),
        ms(v, "mean")
    )
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds of every user-space process (kernel threads left out), by pid.
fn all_processes_cpu() -> std::collections::HashMap<u32, (f64, String)> {
    let mut m = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return m;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let flags: u64 = f.get(6).and_then(|x| x.parse().ok()).unwrap_or(0);
        if flags & 0x0020_0000 != 0 {
            continue; // PF_KTHREAD
        }
        let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        m.insert(pid, ((t(11) + t(12)) / 100.0, comm));
    }
    m
}

/// CPU used between two scans by processes other than `exclude`, and the
/// three busiest of them.
fn others_cpu(
    before: &std::collections::HashMap<u32, (f64, String)>,
    after: &std::collections::HashMap<u32, (f64, String)>,
    exclude: &[u32],
) -> (f64, Vec<(String, f64)>) {
    let mut list: Vec<(String, f64)> = after
        .iter()
        .filter(|(pid, _)| !exclude.contains(pid))
        .map(|(pid, (cpu, comm))| {
            let d = cpu - before.get(pid).map_or(0.0, |b| b.0);
            (format!("{comm}[{pid}]"), d.max(0.0))
        })
        .filter(|(_, d)| *d > 0.0)
        .collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total = list.iter().map(|x| x.1).sum();
    list.truncate(3);
    (total, list)
}

async fn quiet(a: QuietArgs) -> Result<(), BoxError> {
    let start = Instant::now();
    loop {
        let before = all_processes_cpu();
        tokio::time::sleep(Duration::from_secs_f64(a.window)).await;
        let after = all_processes_cpu();
        let (cpu, top) = others_cpu(&before, &after, &[std::process::id()]);
        let cores = cpu / a.window;
        if cores < a.max_cores {
            println!(
                "quiet after {:.0} s: other processes {cores:.3} cores",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed().as_secs_f64() > a.timeout {
            println!(
                "WARNING: not quiet after {:.0} s: other processes {cores:.2} cores (busiest: {top:?}); going on",
                a.timeout
            );
            return Ok(());
        }
    }
}

/// (busy, total) jiffies of the whole machine.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    let steal = *v.get(7)?;
    Some((total - idle - steal, total))
}

struct Watch {
    groups: Vec<(String, Vec<u32>)>,
}

impl Watch {
    fn parse(specs: &[String]) -> Result<Self, BoxError> {
        let mut groups = Vec::new();
        for s in specs {
            let (name, pids) = s.split_once('=').ok_or("--watch NAME=PID[,PID...]")?;
            let pids = pids
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()?;
            groups.push((name.to_owned(), pids));
        }
        groups.push(("loadgen".into(), vec![std::process::id()]));
        Ok(Self { groups })
    }

    fn sample(&self) -> Vec<f64> {
        self.groups
            .iter()
            .map(|(_, pids)| pids.iter().filter_map(|&p| cpu_seconds(p)).sum())
            .collect()
    }
}

// ---- load -----------------------------------------------------------------

#[derive(Default)]
struct ConnStats {
    latencies_us: Vec<u32>,
    ok: u64,
    bad_status: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    connects: u64,
}

fn err_kind(e: &(dyn std::error::Error + 'static)) -> String {
    let s = e.to_string();
    s.chars().take(80).collect()
}

async fn load(a: LoadArgs) -> Result<(), BoxError> {
    let c = Arc::new(client(&a.target)?);
    let watch = Watch::parse(&a.watch)?;
    // The TLS parameters, from one extra connection.
    let probe = c.tls_connect(None).await?;
    let tls = tls_info(&probe);
    drop(probe);

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let deadline = measure_from + Duration::from_secs_f64(a.duration);
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = ConnStats::default();
            'conn: while Instant::now() < deadline {
                let tls = match c.tls_connect(None).await {
                    Ok(s) => s,
                    Err(e) => {
                        if Instant::now() >= measure_from {
                            *st.errors.entry(format!("connect: {}", err_kind(&*e))).or_default() += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                st.connects += 1;
                let (mut send, conn) =
                    match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            *st.errors.entry(format!("http: {}", err_kind(&e))).or_default() += 1;
                            continue;
                        }
                    };
                let driver = tokio::spawn(conn);
                loop {
                    let t0 = Instant::now();
                    if t0 >= deadline {
                        break 'conn;
                    }
                    let result = async {
                        send.ready().await?;
                        let resp = send.send_request(c.request()).await?;
                        let status = resp.status().as_u16();
                        resp.into_body().collect().await?;
                        Ok::<u16, hyper::Error>(status)
                    }
                    .await;
                    let t1 = Instant::now();
                    let counted = t0 >= measure_from && t1 <= deadline;
                    match result {
                        Ok(s) if s == c.expect => {
                            if counted {
                                st.ok += 1;
                                st.latencies_us
                                    .push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
                            }
                        }
                        Ok(s) => {
                            if counted {
                                *st.bad_status.entry(s).or_default() += 1;
                            }
                        }
                        Err(e) => {
                            if counted {
                                *st.errors.entry(format!("request: {}", err_kind(&e))).or_default() +=
                                    1;
                            }
                            driver.abort();
                            continue 'conn;
                        }
                    }
                }
            }
            st
        }));
    }
    // CPU over the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let (cpu0, m0, all0) = (watch.sample(), machine_jiffies(), all_processes_cpu());
    tokio::time::sleep_until(deadline.into()).await;
    let (cpu1, m1, all1) = (watch.sample(), machine_jiffies(), all_processes_cpu());
    let watched: Vec<u32> = watch.groups.iter().flat_map(|g| g.1.iter().copied()).collect();
    let (others, others_top) = others_cpu(&all0, &all1, &watched);
    let others = others / a.duration;

    let mut all = ConnStats::default();
    for t in tasks {
        let st = t.await?;
        all.latencies_us.extend(st.latencies_us);
        all.ok += st.ok;
        all.connects += st.connects;
        for (k, v) in st.bad_status {
            *all.bad_status.entry(k).or_default() += v;
        }
        for (k, v) in st.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    let errors: u64 = all.bad_status.values().sum::<u64>() + all.errors.values().sum::<u64>();
    let rps = all.ok as f64 / a.duration;
    let lat = summary(std::mem::take(&mut all.latencies_us));
    let mut cpu = serde_json::Map::new();
    for (i, (name, _)) in watch.groups.iter().enumerate() {
        cpu.insert(name.clone(), json!((cpu1[i] - cpu0[i]) / a.duration));
    }
    let machine_busy = match (m0, m1) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            json!((b1 - b0) as f64 / (t1 - t0) as f64)
        }
        _ => serde_json::Value::Null,
    };
    println!(
        "load {}: {} connections, {:.0} s warm-up + {:.0} s measured, {} {}",
        a.target.label, a.connections, a.warmup, a.duration, a.target.addr, tls
    );
    println!("requests ok            {} ({rps:.1}/s)", all.ok);
    println!("{}", line("latency (request)", &lat));
    println!(
        "errors                 {errors} (statuses {:?}, transport {:?})",
        all.bad_status, all.errors
    );
    println!(
        "connections opened     {} (for {} connections)",
        all.connects, a.connections
    );
    println!(
        "cpu (cores, measured window) {}  other processes {others:.3} {others_top:?}  machine busy {}",
        serde_json::Value::Object(cpu.clone()),
        machine_busy
    );
    let result = json!({
        "mode": "load", "label": a.target.label, "connections": a.connections,
        "duration": a.duration, "warmup": a.warmup, "ok": all.ok, "rps": rps,
        "latency_ms": lat, "errors": errors,
        "bad_status": all.bad_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "transport_errors": all.errors, "connects": all.connects,
        "cpu_cores": cpu, "machine_busy": machine_busy, "tls": tls,
        "others_cores": others,
        "others_top": others_top.iter().map(|(n, c)| json!([n, c])).collect::<Vec<_>>(),
    });
    println!("RESULT {result}");
    Ok(())
}

// ---- connect ----------------------------------------------------------------

async fn connect_mode(a: ConnectArgs) -> Result<(), BoxError> {
    let c = client(&a.target)?;
    let raw = c.raw_request();
    let (mut tcp_us, mut hs_us, mut fb_us, mut total_us) = (vec![], vec![], vec![], vec![]);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut tls = serde_json::Value::Null;
    for i in 0..(a.warmup_count + a.count) {
        let t0 = Instant::now();
        let r: Result<(Duration, Duration, Duration, Duration, u16), BoxError> = async {
            let tcp = TcpStream::connect(c.addr).await?;
            tcp.set_nodelay(true)?;
            let t1 = Instant::now();
            let mut s = c.tls.connect(c.server_name.clone(), tcp).await?;
            let t2 = Instant::now();
            if tls.is_null() {
                tls = tls_info(&s);
            }
            s.write_all(&raw).await?;
            let mut buf = vec![0u8; 16 * 1024];
            let n = s.read(&mut buf).await?;
            let t3 = Instant::now();
            if n == 0 {
                return Err("closed before the response".into());
            }
            let mut resp = buf[..n].to_vec();
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => resp.extend_from_slice(&buf[..n]),
                    // nginx may close without close_notify after Connection: close.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let t4 = Instant::now();
            let status = std::str::from_utf8(&resp[..resp.len().min(12)])
                .ok()
                .and_then(|l| l.get(9..12))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok((t1 - t0, t2 - t0, t3 - t0, t4 - t0, status))
        }
        .await;
        if i < a.warmup_count {
            continue;
        }
        match r {
            Ok((tcp, hs, fb, total, status)) if status == c.expect => {
                let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
                tcp_us.push(us(tcp));
                hs_us.push(us(hs));
                fb_us.push(us(fb));
                total_us.push(us(total));
            }
            Ok((.., status)) => *failures.entry(format!("status {status}")).or_default() += 1,
            Err(e) => *failures.entry(err_kind(&*e)).or_default() += 1,
        }
    }
    let (tcp, hs, fb, total) = (summary(tcp_us), summary(hs_us), summary(fb_us), summary(total_us));
    println!(
        "connect {}: {} new connections one at a time (+{} warm-up), {} {}",
        a.target.label, a.count, a.warmup_count, a.target.addr, tls
    );
    println!("{}", line("tcp connect", &tcp));
    println!("{}", line("+ TLS handshake", &hs));
    println!("{}", line("+ request: first byte", &fb));
    println!("{}", line("+ whole response", &total));
    println!("failures {failures:?}");
    let errors: u64 = failures.values().sum();
    let result = json!({
        "mode": "connect", "label": a.target.label, "count": a.count,
        "tcp_ms": tcp, "handshake_ms": hs, "first_byte_ms": fb, "total_ms": total,
        "errors": errors, "failures": failures, "tls": tls,
    });
    println!("RESULT {result}");
    Ok(())
}

// ---- hold -------------------------------------------------------------------

async fn hold(a: HoldArgs) -> Result<(), BoxError> {
    let c = Arc::new(client(&a.target)?);
    let open = Arc::new(AtomicUsize::new(0));
    let closed_by_peer = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let start = Instant::now();
    let mut setups = Vec::new();
    for i in 0..a.connections {
        let permit = sem.clone().acquire_owned().await?;
        let source = (a.sources > 0).then(|| {
            let n = (i % a.sources) as u32 + 1;
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 0)) + n))
        });
        let (c, open, closed_by_peer, failed, failures) = (
            c.clone(),
            open.clone(),
            closed_by_peer.clone(),
            failed.clone(),
            failures.clone(),
        );
        let mut done = done_tx.subscribe();
        setups.push(tokio::spawn(async move {
            let r: Result<_, BoxError> = async {
                let tls = c.tls_connect(source).await?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
                        .await?;
                let mut driver = tokio::spawn(conn);
                let resp = send.send_request(c.request()).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                if status != c.expect {
                    driver.abort();
                    return Err(format!("status {status}").into());
                }
                Ok((send, async move { (&mut driver).await }))
            }
            .await;
            drop(permit);
            match r {
                Ok((send, driver)) => {
                    open.fetch_add(1, Ordering::SeqCst);
                    tokio::select! {
                        _ = driver => {
                            open.fetch_sub(1, Ordering::SeqCst);
                            closed_by_peer.fetch_add(1, Ordering::SeqCst);
                        }
                        _ = done.recv() => {}
                    }
                    drop(send);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                    let mut f = failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *f.entry(err_kind(&*e)).or_default() += 1;
                }
            }
        }));
    }
    // Wait until every setup has finished (open or failed).
    while open.load(Ordering::SeqCst) + closed_by_peer.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst)
        < a.connections
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = start.elapsed().as_secs_f64();
    println!(
        "HELD open={} failed={} closed_by_peer={} setup_seconds={setup_s:.2} failures={:?}",
        open.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        closed_by_peer.load(Ordering::SeqCst),
        failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    );
    let held_from = Instant::now();
    let mut timeline = Vec::new();
    let mut next = held_from;
    while held_from.elapsed().as_secs_f64() < a.hold {
        next += Duration::from_secs(1);
        tokio::time::sleep_until(next.into()).await;
        let t = held_from.elapsed().as_secs_f64();
        let o = open.load(Ordering::SeqCst);
        println!(
            "t={t:.0}s open={o} closed_by_peer={}",
            closed_by_peer.load(Ordering::SeqCst)
        );
        timeline.push(json!([t.round(), o]));
    }
    let result = json!({
        "mode": "hold", "label": a.target.label, "connections": a.connections,
        "sources": a.sources, "setup_seconds": setup_s,
        "failed": failed.load(Ordering::SeqCst),
        "failures": *failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        "open_at_end": open.load(Ordering::SeqCst),
        "closed_by_peer": closed_by_peer.load(Ordering::SeqCst),
        "timeline": timeline,
    });
    let _ = done_tx.send(());
    println!("RESULT {result}");
    Ok(())
}

// ---- upstream -----------------------------------------------------------------

#[derive(Default)]
struct UpStats {
    requests: AtomicU64,
    with_assertion: AtomicU64,
    with_authorization: AtomicU64,
    auth_checks: AtomicU64,
}

async fn upstream(a: UpstreamArgs) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    let stats = Arc::new(UpStats::default());
    let body = Bytes::from({
        let mut b = vec![b'x'; a.body_bytes.saturating_sub(1)];
        b.push(b'\n');
        b
    });
    eprintln!("upstream listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (stats, body) = (stats.clone(), body.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (stats, body) = (stats.clone(), body.clone());
                async move {
                    let h = req.headers();
                    let has_auth = h.contains_key("authorization");
                    let r = if req.uri().path() == "/auth" {
                        // nginx auth_request: 2xx allows, 401/403 refuses.
                        stats.auth_checks.fetch_add(1, Ordering::Relaxed);
                        let status = if has_auth {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::UNAUTHORIZED
                        };
                        Response::builder().status(status).body(Full::new(Bytes::new()))
                    } else if req.uri().path() == "/__stats" {
                        let s = json!({
                            "requests": stats.requests.load(Ordering::Relaxed),
                            "with_assertion": stats.with_assertion.load(Ordering::Relaxed),
                            "with_authorization": stats.with_authorization.load(Ordering::Relaxed),
                            "auth_checks": stats.auth_checks.load(Ordering::Relaxed),
                        });
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(s.to_string())))
                    } else {
                        stats.requests.fetch_add(1, Ordering::Relaxed);
                        if h.contains_key("x-umbra-jwt-assertion") {
                            stats.with_assertion.fetch_add(1, Ordering::Relaxed);
                        }
                        if has_auth {
                            stats.with_authorization.fetch_add(1, Ordering::Relaxed);
                        }
                        Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(body))
                    };
                    r
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
