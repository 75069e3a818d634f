//! The device posture report, with seed 000's `DeviceProfile` field names.
//!
//! Two generations of the report share this type. The first eight fields are
//! the seed's, and every agent sends them. An agent that measures its device
//! (the Linux collectors in `umbra-agent`) also sends [`MeasuredPosture`], where an
//! answer can be *unknown*: the seed's booleans cannot say "I could not
//! tell", and an agent that turns "I could not tell" into `false` misleads the
//! admin as surely as one that turns it into `true`. The booleans stay so
//! that reports stored before `measured` existed still parse and score the
//! same; in a report with `measured`, a boolean is `true` only when the check
//! passed, and readers should look at `measured` for the rest.

use serde::{Deserialize, Serialize};

/// What the agent reports about its device. The controller stores it as given
/// and scores it; it is a claim by the device, not an attestation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureReport {
    pub device_id: String,
    pub hostname: String,
    /// The distribution's version (os-release `VERSION_ID`), or `unknown`.
    pub os_version: String,
    /// Date (`YYYY-MM-DD`, UTC) of the last package upgrade, or `unknown`.
    pub patch_level: String,
    /// True only when an antivirus engine with signatures was found.
    pub antivirus_status: bool,
    /// True only when inbound traffic is denied by default.
    pub firewall_enabled: bool,
    /// True only when the root filesystem sits on an encrypted device.
    pub disk_encryption: bool,
    /// RFC 3339 time of the last security scan; empty when unknown.
    pub last_scan: String,
    /// What the agent measured, with unknowns said as such. Absent from
    /// reports of agents that only fill in the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<MeasuredPosture>,
}

/// Measured posture. Every `null` means the agent could not tell (a file it
/// may not read, a tool that needs root, a system it does not know), never
/// that the check failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeasuredPosture {
    /// os-release `ID`, e.g. `debian`.
    pub os_id: Option<String>,
    /// The running kernel's release, e.g. `6.1.0-18-amd64`.
    pub kernel: Option<String>,
    /// When the last package upgrade finished, in Unix seconds. A time, not
    /// an age: a stored report then grows stale on its own instead of
    /// claiming "patched 2 days ago" for ever.
    pub last_patch_unix: Option<i64>,
    /// The root filesystem is on a dm-crypt device (LUKS or plain).
    pub disk_encryption: Option<bool>,
    /// Inbound IPv4 (and IPv6 where enabled) is dropped unless a rule
    /// accepts it.
    pub firewall: Option<bool>,
    /// An antivirus engine is installed and has a signature database.
    pub antivirus: Option<bool>,
    /// When the antivirus signatures were built, in Unix seconds.
    pub av_signatures_unix: Option<i64>,
}

impl PostureReport {
    /// Longest accepted string field: the report is peer input.
    pub const MAX_FIELD_LEN: usize = 256;

    /// Checks the shape of each field; returns the first bad field's name.
    pub fn validate(&self) -> Result<(), &'static str> {
        let measured = self.measured.as_ref();
        let fields = [
            ("device_id", Some(&self.device_id)),
            ("hostname", Some(&self.hostname)),
            ("os_version", Some(&self.os_version)),
            ("patch_level", Some(&self.patch_level)),
            ("last_scan", Some(&self.last_scan)),
            ("measured.os_id", measured.and_then(|m| m.os_id.as_ref())),
            ("measured.kernel", measured.and_then(|m| m.kernel.as_ref())),
        ];
        for (name, value) in fields {
            if value.is_some_and(|v| !Self::is_field_text(v)) {
                return Err(name);
            }
        }
        if self.hostname.is_empty() {
            return Err("hostname");
        }
        Ok(())
    }

    /// Whether `value` may be sent in a string field: what [`validate`]
    /// accepts, so a sender can check a value before putting it in.
    ///
    /// [`validate`]: Self::validate
    pub fn is_field_text(value: &str) -> bool {
        value.len() <= Self::MAX_FIELD_LEN && !value.chars().any(char::is_control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_json() -> serde_json::Value {
        serde_json::json!({
            "device_id": "d", "hostname": "h", "os_version": "12",
            "patch_level": "2025-05-30", "antivirus_status": true,
            "firewall_enabled": false, "disk_encryption": true,
            "last_scan": "2025-06-01T08:00:00Z"
        })
    }

    #[test]
    fn a_report_without_measured_still_parses_and_round_trips_unchanged() {
        let json = legacy_json();
        let report: PostureReport = serde_json::from_value(json.clone()).expect("legacy report");
        assert_eq!(report.measured, None);
        assert_eq!(serde_json::to_value(&report).expect("serialize"), json);
    }

    #[test]
    fn unknown_measurements_travel_as_null() {
        let mut json = legacy_json();
        json["measured"] = serde_json::json!({
            "os_id": "debian", "kernel": null, "last_patch_unix": 1748586301,
            "disk_encryption": true, "firewall": null, "antivirus": false,
            "av_signatures_unix": null
        });
        let report: PostureReport = serde_json::from_value(json.clone()).expect("report");
        let m = report.measured.clone().expect("measured");
        assert_eq!(
            (m.firewall, m.antivirus, m.kernel),
            (None, Some(false), None)
        );
        assert_eq!(serde_json::to_value(&report).expect("serialize"), json);
    }

    #[test]
    fn measured_strings_are_checked_like_the_others() {
        let mut report: PostureReport = serde_json::from_value(legacy_json()).expect("report");
        report.measured = Some(MeasuredPosture {
            kernel: Some("6.1\u{7}".into()),
            ..MeasuredPosture::default()
        });
        assert_eq!(report.validate(), Err("measured.kernel"));
        report.measured = Some(MeasuredPosture {
            os_id: Some("x".repeat(PostureReport::MAX_FIELD_LEN + 1)),
            ..MeasuredPosture::default()
        });
        assert_eq!(report.validate(), Err("measured.os_id"));
        report.measured = Some(MeasuredPosture::default());
        assert_eq!(report.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_in_measured_are_refused() {
        let mut json = legacy_json();
        json["measured"] = serde_json::json!({"firewall": true, "selinux": true});
        assert!(serde_json::from_value::<PostureReport>(json).is_err());
    }
}
