//! `spabench knock-connect`: knock → pinhole → mTLS → first byte against a
//! dark gateway (`umbra dev`'s, userspace pinholes), with a logged-in agent
//! directory's credentials.
//!
//! One sample: seal a native knock for the service (as `umbra agent knock`
//! does: key derived from the device's SPA secret and the gateway's SPIFFE
//! ID, open = the source address), send it to the gateway's SPA port, wait
//! `pause_ms` (0, or the agent's own pause), then open a new TCP + TLS 1.3
//! connection with the device certificate (no session resumption), send
//! `GET /` with the session token and time the first response byte. Each
//! sample comes from its own loopback address (127.x.y.z), so no pinhole
//! exists before its knock. A connection the gateway refuses (the knock
//! not processed yet) is retried after 1 ms; attempts are counted.
//!
//! Before sampling, connections from addresses that never knocked must
//! fail: otherwise the gateway is not dark and the figure means nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use umbra_spa::native::{Knock, OpenAddr, seal};
use umbra_spa::{DeviceSecret, GatewayKey, derive_gateway_key};
use uuid::Uuid;

use crate::Res;
use crate::stats::{emit, latency_ms};

/// Give up on one sample after this long.
const PATIENCE: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(1);

#[derive(clap::Args)]
pub struct Args {
    /// A logged-in agent directory (`umbra dev`'s agent_dir).
    #[arg(long)]
    pub agent_dir: PathBuf,
    #[arg(long, default_value = "demo")]
    pub service: String,
    #[arg(long, default_value_t = 200)]
    pub samples: u32,
    #[arg(long, default_value_t = 10)]
    pub warmup: u32,
    /// Wait this long after the knock before connecting.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Idle time between samples.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Sample i comes from this address + 1 + i, skipping .0 and .255
    /// (loopback: any 127.x.y.z works).
    #[arg(long, default_value = "127.1.0.0")]
    pub source_base: Ipv4Addr,
    /// A name for the RESULT line.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// What one logged-in agent directory gives us.
struct Target {
    device: Uuid,
    key: GatewayKey,
    service: String,
    host: String,
    spa: SocketAddr,
    gateway: SocketAddr,
    server_name: ServerName<'static>,
    token: String,
    tls: TlsConnector,
}

fn read_json(path: &Path) -> Res<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn field<'a>(v: &'a Value, key: &str, path: &str) -> Res<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}: no {key:?}").into())
}

fn target(a: &Args) -> Res<Target> {
    let dir = &a.agent_dir;
    let agent = read_json(&dir.join("agent.json"))?;
    let session = read_json(&dir.join("session.json"))?;
    let access = session
        .get("services")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|s| s.get("name") == Some(&json!(a.service))))
        .ok_or_else(|| format!("session.json grants no service {:?}", a.service))?;
    let spa_port = access
        .get("spa_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or("the service's gateway is not dark (no spa_port in session.json)")?;
    let url = field(access, "gateway_url", "session.json")?;
    let authority = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("gateway URL {url:?}"))?
        .trim_end_matches('/');
    let gateway: SocketAddr = authority
        .parse()
        .map_err(|_| format!("gateway URL {url:?}: expected https://IP:PORT"))?;
    let spiffe = field(&agent, "spiffe_id", "agent.json")?;
    let trust_domain = spiffe
        .strip_prefix("spiffe://")
        .and_then(|r| r.split_once("/device/"))
        .map(|(td, _)| td)
        .ok_or("agent.json: no SPIFFE ID")?;
    let secret = DeviceSecret::from_base64(&std::fs::read_to_string(dir.join("spa.key"))?)?;
    let gateway_name = field(access, "gateway", "session.json")?;
    let key = derive_gateway_key(
        &secret,
        &format!("spiffe://{trust_domain}/gateway/{gateway_name}"),
    );
    Ok(Target {
        device: Uuid::parse_str(field(&agent, "device_id", "agent.json")?)?,
        key,
        service: a.service.clone(),
        host: field(access, "host", "session.json")?.to_owned(),
        spa: SocketAddr::new(gateway.ip(), spa_port),
        gateway,
        server_name: ServerName::IpAddress(gateway.ip().into()),
        token: field(&session, "token", "session.json")?.to_owned(),
        tls: tls(dir)?,
    })
}

/// The agent's TLS: rustls on aws-lc-rs (X25519MLKEM768 preferred), the
/// pinned Umbra CA, the device certificate. Resumption off: every sample
/// is a full handshake, as for an agent that has not talked to the
/// gateway before.
fn tls(dir: &Path) -> Res<TlsConnector> {
    let ca = CertificateDer::from_pem_file(dir.join("ca.pem"))?;
    let cert = CertificateDer::from_pem_file(dir.join("device.crt"))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("device.key"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The `i`th source address after `base`, never a .0 or .255.
fn source(base: Ipv4Addr, i: u32) -> IpAddr {
    let host = (i / 254) * 256 + (i % 254) + 1;
    IpAddr::V4(Ipv4Addr::from(u32::from(base) + host))
}

async fn tls_connect(t: &Target, src: IpAddr) -> Res<TlsStream<tokio::net::TcpStream>> {
    let sock = if src.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(src, 0))?;
    let tcp = sock.connect(t.gateway).await?;
    tcp.set_nodelay(true)?;
    Ok(t.tls.connect(t.server_name.clone(), tcp).await?)
}

struct Sample {
    knock_sent: f64,
    tls_done: f64,
    first_byte: f64,
    attempts: u32,
    status: u16,
    tls: Value,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn sample(t: &Target, src: IpAddr, pause: Duration) -> Res<Sample> {
    let t0 = Instant::now();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let knock = Knock::new(t.device, vec![t.service.clone()], OpenAddr::Source, now_s);
    let packet = seal(&t.key, &knock)?;
    let udp = UdpSocket::bind(SocketAddr::new(src, 0)).await?;
    udp.send_to(&packet, t.spa).await?;
    let knock_sent = ms(t0.elapsed());
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    let mut attempts = 0;
    let mut s = loop {
        attempts += 1;
        match tls_connect(t, src).await {
            Ok(s) => break s,
            Err(e) if t0.elapsed() > PATIENCE => {
                return Err(format!("{src}: no connection after knocking: {e}").into());
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    };
    let tls_done = ms(t0.elapsed());
    let (_, conn) = s.get_ref();
    let tls = json!({
        "version": conn.protocol_version().map(|v| format!("{v:?}")),
        "kx": conn.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())),
    });
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        t.host, t.token
    );
    s.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = s.read(&mut buf).await?;
    let first_byte = ms(t0.elapsed());
    if n == 0 {
        return Err(format!("{src}: closed before the response").into());
    }
    let mut head = buf[..n].to_vec();
    while head.len() < 12 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(m) => head.extend_from_slice(&buf[..m]),
        }
    }
    let status = std::str::from_utf8(&head[..head.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        knock_sent,
        tls_done,
        first_byte,
        attempts,
        status,
        tls,
    })
}

pub fn run(a: &Args) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(measure(a))
}

async fn measure(a: &Args) -> Res<()> {
    let t = target(a)?;
    // Dark check: sources that never knocked get no TLS session. They sit
    // past the sample range, so later samples cannot have opened them.
    let n = a.warmup + a.samples;
    for i in 0..3 {
        let src = source(a.source_base, n + 10 + i);
        if tls_connect(&t, src).await.is_ok() {
            return Err(format!(
                "{src} completed a TLS handshake without knocking: the gateway is not dark"
            )
            .into());
        }
    }
    let pause = Duration::from_millis(a.pause_ms);
    let (mut knock, mut tls_done, mut first) = (Vec::new(), Vec::new(), Vec::new());
    let mut attempts: BTreeMap<u32, u32> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    let mut tls = Value::Null;
    for i in 0..n {
        let r = sample(&t, source(a.source_base, i), pause).await;
        if i >= a.warmup {
            match r {
                Ok(s) if s.status == 200 => {
                    knock.push(s.knock_sent);
                    tls_done.push(s.tls_done);
                    first.push(s.first_byte);
                    *attempts.entry(s.attempts).or_default() += 1;
                    tls = s.tls;
                }
                Ok(s) => *statuses.entry(s.status).or_default() += 1,
                Err(e) => *failures.entry(e.to_string()).or_default() += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
    }
    emit(json!({
        "bench": "knock_first_byte", "label": a.label, "pause_ms": a.pause_ms,
        "samples": a.samples, "ok": first.len(),
        "knock_sent_ms": latency_ms(&knock),
        "tls_done_ms": latency_ms(&tls_done),
        "first_byte_ms": latency_ms(&first),
        "connect_attempts": attempts, "bad_status": statuses, "failures": failures,
        "dark_check": "3 sources that never knocked: no TLS session", "tls": tls,
    }));
    if !statuses.is_empty() || !failures.is_empty() {
        return Err(format!("knock-connect: statuses {statuses:?}, failures {failures:?}").into());
    }
    Ok(())
}
