//! Per-source-IP token buckets for login attempts.
//!
//! Cheap and in memory: it slows password spraying from one address before
//! any argon2 work is done. Account lockout (in the store) is what stops a
//! distributed guesser. The table is bounded: when full, idle buckets are
//! dropped first, and a full table of busy attackers refuses new addresses
//! (fail closed) rather than growing without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            burst: f64::from(burst),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `ip` at `now`; `Err(retry_after_secs)` if none.
    pub fn check(&self, ip: IpAddr, now: i64) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let (rate, burst) = (self.per_minute, self.burst);
            buckets.retain(|_, b| refill(b.tokens, b.updated, now, rate, burst) < burst);
            if buckets.len() >= MAX_TRACKED {
                return Err(60);
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        b.tokens = refill(b.tokens, b.updated, now, self.per_minute, self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) * 60.0 / self.per_minute;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

fn refill(tokens: f64, updated: i64, now: i64, per_minute: f64, burst: f64) -> f64 {
    let elapsed = (now - updated).max(0) as f64;
    (tokens + elapsed * per_minute / 60.0).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_address() {
        let rl = RateLimiter::new(60, 3);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(rl.check(a, 100).is_ok());
        }
        assert_eq!(rl.check(a, 100), Err(1));
        assert!(rl.check(b, 100).is_ok(), "other addresses are unaffected");
        assert!(rl.check(a, 101).is_ok(), "one token per second at 60/min");
        assert!(rl.check(a, 101).is_err());
    }
}
