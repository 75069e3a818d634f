//! Time as the verifiers see it: injected, never read from a clock here.
//!
//! Every verification takes `now` as a [`SystemTime`] so tests are
//! deterministic and the gateway decides which clock to trust. Timestamps
//! inside packets are unix seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Refusal;

/// Whole unix seconds of `t` (0 for times before the epoch: a clock that
/// far off refuses everything, which is the safe failure).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix milliseconds of `t`, for the rate limiter's finer refill.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `SystemTime` for unix seconds (tests and callers holding integers).
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Symmetric window check: `timestamp` must be within `window` seconds of
/// `now`, in either direction (a client clock ahead of ours is as suspect
/// as one behind).
pub fn check_window(timestamp: u64, now: u64, window: u64) -> Result<(), Refusal> {
    if timestamp <= now {
        let age = now - timestamp;
        if age > window {
            return Err(Refusal::Stale { age, window });
        }
    } else {
        let ahead = timestamp - now;
        if ahead > window {
            return Err(Refusal::Future { ahead, window });
        }
    }
    Ok(())
}

/// The start-up rule that makes an in-memory replay cache survive restarts:
/// a packet stamped before this verifier started may have been accepted by
/// the previous process, whose cache is gone, so it is refused.
pub fn check_startup(timestamp: u64, started: u64) -> Result<(), Refusal> {
    if timestamp < started {
        return Err(Refusal::BeforeStartup { timestamp, started });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn window_is_symmetric_and_inclusive() {
        assert!(check_window(1000, 1030, 30).is_ok());
        assert!(check_window(1030, 1000, 30).is_ok());
        assert_eq!(
            check_window(1000, 1031, 30),
            Err(Refusal::Stale {
                age: 31,
                window: 30
            })
        );
        assert_eq!(
            check_window(1031, 1000, 30),
            Err(Refusal::Future {
                ahead: 31,
                window: 30
            })
        );
    }

    #[test]
    fn startup_rule() {
        assert!(check_startup(100, 100).is_ok());
        assert!(matches!(
            check_startup(99, 100),
            Err(Refusal::BeforeStartup { .. })
        ));
    }

    #[test]
    fn conversions() {
        assert_eq!(unix_secs(from_unix_secs(42)), 42);
        assert_eq!(unix_millis(from_unix_secs(2)), 2000);
    }
}
