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
//!
//! The device's posture adds at most 30 (seed 003 weighs the device at 0.3):
//!
//! | signal                                  | failed | unknown |
//! |-----------------------------------------|--------|---------|
//! | disk encryption                         | 10     | 5       |
//! | antivirus                               | 10     | 5       |
//! | firewall (default-deny input)           | 5      | 3       |
//! | patches within 30 days                  | 10     | 5       |
//! | antivirus signatures within 7 days      | 5      | 3       |
//! | a scan within 30 days                   | 5      | 3       |
//!
//! "Unknown" exists only in reports with `measured` (see
//! [`umbra_proto::posture`]); patch and signature age are scored only
//! there. A report without it is scored on its booleans as before, where
//! `false` and an empty scan time cost the full weight.

use umbra_proto::PostureReport;

pub mod engine;
pub use engine::{AccessEvent, Baseline, RiskEngineConfig, RiskSignals, RiskWeights};

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
/// 0.3 of the total; the posture items share that, and together they never
/// add more than [`MAX_DEVICE_WEIGHT`].
pub const WEIGHT_NO_DISK_ENCRYPTION: u8 = 10;
pub const WEIGHT_NO_ANTIVIRUS: u8 = 10;
pub const WEIGHT_NO_FIREWALL: u8 = 5;
pub const WEIGHT_STALE_SCAN: u8 = 5;
/// Patches older than [`MAX_PATCH_AGE_SECS`] (measured reports only).
pub const WEIGHT_STALE_PATCHES: u8 = 10;
/// Antivirus signatures older than [`MAX_AV_SIGNATURE_AGE_SECS`].
pub const WEIGHT_STALE_AV_SIGNATURES: u8 = 5;
pub const WEIGHT_PER_FAILURE: u8 = 5;
/// The device's share of the score (seed 003: 0.3 of the total).
pub const MAX_DEVICE_WEIGHT: u8 = 30;
/// A scan older than this (seed 000's standard policy: 30 days) is stale.
pub const MAX_SCAN_AGE_SECS: i64 = 30 * 86400;
/// Seed 000's standard policy: `max_patch_age_days: 30`.
pub const MAX_PATCH_AGE_SECS: i64 = 30 * 86400;
/// ClamAV publishes signatures several times a day; a week without an
/// update means the updater is broken.
pub const MAX_AV_SIGNATURE_AGE_SECS: i64 = 7 * 86400;

/// What a check the agent could not answer costs: half of failing it,
/// rounded up. Unknown is riskier than a pass (nothing vouches for the
/// device) but it is not a failure either: an unprivileged agent cannot read
/// the firewall, and scoring that as "firewall disabled" would push every
/// such device into step-up for a fact nobody observed. The reason names
/// stay distinct (`*_unknown`), so the audit trail shows which it was.
pub const fn unknown_weight(weight: u8) -> u8 {
    weight.div_ceil(2)
}

/// Scores a login and says which signals contributed, for the audit trail.
pub fn login_risk(s: &LoginSignals<'_>) -> (u8, Vec<&'static str>) {
    let mut reasons = Vec::new();
    let device = device_risk(s, &mut reasons).min(u32::from(MAX_DEVICE_WEIGHT));
    let failures = s.recent_failures.min(4);
    if failures > 0 {
        reasons.push("recent_failed_logins");
    }
    let score = device + failures * u32::from(WEIGHT_PER_FAILURE);
    (u8::try_from(score.min(100)).unwrap_or(100), reasons)
}

/// The posture's part of the score, before the cap; pushes its reasons.
fn device_risk(s: &LoginSignals<'_>, reasons: &mut Vec<&'static str>) -> u32 {
    let p = s.posture;
    // Times are the peer's claims: saturate rather than overflow on absurd
    // ones (a time far in the future just counts as fresh).
    let fresh = |t: i64, max_age: i64| s.now.saturating_sub(t) <= max_age;
    let scan_age_ok = s.last_scan.map(|t| fresh(t, MAX_SCAN_AGE_SECS));
    let costs = match &p.measured {
        // A report without measurements has only the seed's booleans, where
        // `false` covers both "failed" and "could not tell", and an empty or
        // unparseable scan time the same: all scored as failed, as always.
        None => [
            failed_if(
                !p.disk_encryption,
                WEIGHT_NO_DISK_ENCRYPTION,
                "disk_not_encrypted",
            ),
            failed_if(
                !p.antivirus_status,
                WEIGHT_NO_ANTIVIRUS,
                "antivirus_inactive",
            ),
            failed_if(!p.firewall_enabled, WEIGHT_NO_FIREWALL, "firewall_disabled"),
            None,
            None,
            failed_if(
                scan_age_ok != Some(true),
                WEIGHT_STALE_SCAN,
                "scan_stale_or_unknown",
            ),
        ],
        Some(m) => [
            tri_state(
                m.disk_encryption,
                WEIGHT_NO_DISK_ENCRYPTION,
                "disk_not_encrypted",
                "disk_encryption_unknown",
            ),
            tri_state(
                m.antivirus,
                WEIGHT_NO_ANTIVIRUS,
                "antivirus_inactive",
                "antivirus_unknown",
            ),
            tri_state(
                m.firewall,
                WEIGHT_NO_FIREWALL,
                "firewall_disabled",
                "firewall_unknown",
            ),
            tri_state(
                m.last_patch_unix.map(|t| fresh(t, MAX_PATCH_AGE_SECS)),
                WEIGHT_STALE_PATCHES,
                "patches_stale",
                "patch_age_unknown",
            ),
            // Signature age matters only for an engine that is there; a
            // missing or unknown engine is counted above.
            if m.antivirus == Some(true) {
                tri_state(
                    m.av_signatures_unix
                        .map(|t| fresh(t, MAX_AV_SIGNATURE_AGE_SECS)),
                    WEIGHT_STALE_AV_SIGNATURES,
                    "av_signatures_stale",
                    "av_signatures_unknown",
                )
            } else {
                None
            },
            // A measuring agent leaves `last_scan` empty when it found no
            // scan record: unknown, not stale.
            tri_state(scan_age_ok, WEIGHT_STALE_SCAN, "scan_stale", "scan_unknown"),
        ],
    };
    costs
        .into_iter()
        .flatten()
        .map(|(weight, why)| {
            reasons.push(why);
            u32::from(weight)
        })
        .sum()
}

fn failed_if(failed: bool, weight: u8, why: &'static str) -> Option<(u8, &'static str)> {
    failed.then_some((weight, why))
}

/// A check that passed (`Some(true)`) costs nothing, one that failed costs
/// its weight, and one nobody could answer costs [`unknown_weight`].
fn tri_state(
    passed: Option<bool>,
    weight: u8,
    failed: &'static str,
    unknown: &'static str,
) -> Option<(u8, &'static str)> {
    match passed {
        Some(true) => None,
        Some(false) => Some((weight, failed)),
        None => Some((unknown_weight(weight), unknown)),
    }
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
            measured: None,
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

    const NOW: i64 = 100 * 86400;

    /// A measured report whose checks are all `state`, patched and updated
    /// `age_days` before [`NOW`].
    fn measured(state: Option<bool>, age_days: Option<i64>) -> PostureReport {
        let at = age_days.map(|d| NOW - d * 86400);
        let mut p = posture(state == Some(true));
        p.measured = Some(umbra_proto::posture::MeasuredPosture {
            os_id: Some("debian".into()),
            kernel: None,
            last_patch_unix: at,
            disk_encryption: state,
            firewall: state,
            antivirus: state,
            av_signatures_unix: at,
        });
        p
    }

    fn score(p: &PostureReport, last_scan: Option<i64>) -> (u8, Vec<&'static str>) {
        login_risk(&LoginSignals {
            posture: p,
            last_scan,
            now: NOW,
            recent_failures: 0,
        })
    }

    #[test]
    fn a_measured_healthy_device_scores_zero() {
        let p = measured(Some(true), Some(1));
        assert_eq!(score(&p, Some(NOW - 86400)), (0, vec![]));
    }

    #[test]
    fn unknown_costs_more_than_a_pass_and_less_than_a_failure() {
        let scan = Some(NOW - 86400);
        let (passed, _) = score(&measured(Some(true), Some(1)), scan);
        let (unknown, why) = score(&measured(None, None), scan);
        let (failed, _) = score(&measured(Some(false), Some(90)), scan);
        assert!(
            passed < unknown && unknown < failed,
            "{passed} {unknown} {failed}"
        );
        // Antivirus unknown: its signature age is not scored on top.
        assert_eq!(unknown, 5 + 5 + 3 + 5);
        assert_eq!(
            why,
            [
                "disk_encryption_unknown",
                "antivirus_unknown",
                "firewall_unknown",
                "patch_age_unknown"
            ]
        );
    }

    #[test]
    fn an_unknown_scan_in_a_measured_report_is_not_called_stale() {
        let p = measured(Some(true), Some(1));
        assert_eq!(score(&p, None), (3, vec!["scan_unknown"]));
        assert_eq!(score(&p, Some(0)), (5, vec!["scan_stale"]));
    }

    #[test]
    fn stale_patches_and_signatures_count_for_a_device_that_passes_the_rest() {
        let p = measured(Some(true), Some(MAX_PATCH_AGE_SECS / 86400 + 1));
        let (s, why) = score(&p, Some(NOW - 86400));
        assert_eq!(s, WEIGHT_STALE_PATCHES + WEIGHT_STALE_AV_SIGNATURES);
        assert_eq!(why, ["patches_stale", "av_signatures_stale"]);
        let p = measured(Some(true), Some(MAX_AV_SIGNATURE_AGE_SECS / 86400 + 1));
        assert_eq!(score(&p, Some(NOW - 86400)).1, ["av_signatures_stale"]);
    }

    #[test]
    fn the_device_never_adds_more_than_its_share() {
        let p = measured(Some(false), Some(365));
        let (s, why) = score(&p, None);
        assert_eq!(s, MAX_DEVICE_WEIGHT);
        assert_eq!(why.len(), 5, "{why:?}");
        let (s, _) = login_risk(&LoginSignals {
            posture: &p,
            last_scan: None,
            now: 0,
            recent_failures: 2,
        });
        assert_eq!(s, MAX_DEVICE_WEIGHT + 2 * WEIGHT_PER_FAILURE);
    }

    #[test]
    fn absurd_times_do_not_overflow() {
        let mut p = measured(Some(true), None);
        if let Some(m) = p.measured.as_mut() {
            m.last_patch_unix = Some(i64::MIN);
            m.av_signatures_unix = Some(i64::MAX);
        }
        let (s, why) = score(&p, Some(i64::MIN));
        assert_eq!(why, ["patches_stale", "scan_stale"]);
        assert_eq!(s, WEIGHT_STALE_PATCHES + WEIGHT_STALE_SCAN);
    }

    #[test]
    fn a_legacy_report_scores_as_it_always_did() {
        // Empty scan time and false booleans: the full weights, no "unknown".
        let (s, why) = score(&posture(false), None);
        assert_eq!(s, 30);
        assert_eq!(
            why,
            [
                "disk_not_encrypted",
                "antivirus_inactive",
                "firewall_disabled",
                "scan_stale_or_unknown"
            ]
        );
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
