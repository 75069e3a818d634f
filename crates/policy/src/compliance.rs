//! Device compliance: seed 000's `high_security` and `standard` policies.
//!
//! A policy lists what a device must show — disk encryption, an active
//! antivirus, a firewall, patches no older than N days, a minimum OS version
//! — and [`CompliancePolicy::check`] reads a posture report against it, naming
//! every failing check in the seed's words ("Firewall is disabled").
//!
//! Three deliberate departures from the seed, each a bug there:
//! - OS versions are compared as versions (`10.0.9` < `10.0.19041`), not as
//!   strings (where `"9" > "10"`).
//! - Patch age is measured from the last patch (`measured.last_patch_unix`,
//!   else the report's `patch_level` date), not from the last scan.
//! - A check the agent could not answer is *unknown*, neither passed nor
//!   failed (see `umbra_proto::posture`). Each policy says what unknown
//!   counts as (`unknown = "fail"`, the default, or `"pass"`), and the report
//!   lists unknown checks apart from failed ones, so the audit trail shows
//!   which it was.
//!
//! Report-only mode ([`ComplianceConfig::report_only`], used by `umbra dev`)
//! keeps every finding in the decision but denies nothing for compliance.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use umbra_proto::PostureReport;

/// Seconds in a day, for patch ages.
const DAY: i64 = 86_400;

/// What an unknown check counts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownIs {
    /// Fail closed: nothing vouches for the device.
    #[default]
    Fail,
    /// Let it pass (it is still listed under `unknown`).
    Pass,
}

/// One compliance policy, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompliancePolicy {
    #[serde(default)]
    pub require_encryption: bool,
    #[serde(default)]
    pub require_antivirus: bool,
    #[serde(default)]
    pub require_firewall: bool,
    /// Most days since the last patch; no limit when absent.
    #[serde(default)]
    pub max_patch_age_days: Option<u32>,
    /// Lowest OS version accepted; no minimum when absent.
    #[serde(default)]
    pub min_os_version: Option<MinOsVersion>,
    #[serde(default)]
    pub unknown: UnknownIs,
}

/// A minimum OS version for every OS, or one per os-release `ID`
/// (`measured.os_id`), with `"*"` for the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MinOsVersion {
    All(Version),
    PerOs(BTreeMap<String, Version>),
}

// By hand rather than `untagged`, whose error ("did not match any variant")
// would hide which version is wrong.
impl<'de> Deserialize<'de> for MinOsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MinOsVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version string or a table of versions by OS id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MinOsVersion, E> {
                Version::try_from(s.to_owned())
                    .map(MinOsVersion::All)
                    .map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MinOsVersion, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((os, version)) = map.next_entry::<String, Version>()? {
                    table.insert(os, version);
                }
                Ok(MinOsVersion::PerOs(table))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A dotted numeric version, compared component by component with missing
/// components as zero (`12` = `12.0`). Parsed from the leading digits and
/// dots of a string, so `22.04.3 LTS` is `22.4.3` and `6.1.0-18-amd64` is
/// `6.1.0`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

impl Version {
    /// `None` when the text does not start with a number (`unknown`,
    /// `bookworm/sid`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = Vec::new();
        for piece in text.split('.') {
            let digits: &str = &piece[..piece.bytes().take_while(u8::is_ascii_digit).count()];
            if digits.is_empty() {
                break;
            }
            parts.push(digits.parse().ok()?);
            if digits.len() < piece.len() {
                break;
            }
        }
        if parts.is_empty() || parts.len() > 16 {
            return None;
        }
        Some(Self {
            text: text.to_owned(),
            parts,
        })
    }

    fn component(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| self.component(i).cmp(&other.component(i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Version::parse(&s).ok_or_else(|| {
            format!("invalid version {s:?}: expected digits and dots, e.g. \"10.0.19041\"")
        })
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.text
    }
}

/// The checks, by stable name (audit records and metrics use these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    DiskEncryption,
    Antivirus,
    Firewall,
    PatchAge,
    OsVersion,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::DiskEncryption => "disk_encryption",
            CheckKind::Antivirus => "antivirus",
            CheckKind::Firewall => "firewall",
            CheckKind::PatchAge => "patch_age",
            CheckKind::OsVersion => "os_version",
        }
    }
}

/// A check that did not pass, with the message for the user and the audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: CheckKind,
    pub message: String,
}

/// The result of reading one posture report against one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceReport {
    pub compliant: bool,
    /// Checks that failed.
    pub failures: Vec<Finding>,
    /// Checks nobody could answer; they count as failed when the policy
    /// says `unknown = "fail"`.
    pub unknown: Vec<Finding>,
}

impl ComplianceReport {
    /// Every finding that makes the device non-compliant under `policy`.
    pub fn blocking<'a>(&'a self, policy: &CompliancePolicy) -> impl Iterator<Item = &'a Finding> {
        let unknown: &[Finding] = match policy.unknown {
            UnknownIs::Fail => &self.unknown,
            UnknownIs::Pass => &[],
        };
        self.failures.iter().chain(unknown)
    }
}

enum State {
    Pass,
    Fail(String),
    Unknown(String),
}

impl CompliancePolicy {
    /// Seed 000's `high_security`.
    pub fn high_security() -> Self {
        Self {
            require_encryption: true,
            require_antivirus: true,
            require_firewall: true,
            max_patch_age_days: Some(7),
            min_os_version: Version::parse("10.0.19041").map(MinOsVersion::All),
            unknown: UnknownIs::Fail,
        }
    }

    /// Seed 000's `standard`.
    pub fn standard() -> Self {
        Self {
            require_encryption: true,
            require_antivirus: true,
            require_firewall: false,
            max_patch_age_days: Some(30),
            min_os_version: Version::parse("10.0.18362").map(MinOsVersion::All),
            unknown: UnknownIs::Fail,
        }
    }

    /// Reads `posture` against this policy at Unix time `now`.
    pub fn check(&self, posture: &PostureReport, now: i64) -> ComplianceReport {
        let m = posture.measured.as_ref();
        // A report without `measured` has only booleans, where `false` means
        // "failed or could not tell": scored as failed, as the seed does.
        let disk = m.map_or(Some(posture.disk_encryption), |m| m.disk_encryption);
        let av = m.map_or(Some(posture.antivirus_status), |m| m.antivirus);
        let fw = m.map_or(Some(posture.firewall_enabled), |m| m.firewall);
        let mut checks = Vec::with_capacity(5);
        if self.require_encryption {
            checks.push((
                CheckKind::DiskEncryption,
                flag(
                    disk,
                    "Disk encryption is not enabled",
                    "Disk encryption state is unknown",
                ),
            ));
        }
        if self.require_antivirus {
            checks.push((
                CheckKind::Antivirus,
                flag(av, "Antivirus is not active", "Antivirus state is unknown"),
            ));
        }
        if self.require_firewall {
            checks.push((
                CheckKind::Firewall,
                flag(fw, "Firewall is disabled", "Firewall state is unknown"),
            ));
        }
        if let Some(max_days) = self.max_patch_age_days {
            checks.push((CheckKind::PatchAge, patch_age(posture, now, max_days)));
        }
        if let Some(min) = &self.min_os_version {
            checks.push((CheckKind::OsVersion, os_version(posture, min)));
        }
        let mut report = ComplianceReport {
            compliant: true,
            failures: Vec::new(),
            unknown: Vec::new(),
        };
        for (check, state) in checks {
            match state {
                State::Pass => {}
                State::Fail(message) => report.failures.push(Finding { check, message }),
                State::Unknown(message) => report.unknown.push(Finding { check, message }),
            }
        }
        let compliant = report.blocking(self).next().is_none();
        report.compliant = compliant;
        report
    }
}

fn flag(value: Option<bool>, failed: &str, unknown: &str) -> State {
    match value {
        Some(true) => State::Pass,
        Some(false) => State::Fail(failed.to_owned()),
        None => State::Unknown(unknown.to_owned()),
    }
}

/// When the device was last patched: the measured time, else the report's
/// `patch_level` date (`YYYY-MM-DD`, UTC midnight).
pub fn last_patch_unix(posture: &PostureReport) -> Option<i64> {
    if let Some(t) = posture.measured.as_ref().and_then(|m| m.last_patch_unix) {
        return Some(t);
    }
    chrono::NaiveDate::parse_from_str(posture.patch_level.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

fn patch_age(posture: &PostureReport, now: i64, max_days: u32) -> State {
    let Some(patched) = last_patch_unix(posture) else {
        return State::Unknown("Patch age is unknown".into());
    };
    // A patch time in the future (clock skew) counts as fresh; saturate on
    // absurd values rather than overflow.
    let days = now.saturating_sub(patched).max(0) / DAY;
    if days > i64::from(max_days) {
        State::Fail(format!(
            "Device hasn't been patched in {days} days (at most {max_days} allowed)"
        ))
    } else {
        State::Pass
    }
}

fn os_version(posture: &PostureReport, min: &MinOsVersion) -> State {
    let os_id = posture.measured.as_ref().and_then(|m| m.os_id.as_deref());
    let required = match min {
        MinOsVersion::All(v) => v,
        MinOsVersion::PerOs(table) => {
            match os_id
                .and_then(|id| table.get(id))
                .or_else(|| table.get("*"))
            {
                Some(v) => v,
                None => {
                    return State::Unknown(format!(
                        "No minimum OS version is configured for OS {}",
                        os_id.unwrap_or("unknown")
                    ));
                }
            }
        }
    };
    match Version::parse(&posture.os_version) {
        None => State::Unknown(format!("OS version {:?} is unknown", posture.os_version)),
        Some(v) if v < *required => State::Fail(format!(
            "OS version {v} is below minimum required {required}"
        )),
        Some(_) => State::Pass,
    }
}

/// `[compliance] on_failure`: what happens to a live session whose device
/// falls out of compliance with the required policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The session ends everywhere.
    #[default]
    Terminate,
    /// The session goes on once its subject passes a fresh MFA: for
    /// findings the user is trusted to fix (a firewall switched off for a
    /// moment), with a human confirming they are still at the keyboard.
    StepUp,
}

/// All compliance policies, as configured in `[compliance]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Record findings but deny nothing for compliance (`umbra dev`).
    #[serde(default)]
    pub report_only: bool,
    /// A policy every device must pass for any access, on top of what
    /// rules require.
    #[serde(default)]
    pub required: Option<String>,
    /// What a live session comes to when its device stops passing the
    /// `required` policy (found at the session's re-evaluation).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Policies by name; the seed's two when the table is absent. A
    /// configured table replaces them (name them again to keep them).
    #[serde(default = "default_policies")]
    pub policies: BTreeMap<String, CompliancePolicy>,
}

fn default_policies() -> BTreeMap<String, CompliancePolicy> {
    BTreeMap::from([
        (
            "high_security".to_owned(),
            CompliancePolicy::high_security(),
        ),
        ("standard".to_owned(), CompliancePolicy::standard()),
    ])
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        Self {
            report_only: false,
            required: None,
            on_failure: OnFailure::default(),
            policies: default_policies(),
        }
    }
}

impl ComplianceConfig {
    /// Checks names: `required` must name a policy.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.required
            && !self.policies.contains_key(name)
        {
            return Err(format!(
                "compliance.required names {name:?}, which is not among the policies ({})",
                self.policies.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    /// The policy a device's compliance is reported against (metrics,
    /// dashboard): the `required` one, else the seed's `standard`.
    pub fn reference_policy(&self) -> Option<(&str, &CompliancePolicy)> {
        let name = self.required.as_deref().unwrap_or("standard");
        self.policies
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Every policy's report for one posture report.
    pub fn check_all(
        &self,
        posture: &PostureReport,
        now: i64,
    ) -> BTreeMap<String, ComplianceReport> {
        self.policies
            .iter()
            .map(|(name, p)| (name.clone(), p.check(posture, now)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
