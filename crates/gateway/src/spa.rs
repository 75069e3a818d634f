//! The SPA listener of a dark gateway: one UDP socket, no replies ever.
//!
//! A native knock names a device and the services it wants; it opens a
//! pinhole to the gateway's TLS port for the knocking address only when
//! the view is fresh, the device is approved and not revoked, its user is
//! not suspended, and at least one requested service is routed here and
//! granted to that user. An fwknop knock opens what its `access.conf`
//! stanza allows. Either way the peer learns nothing: a refused packet and
//! an accepted one look the same from outside, and the TLS handshake that
//! follows is what tells the agent it worked.
//!
//! Packets that fail the cheap checks (size, magic, base64 alphabet) only
//! count; the rest are refused with a reason that goes to the debug log in
//! full and to the audit trail as a label (audit records are summed up per
//! source and label, so a flood costs a counter, not a write per packet).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use umbra_firewall::{Pinhole, PinholeKey, Pinholes, Protocol};
use umbra_proto::control::GatewayAuditRecord;
use umbra_spa::Refusal;
use umbra_spa::fwknop::{FwknopConfig, FwknopVerifier};
use umbra_spa::native::{Verified, Verifier, VerifierConfig};

use crate::Gateway;

/// What the listener has seen: `umbra_gateway_spa_packets_total` by
/// outcome (`crate::metrics`).
#[derive(Debug)]
pub struct SpaCounters {
    pub accepted: prometheus::IntCounter,
    pub refused: prometheus::IntCounter,
    pub dropped_cheap: prometheus::IntCounter,
}

/// The pinholes open for each device (by its knocks), with the user it
/// belongs to and when each expires, so a revoked device or suspended user
/// loses them at once rather than when they time out.
#[derive(Default)]
pub struct Knocked {
    by_device: std::sync::Mutex<HashMap<String, DeviceHoles>>,
}

/// A device's user and its open pinholes with their expiry.
type DeviceHoles = (String, Vec<(PinholeKey, Instant)>);

impl Knocked {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceHoles>> {
        self.by_device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn opened(&self, device: &str, user: &str, key: PinholeKey, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        let entry = map
            .entry(device.to_owned())
            .or_insert_with(|| (user.to_owned(), Vec::new()));
        entry.1.retain(|(k, until)| *until > now && *k != key);
        entry.1.push((key, now + ttl));
    }

    /// Takes the unexpired pinholes of devices the view lists as revoked,
    /// or whose user it lists as suspended.
    pub fn take_revoked(&self, view: &crate::view::Inner) -> Vec<PinholeKey> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.lock().retain(|device, (user, holes)| {
            holes.retain(|(_, until)| *until > now);
            if view.devices.contains(device) || view.users.contains(user) {
                out.extend(holes.iter().map(|(k, _)| *k));
                return false;
            }
            !holes.is_empty()
        });
        out
    }
}

/// Closes the pinholes of revoked devices and suspended users (a dark
/// gateway's part of a revocation; their live connections are cut apart).
pub fn close_revoked(gw: &Gateway) {
    let Some(pinholes) = gw.pinholes.clone() else {
        return;
    };
    let keys = gw.knocked.take_revoked(&gw.view.read());
    if keys.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for key in keys {
            match pinholes.close(key).await {
                Ok(()) => tracing::info!(pinhole = %key, "pinhole closed on revocation"),
                Err(e) => {
                    tracing::error!(pinhole = %key, error = %e, "pinhole could not be closed")
                }
            }
        }
    });
}

/// With a firewall backend, a blocked source is dropped by the firewall
/// too (nftables: a deny set, established connections included).
pub fn firewall_block(gw: &Gateway, event: &umbra_proto::control::Event) {
    use umbra_proto::control::Event;
    let Some(pinholes) = gw.pinholes.clone() else {
        return;
    };
    let now = gw.now();
    let (ip, until) = match event {
        Event::SourceBlocked { address, until } => (address, Some(*until)),
        Event::SourceUnblocked { address } => (address, None),
        _ => return,
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return;
    };
    tokio::spawn(async move {
        let done = match until {
            Some(until) => {
                let secs = u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1);
                pinholes.block(ip, Duration::from_secs(secs)).await
            }
            None => pinholes.unblock(ip).await,
        };
        if let Err(e) = done {
            tracing::error!(source = %ip, error = %e, "firewall block could not be changed");
        }
    });
}

/// Serves knocks on `socket` until `shutdown`.
pub async fn run(
    gw: Arc<Gateway>,
    socket: UdpSocket,
    pinholes: Arc<dyn Pinholes>,
    shutdown: CancellationToken,
) {
    let Some(spa) = gw.config.spa.clone() else {
        return;
    };
    let started = SystemTime::now();
    let mut native = Verifier::new(
        VerifierConfig {
            window_secs: spa.window_secs,
            ..VerifierConfig::default()
        },
        started,
    );
    let mut fwknop = spa
        .fwknop
        .clone()
        .map(|stanzas| FwknopVerifier::new(stanzas, FwknopConfig::default(), started));
    let port = gw.config.listen.port();
    // One datagram at most this big is read; anything larger is cut and
    // then refused by the length checks.
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "SPA receive failed");
                    continue;
                }
            },
        };
        let packet = &buf[..n];
        let source = from.ip().to_canonical();
        if gw.view.read().is_blocked(source, gw.now()) {
            gw.spa_counters.dropped_cheap.inc();
            continue;
        }
        let now =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(gw.now()).unwrap_or(0));
        if packet.starts_with(&umbra_spa::native::MAGIC) {
            let decision = {
                let view = gw.view.read();
                let keys = |d: &uuid::Uuid| view.spa.get(d).map(|e| e.key.clone());
                native.verify(packet, source, now, &keys)
            };
            match decision {
                Ok(knock) => admit_native(&gw, &pinholes, knock, source, port, spa.pinhole_ttl),
                Err(refusal) => refused(&gw, source, "native", &refusal),
            }
        } else if let Some(fwknop) = fwknop.as_mut() {
            match fwknop.verify(packet, source, now) {
                Ok(grant) => {
                    let ttl = Duration::from_secs(u64::from(grant.timeout_secs.max(1)));
                    let holes: Vec<Pinhole> = grant
                        .ports
                        .iter()
                        .map(|p| {
                            let proto = match p.proto {
                                umbra_spa::fwknop::Proto::Tcp => Protocol::Tcp,
                                umbra_spa::fwknop::Proto::Udp => Protocol::Udp,
                            };
                            Pinhole::new(grant.open, proto, p.port, ttl)
                        })
                        .collect();
                    let what = grant
                        .ports
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    record(
                        &gw,
                        &format!("fwknop:{}", grant.message.username),
                        source,
                        &format!("ports {what} for {}", grant.open),
                        "allow",
                        &format!("fwknop stanza {}", grant.stanza + 1),
                    );
                    open(&gw, &pinholes, holes);
                }
                Err(refusal) => refused(&gw, source, "fwknop", &refusal),
            }
        } else {
            gw.spa_counters.dropped_cheap.inc();
        }
    }
}

/// Decides which of the knock's services this device may reach here, and
/// opens the gateway's port for it if any.
fn admit_native(
    gw: &Arc<Gateway>,
    pinholes: &Arc<dyn Pinholes>,
    knock: Verified,
    source: IpAddr,
    port: u16,
    ttl: Duration,
) {
    let device = knock.device.to_string();
    let (actor, decision) = {
        let view = gw.view.read();
        let Some(entry) = view.spa.get(&knock.device) else {
            return refused_reason(gw, source, "native", "device_unknown");
        };
        let actor = format!("user:{}", entry.user);
        let decision = if !gw.view.is_fresh_locked(&view) {
            Err("gateway_state_stale")
        } else if view.devices.contains(&device) {
            Err("device_revoked")
        } else if view.users.contains(&entry.user) {
            Err("user_suspended")
        } else {
            let granted: Vec<&String> = knock
                .services
                .iter()
                .filter(|s| gw.config.routes.iter().any(|r| &r.service == *s))
                // A knock carries no request: the coarse check (some
                // allow rule names this user and service) opens the
                // pinhole; every request through it is decided in full.
                .filter(|s| view.policy.may_allow(&entry.user, &entry.groups, s))
                .collect();
            if granted.is_empty() {
                Err("no_requested_service_granted_here")
            } else {
                Ok(granted
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
            }
        };
        (actor, decision)
    };
    let resource = format!("services {} for {}", knock.services.join(","), knock.open);
    match decision {
        Ok(granted) => {
            gw.spa_counters.accepted.inc();
            record(
                gw,
                &actor,
                source,
                &resource,
                "allow",
                &format!("device {device} may reach {granted}"),
            );
            let hole = Pinhole::new(knock.open, Protocol::Tcp, port, ttl);
            if let Some(user) = actor.strip_prefix("user:") {
                gw.knocked.opened(&device, user, hole.key, ttl);
            }
            open(gw, pinholes, vec![hole]);
        }
        Err(reason) => {
            gw.spa_counters.refused.inc();
            tracing::info!(%source, %device, reason, "SPA knock refused");
            record(gw, &actor, source, &resource, "deny", reason);
        }
    }
}

/// Opens without holding up the listener: nftables batches concurrent
/// opens into one call, so many knocks in flight cost one `nft` run.
fn open(gw: &Arc<Gateway>, pinholes: &Arc<dyn Pinholes>, holes: Vec<Pinhole>) {
    let pinholes = pinholes.clone();
    let name = gw.name().to_owned();
    tokio::spawn(async move {
        if let Err(e) = pinholes.open(&holes).await {
            tracing::error!(gateway = %name, error = %e, "pinhole could not be opened");
        }
    });
}

fn refused(gw: &Gateway, source: IpAddr, format: &str, refusal: &Refusal) {
    let cheap = matches!(
        refusal,
        Refusal::TooShort { .. }
            | Refusal::TooLong { .. }
            | Refusal::BadMagic
            | Refusal::UnsupportedVersion(_)
            | Refusal::NotBase64
            | Refusal::RijndaelPrefix
            | Refusal::NoStanza(_)
            | Refusal::RateLimited(_)
    );
    if cheap {
        gw.spa_counters.dropped_cheap.inc();
        tracing::trace!(%source, format, reason = %refusal, "SPA packet dropped");
        return;
    }
    tracing::debug!(%source, format, reason = %refusal, "SPA packet refused");
    refused_reason(gw, source, format, refusal.label());
}

fn refused_reason(gw: &Gateway, source: IpAddr, format: &str, label: &str) {
    gw.spa_counters.refused.inc();
    record(gw, "-", source, &format!("{format} knock"), "deny", label);
}

fn record(gw: &Gateway, actor: &str, source: IpAddr, resource: &str, outcome: &str, reason: &str) {
    gw.audit.record(GatewayAuditRecord {
        ts: gw.now(),
        actor: actor.to_owned(),
        source_ip: source.to_string(),
        action: "spa.knock".into(),
        resource: format!("gateway:{} {resource}", gw.name()),
        outcome: outcome.into(),
        reason: reason.into(),
        request_id: String::new(),
        count: 1,
        transfer: None,
    });
}
