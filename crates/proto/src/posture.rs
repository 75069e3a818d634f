//! The device posture report, with seed 000's `DeviceProfile` field names.

use serde::{Deserialize, Serialize};

/// What the agent reports about its device. The controller stores it as given
/// and scores it; it is a claim by the device, not an attestation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureReport {
    pub device_id: String,
    pub hostname: String,
    pub os_version: String,
    pub patch_level: String,
    pub antivirus_status: bool,
    pub firewall_enabled: bool,
    pub disk_encryption: bool,
    /// RFC 3339 time of the last security scan.
    pub last_scan: String,
}

impl PostureReport {
    /// Longest accepted string field: the report is peer input.
    pub const MAX_FIELD_LEN: usize = 256;

    /// Checks the shape of each field; returns the first bad field's name.
    pub fn validate(&self) -> Result<(), &'static str> {
        let fields = [
            ("device_id", &self.device_id),
            ("hostname", &self.hostname),
            ("os_version", &self.os_version),
            ("patch_level", &self.patch_level),
            ("last_scan", &self.last_scan),
        ];
        for (name, value) in fields {
            if value.len() > Self::MAX_FIELD_LEN || value.chars().any(char::is_control) {
                return Err(name);
            }
        }
        if self.hostname.is_empty() {
            return Err("hostname");
        }
        Ok(())
    }
}
