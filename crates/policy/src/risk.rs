//! The one risk scale: an integer 0–100 (seed 003's 0–1 scores × 100).
//!
//! | score | outcome                                   | session |
//! |-------|-------------------------------------------|---------|
//! | < 30  | allow                                     | 3600 s  |
//! | 30–49 | allow after step-up MFA                   | 1800 s  |
//! | 50–69 | + device re-verification, detailed audit  | 1800 s  |
//! | 70–79 | + low-sensitivity resources only          |  900 s  |
//! | 80–94 | deny new access                           |   —     |
//! | ≥ 95  | terminate live sessions                   |   —     |

use umbra_proto::PostureReport;

/// Thresholds and session lengths; the defaults are the table above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskBands {
    pub step_up: u8,
    pub reverify: u8,
    pub restricted: u8,
    pub deny: u8,
    pub terminate: u8,
    pub session_low_secs: u32,
    pub session_medium_secs: u32,
    pub session_high_secs: u32,
}

impl Default for RiskBands {
    fn default() -> Self {
        Self {
            step_up: 30,
            reverify: 50,
            restricted: 70,
            deny: 80,
            terminate: 95,
            session_low_secs: 3600,
            session_medium_secs: 1800,
            session_high_secs: 900,
        }
    }
}

impl RiskBands {
    /// Session lifetime for a score, or `None` when new access is denied.
    pub fn session_lifetime(&self, score: u8) -> Option<u32> {
        match score {
            s if s >= self.deny => None,
            s if s >= self.restricted => Some(self.session_high_secs),
            s if s >= self.step_up => Some(self.session_medium_secs),
            _ => Some(self.session_low_secs),
        }
    }
}

/// What the controller knows at login time.
#[derive(Clone, Debug)]
pub struct LoginSignals<'a> {
    pub posture: &'a PostureReport,
    /// Unix time of the posture report's `last_scan`, if it parsed.
    pub last_scan: Option<i64>,
    pub now: i64,
    /// Failed attempts since the last success.
    pub recent_failures: u32,
}

/// Weights of each signal, on the 0–100 scale. Seed 003 weighs the device at
/// 0.3 of the total; the posture items share that.
pub const WEIGHT_NO_DISK_ENCRYPTION: u8 = 10;
pub const WEIGHT_NO_ANTIVIRUS: u8 = 10;
pub const WEIGHT_NO_FIREWALL: u8 = 5;
pub const WEIGHT_STALE_SCAN: u8 = 5;
pub const WEIGHT_PER_FAILURE: u8 = 5;
/// A scan older than this (seed 000's standard policy: 30 days) is stale.
pub const MAX_SCAN_AGE_SECS: i64 = 30 * 86400;

/// Scores a login and says which signals contributed, for the audit trail.
pub fn login_risk(s: &LoginSignals<'_>) -> (u8, Vec<&'static str>) {
    let mut score: u32 = 0;
    let mut reasons = Vec::new();
    let mut add = |cond: bool, weight: u8, why: &'static str| {
        if cond {
            score += u32::from(weight);
            reasons.push(why);
        }
    };
    add(
        !s.posture.disk_encryption,
        WEIGHT_NO_DISK_ENCRYPTION,
        "disk_not_encrypted",
    );
    add(
        !s.posture.antivirus_status,
        WEIGHT_NO_ANTIVIRUS,
        "antivirus_inactive",
    );
    add(
        !s.posture.firewall_enabled,
        WEIGHT_NO_FIREWALL,
        "firewall_disabled",
    );
    let stale = s.last_scan.is_none_or(|t| s.now - t > MAX_SCAN_AGE_SECS);
    add(stale, WEIGHT_STALE_SCAN, "scan_stale_or_unknown");
    let failures = s.recent_failures.min(4);
    if failures > 0 {
        score += failures * u32::from(WEIGHT_PER_FAILURE);
        reasons.push("recent_failed_logins");
    }
    (u8::try_from(score.min(100)).unwrap_or(100), reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posture(ok: bool) -> PostureReport {
        PostureReport {
            device_id: "d".into(),
            hostname: "h".into(),
            os_version: "1".into(),
            patch_level: "p".into(),
            antivirus_status: ok,
            firewall_enabled: ok,
            disk_encryption: ok,
            last_scan: String::new(),
        }
    }

    #[test]
    fn healthy_device_scores_zero_and_gets_an_hour() {
        let p = posture(true);
        let (score, why) = login_risk(&LoginSignals {
            posture: &p,
            last_scan: Some(99),
            now: 100,
            recent_failures: 0,
        });
        assert_eq!((score, why.len()), (0, 0));
        assert_eq!(RiskBands::default().session_lifetime(score), Some(3600));
    }

    #[test]
    fn weak_posture_and_failures_add_up() {
        let p = posture(false);
        let (score, why) = login_risk(&LoginSignals {
            posture: &p,
            last_scan: None,
            now: 100,
            recent_failures: 9,
        });
        assert_eq!(score, 10 + 10 + 5 + 5 + 20);
        assert_eq!(why.len(), 5);
        assert_eq!(RiskBands::default().session_lifetime(score), Some(1800));
    }

    #[test]
    fn bands_match_the_design_table() {
        let b = RiskBands::default();
        let got: Vec<_> = [0, 29, 30, 49, 50, 69, 70, 79, 80, 94, 95, 100]
            .iter()
            .map(|&s| b.session_lifetime(s))
            .collect();
        let s = Some;
        assert_eq!(
            got,
            [
                s(3600),
                s(3600),
                s(1800),
                s(1800),
                s(1800),
                s(1800),
                s(900),
                s(900),
                None,
                None,
                None,
                None
            ]
        );
    }
}
