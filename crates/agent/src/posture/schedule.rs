//! When to send posture again: as soon as it changes, and at least every
//! [`RESEND_EVERY_SECS`] so the controller can tell a quiet device from a
//! silent one.
//!
//! The last report the controller acknowledged is kept in the agent
//! directory as `posture.json`, with the [`Posture`] it came from. Changes
//! are judged on the `Posture`, not the wire report: it holds times rather
//! than ages, so it is equal from one collection to the next unless the
//! device changed. A missing or unreadable `posture.json` means "never
//! sent": sending again is always safe, never sending is not.
//!
//! Use: every [`COLLECT_EVERY_SECS`], call [`pending`]; when it returns a
//! report, send it, then call [`Pending::mark_sent`].

use std::path::Path;

use serde::{Deserialize, Serialize};
use umbra_proto::PostureReport;

use super::Posture;
use crate::AgentError;
use crate::dir::{AgentDir, write_file};

/// The file in the agent directory.
pub const POSTURE_FILE: &str = "posture.json";
/// How often a running agent collects posture. Collection reads a few small
/// files; a change reaches the controller within this long.
pub const COLLECT_EVERY_SECS: u64 = 300;
/// An unchanged report is still sent this often.
pub const RESEND_EVERY_SECS: i64 = 3600;

/// What was last sent, as stored in `posture.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Unix seconds.
    pub sent_at: i64,
    pub posture: Posture,
    pub report: PostureReport,
}

/// Why a report is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing was sent before (or its record is lost).
    First,
    /// The posture differs from the last one sent.
    Changed,
    /// Unchanged, but the last send is older than the resend interval.
    Refresh,
}

/// Whether `current` should be sent at `now`, given what was last sent.
pub fn due(last: Option<&Sent>, current: &Posture, now: i64, resend_every: i64) -> Option<Due> {
    match last {
        None => Some(Due::First),
        Some(s) if s.posture != *current => Some(Due::Changed),
        // A clock that went backwards also resends: the record is suspect.
        Some(s) if now.saturating_sub(s.sent_at) >= resend_every || now < s.sent_at => {
            Some(Due::Refresh)
        }
        Some(_) => None,
    }
}

/// The last report sent from `dir`, if its record is readable.
pub fn last_sent(dir: &AgentDir) -> Option<Sent> {
    let text = std::fs::read_to_string(dir.file(POSTURE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A report that should be sent.
#[derive(Clone, Debug)]
pub struct Pending {
    pub due: Due,
    pub posture: Posture,
    pub report: PostureReport,
}

/// Collects posture under `root` and returns the report to send, or `None`
/// when the controller already has an equal one that is recent enough.
pub fn pending(dir: &AgentDir, device_id: &str, root: &Path, now: i64) -> Option<Pending> {
    let posture = super::collect(root, now);
    let why = due(last_sent(dir).as_ref(), &posture, now, RESEND_EVERY_SECS)?;
    let report = posture.report(device_id);
    Some(Pending {
        due: why,
        posture,
        report,
    })
}

impl Pending {
    /// Records the report as sent; call it once the controller accepted it.
    pub fn mark_sent(self, dir: &AgentDir, now: i64) -> Result<(), AgentError> {
        let sent = Sent {
            sent_at: now,
            posture: self.posture,
            report: self.report,
        };
        let text =
            serde_json::to_string_pretty(&sent).map_err(|e| AgentError::State(e.to_string()))?;
        write_file(&dir.file(POSTURE_FILE), &text, false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NOW, root};
    use super::super::{Finding, collect};
    use super::*;

    #[test]
    fn first_changed_refresh_and_quiet() {
        let p = collect(&root("hardened"), NOW);
        assert_eq!(due(None, &p, NOW, 3600), Some(Due::First));
        let sent = Sent {
            sent_at: NOW,
            posture: p.clone(),
            report: p.report("d"),
        };
        assert_eq!(due(Some(&sent), &p, NOW + 3599, 3600), None);
        assert_eq!(due(Some(&sent), &p, NOW + 3600, 3600), Some(Due::Refresh));
        assert_eq!(due(Some(&sent), &p, NOW - 1, 3600), Some(Due::Refresh));
        let mut changed = p.clone();
        changed.firewall = Finding::unknown("nft: Operation not permitted");
        assert_eq!(
            due(Some(&sent), &changed, NOW + 1, 3600),
            Some(Due::Changed)
        );
    }

    #[test]
    fn time_passing_alone_is_not_a_change() {
        // Collected a day apart, nothing on the device changed: equal.
        let a = collect(&root("hardened"), NOW);
        let b = collect(&root("hardened"), NOW + 86400);
        assert_eq!(a, b);
    }

    #[test]
    fn a_sent_report_round_trips_through_posture_json() {
        let dir = AgentDir::new(
            std::env::temp_dir().join(format!("umbra-posture-{}", std::process::id())),
        );
        dir.create().expect("agent dir");
        let _ = std::fs::remove_file(dir.file(POSTURE_FILE));
        let fixture = root("bare");
        let first = pending(&dir, "d", &fixture, NOW).expect("nothing sent yet");
        assert_eq!(first.due, Due::First);
        let report = first.report.clone();
        first.mark_sent(&dir, NOW).expect("record");
        assert_eq!(last_sent(&dir).map(|s| s.report), Some(report));
        assert!(pending(&dir, "d", &fixture, NOW + 60).is_none());
        std::fs::write(dir.file(POSTURE_FILE), "{not json").expect("corrupt");
        assert_eq!(
            pending(&dir, "d", &fixture, NOW + 60).map(|p| p.due),
            Some(Due::First),
            "a corrupt record means send again"
        );
        let _ = std::fs::remove_dir_all(&dir.path);
    }
}
