//! Patch level: when the device last installed a newer version of a
//! package it already had.
//!
//! Read from dpkg's and apt's own logs, which they write as part of the
//! operation, so they record what happened rather than what was scheduled:
//! - `var/log/dpkg.log` (and `.1`): an `upgrade` line per package that
//!   dpkg replaced with another version, by apt, unattended-upgrades or
//!   `dpkg -i`. World-readable on Debian.
//! - `var/log/apt/history.log` (and `.1`): one entry per apt run; an entry
//!   with an `Upgrade:` line, an `End-Date:` and no `Error:` is a completed
//!   upgrade. Readable by root and `adm` only, so dpkg.log is what an
//!   unprivileged agent sees.
//!
//! Installing a package that was not there before patches nothing, so it is
//! not counted. This measures "time since the last upgrade", not "updates
//! pending": a device can be current and still show an old date when its
//! distribution published nothing new. Older logs are rotated and gzipped;
//! when the readable ones hold no upgrade the answer is unknown, because
//! saying "never" would be false for any machine older than its logs.

use std::path::Path;

use super::read::{self, Read};
use super::{CLOCK_SLACK_SECS, Finding, date, log_time};

/// What one log says about upgrades.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upgrades {
    /// The newest completed upgrade.
    pub last: Option<i64>,
    /// The oldest entry of any kind: how far back the log reaches.
    pub first_entry: Option<i64>,
}

impl Upgrades {
    fn saw(&mut self, t: i64, upgrade: bool) {
        self.first_entry = Some(self.first_entry.map_or(t, |f| f.min(t)));
        if upgrade {
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }

    fn merge(self, other: Self) -> Self {
        let pick = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        Self {
            last: pick(self.last, other.last, i64::max),
            first_entry: pick(self.first_entry, other.first_entry, i64::min),
        }
    }
}

/// Parses dpkg.log lines `2025-06-10 06:25:14 upgrade libc6:amd64 OLD NEW`.
/// Entries later than `not_after` are ignored.
pub fn parse_dpkg_log(text: &str, not_after: i64) -> Upgrades {
    let mut out = Upgrades::default();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(d), Some(t), Some(action)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        match log_time(d, t) {
            Some(at) if at <= not_after => out.saw(at, action == "upgrade"),
            _ => {}
        }
    }
    out
}

/// Parses apt's history.log: blank-line separated entries of `Key: value`
/// lines (`Start-Date: 2025-06-15  03:09:41`, `Upgrade: …`, `End-Date: …`).
pub fn parse_apt_history(text: &str, not_after: i64) -> Upgrades {
    let mut out = Upgrades::default();
    for entry in text.split("\n\n") {
        let (mut start, mut end, mut upgrade, mut error) = (None, None, false, false);
        for line in entry.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let when = || {
                let mut parts = value.split_ascii_whitespace();
                log_time(parts.next()?, parts.next()?)
            };
            match key {
                "Start-Date" => start = when(),
                "End-Date" => end = when(),
                "Upgrade" => upgrade = true,
                // dpkg failed part-way: some packages may not be upgraded.
                "Error" => error = true,
                _ => {}
            }
        }
        // Without an End-Date the run did not finish.
        if let Some(at) = end.or(start).filter(|&t| t <= not_after) {
            out.saw(at, upgrade && !error && end.is_some());
        }
    }
    out
}

/// The newest completed package upgrade under `root`.
pub fn last_patch(root: &Path, now: i64) -> Finding<i64> {
    type Parser = fn(&str, i64) -> Upgrades;
    const LOGS: [(&str, Parser); 4] = [
        ("var/log/dpkg.log", parse_dpkg_log),
        ("var/log/dpkg.log.1", parse_dpkg_log),
        ("var/log/apt/history.log", parse_apt_history),
        ("var/log/apt/history.log.1", parse_apt_history),
    ];
    let not_after = now.saturating_add(CLOCK_SLACK_SECS);
    let mut seen = Upgrades::default();
    let mut newest_from = "";
    let (mut read_any, mut failures) = (false, Vec::new());
    for (rel, parse) in LOGS {
        match read::log_tail(root, rel) {
            Read::Text(t) => {
                read_any = true;
                let found = parse(&t, not_after);
                if found.last.is_some() && found.last > seen.last {
                    newest_from = rel;
                }
                seen = seen.merge(found);
            }
            Read::Missing => {}
            Read::Failed(e) => failures.push(e),
        }
    }
    match seen.last {
        Some(t) => Finding::known(t, format!("last completed upgrade in {newest_from}")),
        None if !failures.is_empty() => Finding::unknown(failures.join("; ")),
        None if !read_any => Finding::unknown(
            "no var/log/dpkg.log or var/log/apt/history.log (not a dpkg-based system?)",
        ),
        None => Finding::unknown(match seen.first_entry {
            Some(first) => format!(
                "the package logs (from {}) record no upgrade; older ones are compressed and not read",
                date(first)
            ),
            None => "the package logs are empty".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NOW, root};
    use super::*;

    #[test]
    fn dpkg_upgrades_count_and_installs_do_not() {
        let log = "2025-06-01 10:00:00 install jq:amd64 <none> 1.6\n\
                   2025-06-02 10:00:00 upgrade curl:amd64 8.5.0-1 8.5.0-2\n\
                   2025-06-03 10:00:00 status installed jq:amd64 1.6\n\
                   garbage line\n\
                   2025-06-04 xx:00:00 upgrade bad:amd64 1 2\n";
        let u = parse_dpkg_log(log, NOW);
        assert_eq!(u.last, log_time("2025-06-02", "10:00:00"));
        assert_eq!(u.first_entry, log_time("2025-06-01", "10:00:00"));
        assert_eq!(
            parse_dpkg_log("2025-06-01 10:00:00 install a 1 2\n", NOW).last,
            None
        );
    }

    #[test]
    fn entries_from_the_future_are_a_wrong_clock_not_a_patch() {
        let log = "2030-01-01 00:00:00 upgrade curl:amd64 1 2\n";
        assert_eq!(parse_dpkg_log(log, NOW), Upgrades::default());
    }

    #[test]
    fn apt_entries_count_only_when_an_upgrade_completed() {
        let log = "\nStart-Date: 2025-06-01  10:00:00\nUpgrade: a (1, 2)\nEnd-Date: 2025-06-01  10:00:05\n\n\
                   Start-Date: 2025-06-02  10:00:00\nUpgrade: b (1, 2)\nError: dpkg returned 1\nEnd-Date: 2025-06-02  10:00:05\n\n\
                   Start-Date: 2025-06-03  10:00:00\nUpgrade: c (1, 2)\n\n\
                   Start-Date: 2025-06-04  10:00:00\nInstall: d (1)\nEnd-Date: 2025-06-04  10:00:05\n";
        let u = parse_apt_history(log, NOW);
        assert_eq!(u.last, log_time("2025-06-01", "10:00:05"));
        assert_eq!(u.first_entry, u.last);
    }

    #[test]
    fn the_newest_upgrade_of_all_logs_wins() {
        let f = last_patch(&root("hardened"), NOW);
        // apt's unattended upgrade on the 15th; the failed run on the 16th
        // and dpkg's upgrade on the 10th are not it.
        assert_eq!(f.value, log_time("2025-06-15", "03:10:00"));
        assert_eq!(f.why, "last completed upgrade in var/log/apt/history.log");
    }

    #[test]
    fn an_old_upgrade_is_reported_as_old() {
        let f = last_patch(&root("bare"), NOW);
        assert_eq!(f.value, log_time("2025-03-10", "09:00:00"));
    }

    #[test]
    fn logs_without_upgrades_or_no_logs_are_unknown() {
        let f = last_patch(&root("container"), NOW);
        assert_eq!(f.value, None);
        assert!(f.why.contains("from 2025-06-01"), "{}", f.why);
        let f = last_patch(&root("empty"), NOW);
        assert_eq!(f.value, None);
        assert!(f.why.contains("not a dpkg-based system"), "{}", f.why);
    }
}
