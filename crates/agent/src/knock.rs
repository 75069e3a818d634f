//! Knocking at a dark gateway before connecting to it.
//!
//! A dark gateway answers nothing until a valid SPA packet from this
//! address has opened a pinhole (`docs/spa.md`). The agent derives the
//! gateway's key from its SPA secret and the gateway's SPIFFE ID, sends
//! one UDP datagram naming the service, then waits until the gateway's TLS
//! port accepts a TCP connection (the pinhole is in place), knocking again
//! if it does not. A knock is valid for a few seconds only; connections
//! made meanwhile outlive the pinhole, so the agent knocks again only when
//! it may need a new connection and its last knock is getting old.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UdpSocket};
use umbra_proto::control::ServiceAccess;
use umbra_spa::native::{Knock, OpenAddr, seal};
use umbra_spa::{DeviceSecret, derive_gateway_key};

use crate::AgentError;
use crate::dir::{AgentDir, AgentState};

/// A knock younger than this is trusted to have left a pinhole open
/// (gateways keep one open for 30 s by default).
const FRESH: Duration = Duration::from_secs(10);
/// How long to wait for the pinhole, in all.
const PATIENCE: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

static LAST: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

fn last_knock(key: &str) -> Option<Instant> {
    LAST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()?
        .get(key)
        .copied()
}

/// Forgets the last knock for `access`: a connection failed, and the next
/// attempt knocks again rather than trust a pinhole that may be gone.
pub fn forget(access: &ServiceAccess) {
    forget_key(&format!("{}|{}", access.gateway_url, access.name));
}

fn forget_key(key: &str) {
    if let Some(map) = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_mut()
    {
        map.remove(key);
    }
}

fn remember(key: &str) {
    LAST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(key.to_owned(), Instant::now());
}

/// The gateway's TLS address (`host`, `port`) from its URL.
pub fn gateway_host_port(access: &ServiceAccess) -> Result<(String, u16), AgentError> {
    host_port("gateway", &access.gateway_url)
}

/// An `https://` URL's host (IPv6 without brackets) and port.
fn host_port(what: &str, url: &str) -> Result<(String, u16), AgentError> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| AgentError::State(format!("{what} URL {url:?}: {e}")))?;
    let host = parsed
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    Ok((host, parsed.port_u16().unwrap_or(443)))
}

/// Where a native knock goes and what it asks for.
struct Target {
    /// The SPIFFE ID the key is derived for (a gateway's, the controller's).
    id: String,
    service: String,
    host: String,
    tls_port: u16,
    spa_port: u16,
    /// Names the target in the memory of recent knocks and in errors.
    memo: String,
}

fn trust_domain(state: &AgentState) -> Result<&str, AgentError> {
    state
        .spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once("/device/"))
        .map(|(td, _)| td)
        .ok_or_else(|| AgentError::State("agent.json has no SPIFFE ID: enroll again".into()))
}

fn gateway_target(state: &AgentState, access: &ServiceAccess) -> Result<Target, AgentError> {
    let spa_port = access.spa_port.ok_or_else(|| {
        AgentError::State(format!(
            "the gateway of {:?} is not dark: nothing to knock at",
            access.name
        ))
    })?;
    let (host, tls_port) = gateway_host_port(access)?;
    Ok(Target {
        id: format!(
            "spiffe://{}/gateway/{}",
            trust_domain(state)?,
            access.gateway
        ),
        service: access.name.clone(),
        host,
        tls_port,
        spa_port,
        memo: format!("{}|{}", access.gateway_url, access.name),
    })
}

/// One native knock for `access`'s service at its gateway's SPA port.
/// Returns where it was sent.
pub async fn send(dir: &AgentDir, access: &ServiceAccess) -> Result<SocketAddr, AgentError> {
    let target = gateway_target(&dir.state()?, access)?;
    send_to(dir, &target).await
}

async fn send_to(dir: &AgentDir, t: &Target) -> Result<SocketAddr, AgentError> {
    let state = dir.state()?;
    let secret_path = dir.file("spa.key");
    let secret = std::fs::read_to_string(&secret_path).map_err(|_| {
        AgentError::State(format!(
            "{} is missing: enroll this device again to get an SPA secret",
            secret_path.display()
        ))
    })?;
    let secret = DeviceSecret::from_base64(&secret)
        .map_err(|e| AgentError::State(format!("{}: {e}", secret_path.display())))?;
    let key = derive_gateway_key(&secret, &t.id);
    let device = uuid::Uuid::parse_str(&state.device_id)
        .map_err(|e| AgentError::State(format!("device id: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let packet = seal(
        &key,
        &Knock::new(device, vec![t.service.clone()], OpenAddr::Source, now),
    )
    .map_err(|e| AgentError::State(format!("knock: {e}")))?;
    let host = t.host.as_str();
    let target = tokio::net::lookup_host((host, t.spa_port))
        .await
        .map_err(|e| AgentError::Network(format!("{host}: {e}")))?
        .next()
        .ok_or_else(|| AgentError::Network(format!("{host}: no address")))?;
    let local: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| AgentError::Network(format!("SPA socket: {e}")))?;
    socket
        .send_to(&packet, target)
        .await
        .map_err(|e| AgentError::Network(format!("knock to {target}: {e}")))?;
    tracing::debug!(%target, service = %t.service, "knocked");
    Ok(target)
}

/// Makes sure the gateway of `access` lets this address in: nothing to do
/// for a gateway that is not dark or was knocked at recently; otherwise
/// knock and wait until its TLS port accepts a connection.
pub async fn ensure(dir: &AgentDir, access: &ServiceAccess) -> Result<(), AgentError> {
    if access.spa_port.is_none() {
        return Ok(());
    }
    let target = gateway_target(&dir.state()?, access)?;
    ensure_target(dir, &target, &access.gateway_url).await
}

/// The base URL of the controller's login surface, knocked open if the
/// controller is dark (`agent.json`'s `dark`, from enrollment): the same
/// host as the enrollment URL, on the login port.
pub async fn ensure_controller(dir: &AgentDir, state: &AgentState) -> Result<String, AgentError> {
    let Some(dark) = state.dark else {
        return Ok(state.controller_url.clone());
    };
    let (host, base) = controller_base(state, dark)?;
    let target = Target {
        id: format!("spiffe://{}/controller", trust_domain(state)?),
        service: "controller".into(),
        host,
        tls_port: dark.login_port,
        spa_port: dark.spa_port,
        memo: base.clone(),
    };
    ensure_target(dir, &target, &base).await?;
    Ok(base)
}

/// The controller's host (as enrollment reached it) and the base URL of
/// its login surface there.
fn controller_base(
    state: &AgentState,
    dark: umbra_proto::api::DarkController,
) -> Result<(String, String), AgentError> {
    let (host, _) = host_port("controller", &state.controller_url)?;
    let base = if host.contains(':') {
        format!("https://[{host}]:{}", dark.login_port)
    } else {
        format!("https://{host}:{}", dark.login_port)
    };
    Ok((host, base))
}

async fn ensure_target(dir: &AgentDir, t: &Target, what: &str) -> Result<(), AgentError> {
    if last_knock(&t.memo).is_some_and(|k| k.elapsed() < FRESH) {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        send_to(dir, t).await?;
        // Give the target a moment to open the pinhole: with userspace
        // pinholes a TCP probe succeeds either way, so it cannot tell.
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The pinhole is usually there within milliseconds; a SYN that
        // beats it is dropped, so probe with short timeouts and knock
        // again (a fresh nonce) if the port stays closed.
        for _ in 0..3 {
            let probe = TcpStream::connect((t.host.as_str(), t.tls_port));
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                remember(&t.memo);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if started.elapsed() > PATIENCE {
            return Err(AgentError::Network(format!(
                "{what}: no answer after knocking (is the device approved, the service granted, \
                 the clock right?)"
            )));
        }
    }
}

/// An fwknop-compatible knock, as the stock `fwknop` client sends it, for
/// gateways (or fwknopd servers) configured with `access.conf` stanzas.
pub struct FwknopKnock {
    pub destination: String,
    pub server_port: u16,
    /// `tcp/22`, …
    pub access: Vec<umbra_spa::fwknop::ProtoPort>,
    /// The address to open; `None`: this host's address towards the
    /// destination (what the server sees unless there is NAT between).
    pub allow_ip: Option<std::net::Ipv4Addr>,
    pub user: String,
    pub keys: umbra_spa::fwknop::FwknopKeys,
    /// Asked lifetime of the pinhole, capped by the server.
    pub client_timeout: Option<u32>,
}

/// Sends `k`; returns where it went and the packet (base64 text).
pub async fn send_fwknop(k: &FwknopKnock) -> Result<(SocketAddr, String), AgentError> {
    let target = tokio::net::lookup_host((k.destination.as_str(), k.server_port))
        .await
        .map_err(|e| AgentError::Network(format!("{}: {e}", k.destination)))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| {
            AgentError::Network(format!(
                "{}: no IPv4 address (fwknop is IPv4)",
                k.destination
            ))
        })?;
    let socket = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| AgentError::Network(format!("SPA socket: {e}")))?;
    socket
        .connect(target)
        .await
        .map_err(|e| AgentError::Network(format!("{target}: {e}")))?;
    let allow_ip = match k.allow_ip {
        Some(ip) => ip,
        None => match socket.local_addr().map(|a| a.ip()) {
            Ok(std::net::IpAddr::V4(ip)) => ip,
            _ => {
                return Err(AgentError::State(
                    "cannot tell this host's address: pass --allow-ip".into(),
                ));
            }
        },
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let message = umbra_spa::fwknop::Message::access(
        &k.user,
        now,
        umbra_spa::fwknop::AccessRequest {
            allow_ip,
            ports: k.access.clone(),
        },
        k.client_timeout,
    );
    let packet = umbra_spa::fwknop::encode(&message, &k.keys)
        .map_err(|e| AgentError::State(format!("fwknop packet: {e}")))?;
    socket
        .send(packet.as_bytes())
        .await
        .map_err(|e| AgentError::Network(format!("knock to {target}: {e}")))?;
    Ok((target, packet))
}
