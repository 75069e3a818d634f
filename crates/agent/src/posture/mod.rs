//! Device posture on Linux: what the agent can observe about its machine,
//! for seed 000's `DeviceProfile` fields.
//!
//! Every collector reads below a root path (`/` in production, a fixture
//! root filesystem in tests and with `umbra agent posture --root`) and
//! answers with a [`Finding`]: a value, or *unknown*, and in both cases why.
//! Unknown is never turned into "no": an agent that cannot read the firewall
//! because it is not root has learned nothing about the firewall, and
//! saying "disabled" would be as false as saying "enabled". The controller
//! scores unknown on its own (see `umbra_policy::risk`).
//!
//! Layout:
//! - [`os`]: distribution (os-release), kernel release, hostname.
//! - [`patches`]: the last package upgrade (dpkg and apt logs).
//! - [`disk`]: whether `/` sits on dm-crypt (mountinfo and sysfs).
//! - [`firewall`]: whether inbound traffic is denied by default
//!   (nftables or iptables rulesets).
//! - [`antivirus`]: ClamAV, its signature age and its last scan.
//! - [`schedule`]: when to send a report again (on change, and hourly).
//! - `read`: capped file access that keeps "missing" apart from "unreadable".
//!
//! Collection is synchronous and short (a few small files, and `nft` when
//! run as root); call it from `spawn_blocking` in a long-running task.

pub mod antivirus;
pub mod disk;
pub mod firewall;
pub mod os;
pub mod patches;
mod read;
pub mod schedule;

use std::path::Path;

use serde::{Deserialize, Serialize};
use umbra_proto::PostureReport;
use umbra_proto::posture::MeasuredPosture;

/// One observed fact: its value, or `None` when it could not be told, and
/// the evidence (or the obstacle) either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding<T> {
    pub value: Option<T>,
    pub why: String,
}

impl<T> Finding<T> {
    pub fn known(value: T, why: impl Into<String>) -> Self {
        Self {
            value: Some(value),
            why: why.into(),
        }
    }

    pub fn unknown(why: impl Into<String>) -> Self {
        Self {
            value: None,
            why: why.into(),
        }
    }
}

/// Everything the collectors found. Times are Unix seconds; nothing here
/// depends on when it was collected, so two collections are equal exactly
/// when the device changed in no way the report shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posture {
    pub hostname: String,
    /// os-release `ID`.
    pub os_id: Finding<String>,
    /// os-release `VERSION_ID`.
    pub os_version: Finding<String>,
    pub kernel: Finding<String>,
    /// When the last package upgrade finished.
    pub last_patch: Finding<i64>,
    pub disk_encryption: Finding<bool>,
    pub firewall: Finding<bool>,
    pub antivirus: Finding<bool>,
    /// When the antivirus signatures in use were built.
    pub av_signatures: Finding<i64>,
    /// When the last antivirus scan ended.
    pub last_scan: Finding<i64>,
}

/// Runs every collector against `root`. `now` bounds the log timestamps
/// believed (an entry from the future is a wrong clock, not a patch).
pub fn collect(root: &Path, now: i64) -> Posture {
    let av = antivirus::collect(root, now);
    Posture {
        hostname: os::hostname(root),
        os_id: os::os_id(root),
        os_version: os::os_version(root),
        kernel: os::kernel(root),
        last_patch: patches::last_patch(root, now),
        disk_encryption: disk::root_encrypted(root),
        firewall: firewall::default_deny(root, &firewall::Origin::for_root(root)),
        antivirus: av.engine,
        av_signatures: av.signatures,
        last_scan: av.last_scan,
    }
}

/// The system clock in Unix seconds, for callers of [`collect`] outside
/// tests.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Posture {
    /// The wire report. The seed's booleans are `true` only for a check
    /// that passed; `measured` carries the unknowns.
    pub fn report(&self, device_id: &str) -> PostureReport {
        PostureReport {
            device_id: device_id.to_owned(),
            hostname: self.hostname.clone(),
            os_version: self.os_version.value.clone().unwrap_or_else(unknown),
            patch_level: self.last_patch.value.map_or_else(unknown, date),
            antivirus_status: self.antivirus.value == Some(true),
            firewall_enabled: self.firewall.value == Some(true),
            disk_encryption: self.disk_encryption.value == Some(true),
            last_scan: self
                .last_scan
                .value
                .map(umbra_pki::clock::rfc3339)
                .unwrap_or_default(),
            measured: Some(MeasuredPosture {
                os_id: self.os_id.value.clone(),
                kernel: self.kernel.value.clone(),
                last_patch_unix: self.last_patch.value,
                disk_encryption: self.disk_encryption.value,
                firewall: self.firewall.value,
                antivirus: self.antivirus.value,
                av_signatures_unix: self.av_signatures.value,
            }),
        }
    }

    /// One line per field with its value or "unknown", and the evidence
    /// indented below it: what `umbra agent posture` prints.
    pub fn render(&self, now: i64) -> String {
        let text = |f: &Finding<String>| f.value.clone().unwrap_or_else(unknown);
        let flag = |f: &Finding<bool>| match f.value {
            Some(true) => "yes".to_owned(),
            Some(false) => "no".to_owned(),
            None => unknown(),
        };
        let time = |f: &Finding<i64>| f.value.map_or_else(unknown, |t| dated(t, now));
        let rows = [
            ("os", text(&self.os_id), &self.os_id.why),
            ("os version", text(&self.os_version), &self.os_version.why),
            ("kernel", text(&self.kernel), &self.kernel.why),
            ("last patch", time(&self.last_patch), &self.last_patch.why),
            (
                "disk encryption",
                flag(&self.disk_encryption),
                &self.disk_encryption.why,
            ),
            ("firewall", flag(&self.firewall), &self.firewall.why),
            ("antivirus", flag(&self.antivirus), &self.antivirus.why),
            (
                "av signatures",
                time(&self.av_signatures),
                &self.av_signatures.why,
            ),
            ("last scan", time(&self.last_scan), &self.last_scan.why),
        ];
        let mut out = format!("{:<16} {}\n", "hostname", self.hostname);
        for (label, value, why) in rows {
            out.push_str(&format!("{label:<16} {value}\n{:<16} {why}\n", ""));
        }
        out
    }
}

fn unknown() -> String {
    "unknown".to_owned()
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub(crate) fn date(unix: i64) -> String {
    let t = umbra_pki::clock::rfc3339(unix);
    t.get(..10).map_or(t.clone(), str::to_owned)
}

/// "2025-06-10 (6 days ago)".
fn dated(unix: i64, now: i64) -> String {
    match now.saturating_sub(unix).div_euclid(86400) {
        d if d < 0 => format!("{} (in the future)", date(unix)),
        0 => format!("{} (today)", date(unix)),
        1 => format!("{} (1 day ago)", date(unix)),
        d => format!("{} ({d} days ago)", date(unix)),
    }
}

/// A log's local date and time ("2025-06-10", "06:25:14") as Unix seconds.
/// Debian's logs carry no zone, so the time is taken as UTC: off by at most
/// the zone's offset, which is noise against ages counted in days.
pub(crate) fn log_time(date: &str, time: &str) -> Option<i64> {
    let well_formed = |s: &str, sep: u8, parts: usize| {
        s.split(sep as char).count() == parts && s.bytes().all(|b| b.is_ascii_digit() || b == sep)
    };
    if !well_formed(date, b'-', 3) || !well_formed(time, b':', 3) {
        return None;
    }
    umbra_pki::clock::parse_rfc3339(&format!("{date}T{time}Z"))
}

/// How far past `now` a log entry may be and still be believed: the zone
/// error of [`log_time`].
pub(crate) const CLOCK_SLACK_SECS: i64 = 86400;

/// A string fit for a report field, or `None`.
pub(crate) fn wire_text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && PostureReport::is_field_text(value)).then(|| value.to_owned())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::PathBuf;

    /// 2025-06-16T12:00:00Z, the "now" the fixtures were written for.
    pub const NOW: i64 = 1_750_075_200;

    pub fn root(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{NOW, root};
    use super::*;

    #[test]
    fn a_hardened_device_reports_every_check_passed() {
        let p = collect(&root("hardened"), NOW);
        let r = p.report("dev-1");
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(
            (
                r.hostname.as_str(),
                r.os_version.as_str(),
                r.patch_level.as_str()
            ),
            ("laptop-7", "12", "2025-06-15")
        );
        assert!(r.antivirus_status && r.firewall_enabled && r.disk_encryption);
        assert_eq!(r.last_scan, "2025-06-14T02:05:33Z");
        let m = r.measured.expect("measured");
        assert_eq!(m.os_id.as_deref(), Some("debian"));
        assert_eq!(m.kernel.as_deref(), Some("6.1.0-37-amd64"));
        assert_eq!(m.last_patch_unix, Some(1_749_957_000));
        assert_eq!(m.av_signatures_unix, Some(1_749_976_200));
        assert_eq!(
            (m.disk_encryption, m.firewall, m.antivirus),
            (Some(true), Some(true), Some(true))
        );
    }

    #[test]
    fn an_empty_root_is_unknown_everywhere_and_false_nowhere() {
        let p = collect(&root("empty"), NOW);
        let r = p.report("dev-1");
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(r.hostname, "localhost");
        assert_eq!(
            (r.os_version.as_str(), r.patch_level.as_str()),
            ("unknown", "unknown")
        );
        assert_eq!(r.last_scan, "");
        assert_eq!(
            r.measured,
            Some(MeasuredPosture::default()),
            "every measurement unknown: {p:#?}"
        );
        for why in [
            &p.os_id.why,
            &p.disk_encryption.why,
            &p.firewall.why,
            &p.antivirus.why,
        ] {
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn failed_checks_are_false_in_both_generations_of_fields() {
        let r = collect(&root("bare"), NOW).report("dev-2");
        let m = r.measured.clone().expect("measured");
        assert_eq!(
            (m.disk_encryption, m.firewall, m.antivirus),
            (Some(false), Some(false), Some(false))
        );
        assert!(!r.antivirus_status && !r.firewall_enabled && !r.disk_encryption);
        assert_eq!(r.patch_level, "2025-03-10");
    }

    #[test]
    fn the_rendering_says_unknown_and_why() {
        let text = collect(&root("container"), NOW).render(NOW);
        assert!(text.contains("hostname         4f2a9c1d7e3b"), "{text}");
        assert!(text.contains("disk encryption  unknown\n"), "{text}");
        assert!(text.contains("overlay"), "{text}");
        let text = collect(&root("hardened"), NOW).render(NOW);
        assert!(
            text.contains("last patch       2025-06-15 (1 day ago)"),
            "{text}"
        );
    }

    #[test]
    fn log_times_are_parsed_strictly() {
        assert_eq!(log_time("2025-06-16", "12:00:00"), Some(NOW));
        for (d, t) in [
            ("2025-06-16", "12:00"),
            ("2025/06/16", "12:00:00"),
            ("2025-06-16", "12:00:00+02"),
            ("2025-13-01", "00:00:00"),
            ("", ""),
        ] {
            assert_eq!(log_time(d, t), None, "{d} {t}");
        }
    }
}
