//! Per-source rate limiting: token buckets keyed by address, in a table of
//! bounded size, with injected time.
//!
//! Runs before any key lookup or crypto so one source cannot make the
//! gateway spend unbounded CPU. IPv6 sources are keyed by their /64: a
//! single host usually controls a whole /64, so per-address buckets would
//! give it 2^64 of them. IPv4-mapped IPv6 addresses count as IPv4.
//!
//! The table is bounded. A bucket that has refilled completely is the same
//! as no bucket, so full tables first drop those (at most one sweep per
//! second). If every bucket is still in use — a flood from many (likely
//! spoofed) sources — an arbitrary entry is evicted: the newcomer gets a
//! fresh bucket. Refusing newcomers instead would let a spoofing attacker
//! lock every legitimate client out; evicting only hands a flooder a bucket
//! it could have had from another address anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::window::unix_millis;

/// Token-bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Packets a source may send at once (bucket size).
    pub burst: u32,
    /// Sustained packets per second (refill rate).
    pub per_second: u32,
    /// Most sources tracked at once (memory bound: ~48 bytes each).
    pub max_sources: usize,
}

impl Default for RateLimitConfig {
    /// 20 at once, 10/s sustained, 65,536 sources: far above what a human
    /// knocking needs, far below what costs the gateway anything.
    fn default() -> Self {
        Self {
            burst: 20,
            per_second: 10,
            max_sources: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token, so refill is exact at millisecond steps.
    milli_tokens: u64,
    updated_ms: u64,
}

/// The per-source limiter.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep_s: Option<u64>,
}

impl RateLimiter {
    /// A limiter with room for `config.max_sources` reserved up front, so
    /// the hot path does not allocate.
    pub fn new(config: RateLimitConfig) -> Self {
        let config = RateLimitConfig {
            max_sources: config.max_sources.max(1),
            ..config
        };
        Self {
            config,
            buckets: HashMap::with_capacity(config.max_sources),
            last_sweep_s: None,
        }
    }

    /// Take one token for `source` at `now`; `false` means over the limit.
    pub fn allow(&mut self, source: IpAddr, now: SystemTime) -> bool {
        let key = bucket_key(source);
        let now_ms = unix_millis(now);
        let cap = u64::from(self.config.burst) * 1000;
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.config.max_sources {
            self.make_room(now_ms, cap);
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            milli_tokens: cap,
            updated_ms: now_ms,
        });
        // Time going backwards (clock step) refills nothing.
        let elapsed = now_ms.saturating_sub(bucket.updated_ms);
        let refill = elapsed.saturating_mul(u64::from(self.config.per_second));
        bucket.milli_tokens = bucket.milli_tokens.saturating_add(refill).min(cap);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Number of sources tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn make_room(&mut self, now_ms: u64, cap: u64) {
        let now_s = now_ms / 1000;
        if self.last_sweep_s != Some(now_s) {
            self.last_sweep_s = Some(now_s);
            let rate = u64::from(self.config.per_second);
            self.buckets.retain(|_, b| {
                let refill = now_ms.saturating_sub(b.updated_ms).saturating_mul(rate);
                b.milli_tokens.saturating_add(refill) < cap
            });
        }
        if self.buckets.len() >= self.config.max_sources
            && let Some(victim) = self.buckets.keys().next().copied()
        {
            self.buckets.remove(&victim);
        }
    }
}

/// IPv4 as is (mapped addresses unwrapped); IPv6 truncated to its /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::window::from_unix_secs;
    use std::time::Duration;

    fn limiter(burst: u32, per_second: u32, max_sources: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            burst,
            per_second,
            max_sources,
        })
    }

    #[test]
    fn burst_then_refill() {
        let mut l = limiter(3, 2, 16);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = from_unix_secs(1000);
        assert!((0..3).all(|_| l.allow(ip, t)));
        assert!(!l.allow(ip, t));
        // 2 tokens/s: one token after 500 ms.
        assert!(l.allow(ip, t + Duration::from_millis(500)));
        assert!(!l.allow(ip, t + Duration::from_millis(600)));
        // Other sources are independent.
        assert!(l.allow("192.0.2.2".parse().unwrap(), t));
    }

    #[test]
    fn ipv6_keyed_by_slash_64_and_mapped_v4_by_v4() {
        let mut l = limiter(1, 1, 16);
        let t = from_unix_secs(1000);
        assert!(l.allow("2001:db8::1".parse().unwrap(), t));
        assert!(!l.allow("2001:db8::2".parse().unwrap(), t));
        assert!(l.allow("2001:db8:0:1::1".parse().unwrap(), t));
        assert!(l.allow("198.51.100.7".parse().unwrap(), t));
        assert!(!l.allow("::ffff:198.51.100.7".parse().unwrap(), t));
    }

    #[test]
    fn table_stays_bounded_and_newcomers_get_in() {
        let mut l = limiter(1, 1, 8);
        let t = from_unix_secs(1000);
        for i in 0..100u8 {
            assert!(l.allow(IpAddr::from([10, 0, 0, i]), t), "newcomer {i}");
            assert!(l.tracked() <= 8);
        }
    }

    #[test]
    fn clock_going_backwards_does_not_refill() {
        let mut l = limiter(1, 1, 8);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(l.allow(ip, from_unix_secs(1000)));
        assert!(!l.allow(ip, from_unix_secs(990)));
        assert!(!l.allow(ip, from_unix_secs(1000)));
        assert!(l.allow(ip, from_unix_secs(1001)));
    }
}
