//! Replay cache bounded in memory (capacity) and time (expiry).
//!
//! An entry only needs to live as long as the packet it remembers could
//! still pass the timestamp window; after that the window check refuses the
//! replay on its own. So each entry carries an expiry (unix seconds) and is
//! dropped once it passes. Restarts are covered by the start-up rule
//! ([`crate::window::check_startup`]), so nothing is persisted.
//!
//! When the cache is full of live entries it **fails closed**: the packet is
//! refused ([`Refusal::ReplayCacheFull`]) rather than accepted unremembered.
//! Size it as at least `peak accepted knocks/s × 2 × window`.

use std::collections::HashMap;
use std::hash::Hash;

use crate::Refusal;

/// Remembered packet identifiers (`K`: native `(device, nonce)`, fwknop
/// SHA-256 of the payload) with their expiry time.
#[derive(Debug)]
pub struct ReplayCache<K> {
    // SipHash with a per-process random key: identifiers are peer-chosen
    // bytes, so the map must resist hash flooding.
    entries: HashMap<K, u64>,
    capacity: usize,
    last_sweep: Option<u64>,
}

impl<K: Hash + Eq> ReplayCache<K> {
    /// A cache holding at most `capacity` live entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            last_sweep: None,
        }
    }

    /// Whether `key` was recorded and has not expired at `now`.
    pub fn contains(&self, key: &K, now: u64) -> bool {
        self.entries.get(key).is_some_and(|&exp| exp > now)
    }

    /// Record `key` until `expires` (unix seconds). Refuses a live duplicate
    /// ([`Refusal::Replay`]) and a full cache ([`Refusal::ReplayCacheFull`]).
    pub fn insert(&mut self, key: K, expires: u64, now: u64) -> Result<(), Refusal> {
        if self.contains(&key, now) {
            return Err(Refusal::Replay);
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.sweep(now);
            if self.entries.len() >= self.capacity {
                return Err(Refusal::ReplayCacheFull);
            }
        }
        self.entries.insert(key, expires);
        Ok(())
    }

    /// Number of entries held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drop expired entries. Sweeping is O(n), so a full cache under attack
    /// sweeps at most once per second instead of once per packet.
    fn sweep(&mut self, now: u64) {
        if self.last_sweep == Some(now) {
            return;
        }
        self.last_sweep = Some(now);
        self.entries.retain(|_, exp| *exp > now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn duplicate_is_replay_until_expiry() {
        let mut c = ReplayCache::new(4);
        assert!(c.insert(1u32, 130, 100).is_ok());
        assert_eq!(c.insert(1, 130, 110), Err(Refusal::Replay));
        assert!(c.contains(&1, 129));
        assert!(!c.contains(&1, 130));
        // Expired: the window check would refuse it anyway; the slot is reusable.
        assert!(c.insert(1, 160, 130).is_ok());
    }

    #[test]
    fn full_cache_fails_closed_then_recovers_after_expiry() {
        let mut c = ReplayCache::new(2);
        c.insert(1u32, 110, 100).unwrap();
        c.insert(2, 120, 100).unwrap();
        assert_eq!(c.insert(3, 130, 100), Err(Refusal::ReplayCacheFull));
        assert_eq!(c.len(), 2);
        // At 110 the first entry has expired and is swept.
        assert!(c.insert(3, 140, 110).is_ok());
        assert!(c.contains(&2, 110));
        assert!(!c.contains(&1, 110));
    }

    #[test]
    fn zero_capacity_is_clamped() {
        let mut c = ReplayCache::new(0);
        assert!(c.insert(1u8, 10, 0).is_ok());
        assert!(!c.is_empty());
    }
}
