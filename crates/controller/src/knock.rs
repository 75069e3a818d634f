//! A dark controller's knock listener: native SPA packets that open the
//! login surface (`listen`) for one source address, for a few seconds.
//!
//! Devices knock with the key `HKDF(device secret, spiffe://<td>/controller)`
//! (`umbra_spa::derive_gateway_key`), so a gateway, which holds keys for its
//! own ID only, cannot forge a knock at the controller. The table of keys is
//! kept in memory, built from the store at start and kept current from the
//! event log (the same events the gateways get): a device approved may knock
//! at once, a device revoked or a user suspended no longer can. On a gap in
//! the events (lag, a reconnect) and every [`RELOAD`] the table is rebuilt.
//!
//! What a peer learns: nothing. Refused and accepted packets both go
//! unanswered; the TLS handshake that follows tells the agent it worked.
//! Refusals of packets that failed before authentication (unknown device,
//! bad tag) are only counted and logged at debug level: any host can make
//! them, and a durable record per packet would hand it a disk-filling
//! lever. Accepted knocks and refusals of authenticated packets (a replay,
//! a stale timestamp, a revoked device's late knock) go to the audit trail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use umbra_firewall::{Pinhole, Pinholes, Protocol};
use umbra_proto::api::{DeviceStatus, UserStatus};
use umbra_proto::control::Event;
use umbra_spa::native::{Verifier, VerifierConfig};
use umbra_spa::{GatewayKey, Refusal, derive_gateway_key};
use umbra_store::Outcome;
use uuid::Uuid;

use crate::Controller;

/// How often the key table is rebuilt from the store even without a gap.
const RELOAD: Duration = Duration::from_secs(300);
/// How often exempt addresses' pinholes are renewed (they live a day).
const EXEMPT_RENEW: Duration = Duration::from_secs(3600);

#[derive(Clone)]
struct Entry {
    key: GatewayKey,
    user: String,
}

/// Devices that may knock, by id.
#[derive(Default)]
pub struct KnockKeys {
    table: RwLock<HashMap<Uuid, Entry>>,
}

/// What the listener has seen: `umbra_controller_spa_packets_total`.
pub type KnockCounters = crate::metrics::SpaPackets;

/// The key `device_id` knocks at this controller with.
fn controller_key(c: &Controller, device_id: &str) -> Option<GatewayKey> {
    let secret = crate::spa::device_secret(c, device_id)?;
    Some(derive_gateway_key(
        &secret,
        &c.ca.trust_domain().controller_id(),
    ))
}

impl KnockKeys {
    // A panic while holding the lock leaves a whole table (every update
    // replaces or edits entries in one step), so poisoning is ignored.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, Entry>> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, Entry>> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every approved device of an active user.
    async fn reload(&self, c: &Controller) -> Result<(), umbra_store::StoreError> {
        let active: std::collections::HashSet<String> = c
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| u.status == UserStatus::Active)
            .map(|u| u.id)
            .collect();
        let table: HashMap<Uuid, Entry> = c
            .store
            .list_devices()
            .await?
            .into_iter()
            .filter(|d| d.status == DeviceStatus::Approved && active.contains(&d.user_id))
            .filter_map(|d| {
                Some((
                    Uuid::parse_str(&d.id).ok()?,
                    Entry {
                        key: controller_key(c, &d.id)?,
                        user: d.user_name,
                    },
                ))
            })
            .collect();
        tracing::debug!(devices = table.len(), "knock keys loaded");
        *self.write() = table;
        Ok(())
    }

    /// Applies one event; `false` when the table must be rebuilt instead.
    fn apply(&self, c: &Controller, event: Event) -> bool {
        match event {
            Event::DeviceApproved { device, user, .. } => {
                let (Ok(id), Some(key)) = (Uuid::parse_str(&device), controller_key(c, &device))
                else {
                    return true;
                };
                self.write().insert(id, Entry { key, user });
            }
            Event::DeviceRevoked { device } => {
                if let Ok(id) = Uuid::parse_str(&device) {
                    self.write().remove(&id);
                }
            }
            Event::UserSuspended { user } => {
                self.write().retain(|_, e| e.user != user);
            }
            // The user's devices are back: only the store knows which.
            Event::UserResumed { .. } => return false,
            _ => {}
        }
        true
    }

    fn key(&self, device: &Uuid) -> Option<GatewayKey> {
        self.read().get(device).map(|e| e.key.clone())
    }

    fn user(&self, device: &Uuid) -> Option<String> {
        self.read().get(device).map(|e| e.user.clone())
    }
}

/// Keeps `keys` current until `shutdown`.
async fn follow(c: Arc<Controller>, keys: Arc<KnockKeys>, shutdown: CancellationToken) {
    let mut events = c.events.subscribe();
    // `run` loaded the table just before.
    let mut stale = false;
    let mut reload = tokio::time::interval_at(tokio::time::Instant::now() + RELOAD, RELOAD);
    loop {
        if stale {
            match keys.reload(&c).await {
                Ok(()) => stale = false,
                Err(e) => tracing::warn!(error = %e, "knock keys: store unavailable; retrying"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = reload.tick() => stale = true,
            () = tokio::time::sleep(Duration::from_secs(1)), if stale => {}
            pushed = events.recv() => match pushed {
                Ok(p) => match serde_json::from_str::<Event>(&p.json) {
                    Ok(event) => stale |= !keys.apply(&c, event),
                    Err(_) => stale = true,
                },
                Err(RecvError::Lagged(_)) => stale = true,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Serves knocks on `socket` until `shutdown`, opening `port` (the login
/// surface) for each valid one. Returns once everything it started ended.
pub async fn run(
    c: Arc<Controller>,
    socket: UdpSocket,
    pinholes: Arc<dyn Pinholes>,
    port: u16,
    shutdown: CancellationToken,
) {
    let Some(spa) = c.config.spa.clone() else {
        return;
    };
    let keys = Arc::new(KnockKeys::default());
    if let Err(e) = keys.reload(&c).await {
        tracing::warn!(error = %e, "knock keys: store unavailable at start; retrying");
    }
    let follower = tokio::spawn(follow(c.clone(), keys.clone(), shutdown.clone()));
    let exempt = tokio::spawn(keep_exempt_open(
        pinholes.clone(),
        spa.exempt.clone(),
        port,
        shutdown.clone(),
    ));
    let mut verifier = Verifier::new(
        VerifierConfig {
            window_secs: spa.window_secs,
            ..VerifierConfig::default()
        },
        SystemTime::now(),
    );
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "knock receive failed");
                    continue;
                }
            },
        };
        let source = from.ip().to_canonical();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(c.now()).unwrap_or(0));
        let lookup = |d: &Uuid| keys.key(d);
        match verifier.verify(&buf[..n], source, now, &lookup) {
            Ok(knock) => {
                c.knock_counters.accepted.inc();
                let user = keys.user(&knock.device).unwrap_or_default();
                let pinholes = pinholes.clone();
                let hole = Pinhole::new(knock.open, Protocol::Tcp, port, spa.pinhole_ttl);
                let c = c.clone();
                tokio::spawn(async move {
                    if let Err(e) = pinholes.open(&[hole]).await {
                        tracing::error!(error = %e, "pinhole could not be opened");
                    }
                    audit(
                        &c,
                        &format!("user:{user}"),
                        source,
                        &format!("controller login surface for {}", knock.open),
                        Outcome::Allow,
                        &format!("device {}", knock.device),
                    )
                    .await;
                });
            }
            Err(refusal) => refused(&c, source, &refusal),
        }
    }
    let _ = tokio::join!(follower, exempt);
}

fn refused(c: &Arc<Controller>, source: IpAddr, refusal: &Refusal) {
    let unauthenticated = matches!(
        refusal,
        Refusal::TooShort { .. }
            | Refusal::TooLong { .. }
            | Refusal::BadMagic
            | Refusal::UnsupportedVersion(_)
            | Refusal::RateLimited(_)
            | Refusal::UnknownDevice(_)
            | Refusal::BadMac
            | Refusal::DecryptionFailed
            | Refusal::Malformed(_)
            | Refusal::ReplayCacheFull
    );
    if unauthenticated {
        c.knock_counters.dropped.inc();
        tracing::debug!(%source, reason = %refusal, "knock dropped");
        return;
    }
    c.knock_counters.refused.inc();
    tracing::info!(%source, reason = %refusal, "knock refused");
    let c = c.clone();
    let label = refusal.label();
    tokio::spawn(async move {
        audit(
            &c,
            "-",
            source,
            "controller login surface",
            Outcome::Deny,
            label,
        )
        .await;
    });
}

async fn audit(
    c: &Controller,
    actor: &str,
    source: IpAddr,
    resource: &str,
    outcome: Outcome,
    reason: &str,
) {
    if let Err(e) = c
        .audit_event(
            actor,
            Some(source),
            "spa.knock",
            resource,
            outcome,
            reason,
            "",
        )
        .await
    {
        tracing::error!(error = ?e, "knock audit record lost");
    }
}

/// Exempt addresses reach the login surface without knocking: a pinhole
/// of the longest lifetime, renewed well before it ends.
pub fn exempt_pinholes(exempt: &[IpAddr], port: u16) -> Vec<Pinhole> {
    exempt
        .iter()
        .map(|a| Pinhole::new(*a, Protocol::Tcp, port, umbra_firewall::MAX_TTL))
        .collect()
}

/// Renews what [`exempt_pinholes`] opened at start.
async fn keep_exempt_open(
    pinholes: Arc<dyn Pinholes>,
    exempt: Vec<IpAddr>,
    port: u16,
    shutdown: CancellationToken,
) {
    if exempt.is_empty() {
        return;
    }
    let holes = exempt_pinholes(&exempt, port);
    let mut next = EXEMPT_RENEW;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
        next = match pinholes.open(&holes).await {
            Ok(()) => EXEMPT_RENEW,
            Err(e) => {
                tracing::error!(error = %e, "exempt pinholes could not be renewed; retrying");
                Duration::from_secs(5)
            }
        };
    }
}
