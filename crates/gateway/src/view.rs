//! The gateway's replica of what the controller knows: deny lists, grants,
//! the policy, device postures and the session-token keys. Built from the control channel's snapshot
//! and events, read on every request.
//!
//! Fail closed: until the first snapshot, and whenever nothing has been
//! heard from the controller for longer than the staleness bound, the view
//! is stale and every request is refused. Events must arrive in sequence;
//! a gap means something was missed, and the caller reconnects to resume.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use umbra_pki::clock::Clock;
use umbra_proto::PostureReport;
use umbra_proto::control::{Event, Grant, SessionVerdict, Snapshot};
use umbra_proto::token::SessionClaims;

use crate::policy::GatewayPolicy;

impl Inner {
    /// Whether `source` is blocked at `now`.
    pub fn is_blocked(&self, source: std::net::IpAddr, now: i64) -> bool {
        !self.blocked.is_empty()
            && self
                .blocked
                .get(&source.to_canonical())
                .is_some_and(|until| *until > now)
    }

    /// Decides one access with everything the view knows of the session:
    /// its device's posture and the controller's verdict.
    pub fn decide(&self, ask: &crate::policy::Ask<'_>) -> umbra_policy::decision::Decision {
        self.policy.decide(
            ask,
            self.postures.get(&ask.claims.device),
            self.verdicts.get(&ask.claims.sid),
        )
    }
}

#[derive(Default)]
pub struct Inner {
    pub sessions: HashSet<String>,
    pub certificates: HashSet<String>,
    pub devices: HashSet<String>,
    pub users: HashSet<String>,
    /// The admin API's grants by service (also in `policy`, as rules).
    pub grants: BTreeMap<String, Grant>,
    /// What every access is decided with.
    pub policy: GatewayPolicy,
    /// The last posture report of each approved device, by device id.
    pub postures: HashMap<String, PostureReport>,
    /// The controller's latest verdict on each re-evaluated live session.
    pub verdicts: HashMap<String, SessionVerdict>,
    /// Source addresses refused until a time (Unix seconds).
    pub blocked: HashMap<std::net::IpAddr, i64>,
    pub keys: HashMap<String, DecodingKey>,
    /// The last event applied; `None` before the first snapshot.
    pub seq: Option<i64>,
    /// When the controller was last heard from (Unix seconds).
    pub contact: i64,
    /// Tokens whose signature has been verified, by SHA-256 of the token:
    /// the signature check is the costly part and a session's token is
    /// presented on every request. Only the signature is cached; expiry,
    /// binding and the deny lists are checked every time. Emptied with
    /// every new key set (a snapshot builds a fresh `Inner`).
    pub verified: std::sync::Mutex<HashMap<[u8; 32], SessionClaims>>,
    /// Devices that may knock, with this gateway's SPA key for each.
    pub spa: HashMap<uuid::Uuid, SpaEntry>,
    /// Whether the control channel is up. While it is down, and until the
    /// staleness bound, only sessions already seen (their tokens in
    /// `verified`) are served: a new one could have been revoked in a way
    /// this gateway cannot hear of.
    pub connected: std::sync::atomic::AtomicBool,
}

/// An approved device, as the SPA listener needs it.
pub struct SpaEntry {
    pub user: String,
    pub groups: Vec<String>,
    pub key: umbra_spa::GatewayKey,
}

fn spa_entry(
    device: &str,
    user: &str,
    groups: &[String],
    key: &str,
) -> Option<(uuid::Uuid, SpaEntry)> {
    let id = uuid::Uuid::parse_str(device).ok()?;
    let key = umbra_spa::GatewayKey::from_base64(key).ok()?;
    Some((
        id,
        SpaEntry {
            user: user.to_owned(),
            groups: groups.to_vec(),
            key,
        },
    ))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("event {got} after {have:?}: a gap")]
    Gap { have: Option<i64>, got: i64 },
}

pub struct View {
    inner: RwLock<Inner>,
    clock: Arc<dyn Clock>,
    max_staleness_secs: i64,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.read();
        f.debug_struct("View")
            .field("seq", &g.seq)
            .field("revoked_sessions", &g.sessions.len())
            .finish_non_exhaustive()
    }
}

fn keys_from(jwks: &serde_json::Value) -> HashMap<String, DecodingKey> {
    let Ok(set) = serde_json::from_value::<JwkSet>(jwks.clone()) else {
        tracing::error!("snapshot carries an unreadable JWKS; no token will verify");
        return HashMap::new();
    };
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, key))
        })
        .collect()
}

impl View {
    pub fn new(clock: Arc<dyn Clock>, max_staleness_secs: i64) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            clock,
            max_staleness_secs,
        }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// True when decisions may be made: synced, and recently in contact.
    pub fn is_fresh(&self) -> bool {
        self.is_fresh_locked(&self.read())
    }

    /// [`Self::is_fresh`] for a caller already holding the read guard.
    pub fn is_fresh_locked(&self, g: &Inner) -> bool {
        g.seq.is_some() && self.clock.now() - g.contact <= self.max_staleness_secs
    }

    pub fn seq(&self) -> Option<i64> {
        self.read().seq
    }

    pub fn apply_snapshot(&self, seq: i64, s: &Snapshot) {
        let keys = keys_from(&s.jwks);
        // The tokens verified under the same keys stay verified: a periodic
        // resync must not make every session "unseen" (and so refused if
        // the controller becomes unreachable right after it).
        let verified = {
            let g = self.read();
            let same_keys =
                g.keys.len() == keys.len() && keys.keys().all(|k| g.keys.contains_key(k));
            let mut cache = g
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if same_keys {
                std::mem::take(&mut *cache)
            } else {
                HashMap::new()
            }
        };
        let r = &s.revocations;
        let grants: BTreeMap<String, Grant> = s
            .grants
            .iter()
            .map(|g| (g.service.clone(), g.clone()))
            .collect();
        let next = Inner {
            sessions: r.sessions.iter().cloned().collect(),
            certificates: r.certificates.iter().cloned().collect(),
            devices: r.devices.iter().cloned().collect(),
            users: r.users.iter().cloned().collect(),
            policy: GatewayPolicy::new(&s.policy, &grants),
            grants,
            postures: s
                .postures
                .iter()
                .map(|p| (p.device.clone(), p.posture.clone()))
                .collect(),
            verdicts: s
                .verdicts
                .iter()
                .map(|v| (v.session.clone(), v.clone()))
                .collect(),
            blocked: s
                .blocked
                .iter()
                .filter_map(|b| Some((b.address.parse().ok()?, b.until)))
                .collect(),
            keys,
            seq: Some(seq),
            contact: self.clock.now(),
            verified: std::sync::Mutex::new(verified),
            connected: std::sync::atomic::AtomicBool::new(true),
            spa: s
                .spa_devices
                .iter()
                .filter_map(|d| spa_entry(&d.device, &d.user, &d.groups, &d.key))
                .collect(),
        };
        *self.write() = next;
    }

    pub fn apply_event(&self, seq: i64, event: &Event) -> Result<(), ApplyError> {
        let mut g = self.write();
        match g.seq {
            Some(have) if seq == have + 1 => {}
            // Already applied (a replay overlapping the snapshot).
            Some(have) if seq <= have => return Ok(()),
            have => return Err(ApplyError::Gap { have, got: seq }),
        }
        match event {
            Event::SessionRevoked { session } => {
                g.verdicts.remove(session);
                g.sessions.insert(session.clone());
            }
            Event::SourceBlocked { address, until } => {
                if let Ok(ip) = address.parse::<std::net::IpAddr>() {
                    g.blocked.insert(ip.to_canonical(), *until);
                }
            }
            Event::SourceUnblocked { address } => {
                if let Ok(ip) = address.parse::<std::net::IpAddr>() {
                    g.blocked.remove(&ip.to_canonical());
                }
            }
            Event::SessionVerdict(v) => {
                if !g.sessions.contains(&v.session) {
                    g.verdicts.insert(v.session.clone(), v.clone());
                }
            }
            Event::CertificateRevoked { serial } => {
                g.certificates.insert(serial.clone());
            }
            Event::DeviceRevoked { device } => {
                if let Ok(id) = uuid::Uuid::parse_str(device) {
                    g.spa.remove(&id);
                }
                g.postures.remove(device);
                g.devices.insert(device.clone());
            }
            Event::PostureChanged { device, posture } => {
                g.postures.insert(device.clone(), posture.clone());
            }
            // The caller fetches a new snapshot, which carries the policy.
            Event::PolicyChanged { .. } => {}
            Event::DeviceApproved {
                device,
                user,
                groups,
                key,
            } => match spa_entry(device, user, groups, key) {
                Some((id, entry)) => {
                    g.spa.insert(id, entry);
                }
                None => tracing::warn!(%device, "device approved without a usable SPA key"),
            },
            Event::UserSuspended { user } => {
                g.users.insert(user.clone());
            }
            Event::UserResumed { user } => {
                g.users.remove(user);
            }
            Event::GrantChanged { service, grant } => {
                match grant {
                    Some(grant) => g.grants.insert(service.clone(), grant.clone()),
                    None => g.grants.remove(service),
                };
                g.policy = g.policy.with_grants(&g.grants);
            }
            Event::KeysChanged { jwks } => {
                g.keys = keys_from(jwks);
                g.verified
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clear();
            }
            Event::GatewayRevoked { .. } => {}
        }
        g.seq = Some(seq);
        g.contact = self.clock.now();
        g.connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// A heartbeat: the controller is alive and we are at `seq`.
    pub fn touch(&self) {
        let mut g = self.write();
        g.contact = self.clock.now();
        g.connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds until the view goes stale (negative once it has).
    pub fn fresh_for(&self) -> i64 {
        let g = self.read();
        g.contact + self.max_staleness_secs - self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_pki::clock::ManualClock;

    #[test]
    fn stale_until_synced_and_after_silence() {
        let clock = ManualClock::new(1_000);
        let view = View::new(Arc::new(clock.clone()), 30);
        assert!(!view.is_fresh(), "never synced");
        view.apply_snapshot(5, &Snapshot::default());
        assert!(view.is_fresh());
        clock.advance(31);
        assert!(!view.is_fresh(), "silent past the bound");
        view.touch();
        assert!(view.is_fresh());
    }

    #[test]
    fn a_resync_under_the_same_keys_keeps_the_sessions_already_seen() {
        let view = View::new(Arc::new(ManualClock::new(0)), 30);
        view.apply_snapshot(1, &Snapshot::default());
        let claims: SessionClaims = serde_json::from_value(serde_json::json!({
            "iss": "umbra", "sub": "alice", "sid": "s1", "device": "d1",
            "groups": [], "risk": 5, "iat": 0, "nbf": 0, "exp": 100,
            "cnf": { "x5t#S256": "x" }
        }))
        .expect("claims");
        view.read()
            .verified
            .lock()
            .expect("lock")
            .insert([7; 32], claims);
        view.apply_snapshot(2, &Snapshot::default());
        assert!(
            view.read()
                .verified
                .lock()
                .expect("lock")
                .contains_key(&[7; 32]),
            "a periodic resync forgets no session"
        );
    }

    #[test]
    fn events_apply_in_sequence_and_gaps_are_refused() {
        let view = View::new(Arc::new(ManualClock::new(0)), 30);
        let revoke = |s: &str| Event::SessionRevoked { session: s.into() };
        assert!(
            view.apply_event(1, &revoke("a")).is_err(),
            "before a snapshot"
        );
        view.apply_snapshot(10, &Snapshot::default());
        view.apply_event(11, &revoke("a")).expect("next");
        view.apply_event(11, &revoke("a"))
            .expect("duplicate is harmless");
        assert_eq!(
            view.apply_event(13, &revoke("b")),
            Err(ApplyError::Gap {
                have: Some(11),
                got: 13
            })
        );
        assert!(view.read().sessions.contains("a"));
        assert!(!view.read().sessions.contains("b"));
        view.apply_event(12, &Event::UserSuspended { user: "u".into() })
            .expect("next");
        view.apply_event(13, &Event::UserResumed { user: "u".into() })
            .expect("next");
        assert!(view.read().users.is_empty());
    }
}
