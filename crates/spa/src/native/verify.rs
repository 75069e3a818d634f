//! The gateway side: [`Verifier`] turns a datagram into a decision.
//!
//! Order of checks, cheapest first, so garbage costs almost nothing and no
//! single source can make us do expensive work at line rate:
//! 1. length, magic, version (no state, no key);
//! 2. per-source rate limit;
//! 3. key lookup by device id: unknown devices are refused before crypto;
//! 4. replay lookup by (device, nonce) — read only; a forged packet can't
//!    insert anything;
//! 5. ChaCha20-Poly1305 open with the header as associated data;
//! 6. start-up rule and timestamp window;
//! 7. record (device, nonce) in the replay cache;
//! 8. resolve the address to open (must be the source unless configured).

use std::net::IpAddr;
use std::time::SystemTime;

use uuid::Uuid;

use super::wire::{open_with_header, peek_header};
use super::{KeyLookup, NONCE_LEN, OpenAddr};
use crate::window::{check_startup, check_window, unix_secs};
use crate::{RateLimitConfig, RateLimiter, Refusal, ReplayCache};

/// Verifier settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Accepted clock difference in seconds, in both directions. Default 30.
    pub window_secs: u64,
    /// Most packets remembered for replay detection. Default 262,144
    /// (covers ~4,300 accepted knocks/s with a 30 s window).
    pub replay_capacity: usize,
    /// Per-source token buckets.
    pub rate_limit: RateLimitConfig,
    /// Let a knock open an address other than its own source. Off by
    /// default: a captured packet replayed from elsewhere is then useless,
    /// and a device cannot open a hole for a third party.
    pub allow_other_address: bool,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            window_secs: 30,
            replay_capacity: 1 << 18,
            rate_limit: RateLimitConfig::default(),
            allow_other_address: false,
        }
    }
}

/// An accepted knock: open `open` for `device`'s `services`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated device.
    pub device: Uuid,
    /// Requested service names (the gateway still checks policy).
    pub services: Vec<String>,
    /// The resolved address to open (never "source": already resolved).
    pub open: IpAddr,
    /// The packet's timestamp (unix seconds).
    pub timestamp: u64,
    /// The packet's nonce (for the audit record).
    pub nonce: [u8; NONCE_LEN],
}

/// Stateful native-SPA verifier: config, replay cache and rate limiter.
/// One per gateway listener; not shared between threads (shard per core).
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    started: u64,
    replay: ReplayCache<[u8; 16 + NONCE_LEN]>,
    limiter: RateLimiter,
}

impl Verifier {
    /// A verifier whose process started at `started_at`: packets stamped
    /// earlier are refused, since a previous process may have accepted them.
    pub fn new(config: VerifierConfig, started_at: SystemTime) -> Self {
        Self {
            replay: ReplayCache::new(config.replay_capacity),
            limiter: RateLimiter::new(config.rate_limit),
            started: unix_secs(started_at),
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Decide on one datagram from `source`, received at `now`.
    pub fn verify<K: KeyLookup + ?Sized>(
        &mut self,
        packet: &[u8],
        source: IpAddr,
        now: SystemTime,
        keys: &K,
    ) -> Result<Verified, Refusal> {
        let header = peek_header(packet)?;
        if !self.limiter.allow(source, now) {
            return Err(Refusal::RateLimited(source));
        }
        let key = keys
            .native_key(&header.device)
            .ok_or(Refusal::UnknownDevice(header.device))?;
        let now_s = unix_secs(now);
        let mut replay_id = [0u8; 16 + NONCE_LEN];
        replay_id[..16].copy_from_slice(header.device.as_bytes());
        replay_id[16..].copy_from_slice(&header.nonce);
        if self.replay.contains(&replay_id, now_s) {
            return Err(Refusal::Replay);
        }
        let knock = open_with_header(packet, &header, &key)?;
        check_startup(knock.timestamp, self.started)?;
        check_window(knock.timestamp, now_s, self.config.window_secs)?;
        // Remember it until it would be stale anyway.
        let expires = knock
            .timestamp
            .saturating_add(self.config.window_secs)
            .saturating_add(1);
        self.replay.insert(replay_id, expires, now_s)?;
        let open = match knock.open {
            OpenAddr::Source => source,
            OpenAddr::Addr(requested) => {
                if !self.config.allow_other_address && !same_host(requested, source) {
                    return Err(Refusal::AddressMismatch {
                        requested,
                        from: source,
                    });
                }
                requested
            }
        };
        Ok(Verified {
            device: knock.device,
            services: knock.services,
            open,
            timestamp: knock.timestamp,
            nonce: knock.nonce,
        })
    }
}

/// Equal addresses, treating `::ffff:a.b.c.d` as `a.b.c.d` (dual-stack
/// sockets report IPv4 peers that way).
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[path = "verify_tests.rs"]
mod tests;
