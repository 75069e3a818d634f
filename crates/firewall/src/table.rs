//! The in-memory pinhole and block table shared by the userspace, command
//! and fake backends. Pure data with the clock passed in, so expiry is
//! tested without sleeping.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::{BlockedSource, OpenPinhole, PinholeKey, Protected, Protocol};

/// Opens between two sweeps of expired entries: expired entries already
/// deny, sweeping only bounds memory, so it is amortized over many opens.
const SWEEP_EVERY: u32 = 4096;

/// What `open` did, so the command backend knows whether to run a command
/// or only move its close timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    New,
    Extended,
    Unchanged,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    protected: HashSet<Protected>,
    pinholes: HashMap<PinholeKey, Instant>,
    blocked: HashMap<IpAddr, Instant>,
    opens_since_sweep: u32,
}

impl Table {
    pub(crate) fn set_protected(&mut self, ports: &[Protected]) {
        self.protected = ports.iter().copied().collect();
    }

    pub(crate) fn open(&mut self, key: PinholeKey, ttl: Duration, now: Instant) -> Opened {
        self.opens_since_sweep += 1;
        if self.opens_since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        let deadline = now + ttl;
        match self.pinholes.get_mut(&key) {
            Some(d) if *d > now && *d >= deadline => Opened::Unchanged,
            Some(d) if *d > now => {
                *d = deadline;
                Opened::Extended
            }
            _ => {
                self.pinholes.insert(key, deadline);
                Opened::New
            }
        }
    }

    /// Removes the pinhole; true if it was open.
    pub(crate) fn close(&mut self, key: &PinholeKey, now: Instant) -> bool {
        self.pinholes.remove(key).is_some_and(|d| d > now)
    }

    /// Removes `key` only if it still ends at `deadline` (a timer firing
    /// after a re-open must not close the newer pinhole).
    pub(crate) fn expire(&mut self, key: &PinholeKey, deadline: Instant) -> bool {
        if self.pinholes.get(key) == Some(&deadline) {
            self.pinholes.remove(key);
            return true;
        }
        false
    }

    pub(crate) fn deadline(&self, key: &PinholeKey) -> Option<Instant> {
        self.pinholes.get(key).copied()
    }

    pub(crate) fn block_deadline(&self, source: IpAddr) -> Option<Instant> {
        self.blocked.get(&source).copied()
    }

    pub(crate) fn allows(&self, key: &PinholeKey, now: Instant) -> bool {
        if self.is_blocked(key.source, now) {
            return false;
        }
        if !self
            .protected
            .contains(&Protected::new(key.proto, key.port))
        {
            return true;
        }
        self.pinholes.get(key).is_some_and(|d| *d > now)
    }

    pub(crate) fn is_blocked(&self, source: IpAddr, now: Instant) -> bool {
        self.blocked.get(&source).is_some_and(|d| *d > now)
    }

    pub(crate) fn block(&mut self, source: IpAddr, duration: Duration, now: Instant) -> Opened {
        let deadline = now + duration;
        match self.blocked.get_mut(&source) {
            Some(d) if *d > now && *d >= deadline => Opened::Unchanged,
            Some(d) if *d > now => {
                *d = deadline;
                Opened::Extended
            }
            _ => {
                self.blocked.insert(source, deadline);
                Opened::New
            }
        }
    }

    /// As [`Self::expire`], for blocks.
    pub(crate) fn expire_block(&mut self, source: IpAddr, deadline: Instant) -> bool {
        if self.blocked.get(&source) == Some(&deadline) {
            self.blocked.remove(&source);
            return true;
        }
        false
    }

    /// Lifts a block; true if it was in force.
    pub(crate) fn unblock(&mut self, source: IpAddr, now: Instant) -> bool {
        self.blocked.remove(&source).is_some_and(|d| d > now)
    }

    pub(crate) fn list(&self, now: Instant) -> Vec<OpenPinhole> {
        let mut out: Vec<_> = self
            .pinholes
            .iter()
            .filter(|(_, d)| **d > now)
            .map(|(key, d)| OpenPinhole {
                key: *key,
                expires_in: *d - now,
            })
            .collect();
        out.sort_by_key(|p| p.key);
        out
    }

    pub(crate) fn count(&self, now: Instant) -> usize {
        self.pinholes.values().filter(|d| **d > now).count()
    }

    pub(crate) fn blocked(&self, now: Instant) -> Vec<BlockedSource> {
        let mut out: Vec<_> = self
            .blocked
            .iter()
            .filter(|(_, d)| **d > now)
            .map(|(source, d)| BlockedSource {
                source: *source,
                expires_in: *d - now,
            })
            .collect();
        out.sort_by_key(|b| b.source);
        out
    }

    /// Takes every entry out (shutdown), live or not.
    pub(crate) fn drain(&mut self) -> (Vec<PinholeKey>, Vec<IpAddr>) {
        (
            self.pinholes.drain().map(|(k, _)| k).collect(),
            self.blocked.drain().map(|(s, _)| s).collect(),
        )
    }

    pub(crate) fn sweep(&mut self, now: Instant) {
        self.opens_since_sweep = 0;
        self.pinholes.retain(|_, d| *d > now);
        self.blocked.retain(|_, d| *d > now);
    }
}

/// Convenience for building a key inside `allows` implementations.
pub(crate) fn key(source: IpAddr, proto: Protocol, port: u16) -> PinholeKey {
    PinholeKey::new(source, proto, port)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn k(port: u16) -> PinholeKey {
        key("10.0.0.1".parse().unwrap(), Protocol::Tcp, port)
    }

    #[test]
    fn reopen_keeps_the_later_deadline() {
        let t0 = Instant::now();
        let mut t = Table::default();
        assert_eq!(t.open(k(22), Duration::from_secs(10), t0), Opened::New);
        assert_eq!(t.open(k(22), Duration::from_secs(5), t0), Opened::Unchanged);
        assert_eq!(t.open(k(22), Duration::from_secs(20), t0), Opened::Extended);
        assert_eq!(t.list(t0)[0].expires_in, Duration::from_secs(20));
        // After expiry the same key counts as new again.
        assert_eq!(
            t.open(k(22), Duration::from_secs(1), t0 + Duration::from_secs(30)),
            Opened::New
        );
    }

    #[test]
    fn only_protected_ports_need_a_pinhole() {
        let t0 = Instant::now();
        let mut t = Table::default();
        t.set_protected(&[Protected::new(Protocol::Tcp, 22)]);
        assert!(!t.allows(&k(22), t0));
        assert!(t.allows(&k(80), t0));
        t.open(k(22), Duration::from_secs(3), t0);
        assert!(t.allows(&k(22), t0 + Duration::from_secs(2)));
        assert!(!t.allows(&k(22), t0 + Duration::from_secs(3)));
    }

    #[test]
    fn a_block_beats_a_pinhole_and_expires() {
        let t0 = Instant::now();
        let mut t = Table::default();
        t.set_protected(&[Protected::new(Protocol::Tcp, 22)]);
        t.open(k(22), Duration::from_secs(60), t0);
        t.block(k(22).source, Duration::from_secs(10), t0);
        assert!(!t.allows(&k(22), t0));
        assert!(!t.allows(&k(80), t0));
        assert!(t.allows(&k(22), t0 + Duration::from_secs(10)));
        assert_eq!(t.blocked(t0).len(), 1);
        assert!(t.unblock(k(22).source, t0));
    }

    #[test]
    fn expire_ignores_a_reopened_pinhole() {
        let t0 = Instant::now();
        let mut t = Table::default();
        t.open(k(22), Duration::from_secs(1), t0);
        let first = t.deadline(&k(22)).unwrap();
        t.open(k(22), Duration::from_secs(9), t0);
        assert!(!t.expire(&k(22), first));
        assert_eq!(t.count(t0), 1);
    }

    #[test]
    fn sweep_bounds_memory() {
        let t0 = Instant::now();
        let mut t = Table::default();
        t.open(k(1), Duration::from_secs(1), t0);
        t.block(k(1).source, Duration::from_secs(1), t0);
        t.sweep(t0 + Duration::from_secs(2));
        assert!(t.pinholes.is_empty() && t.blocked.is_empty());
    }
}
