//! A device's key and CSR, made locally: the private key never leaves the
//! machine. And the posture report sent with enrollment.

use rcgen::{CertificateParams, DnType, KeyPair};
use umbra_proto::PostureReport;

pub struct DeviceKey {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn new_key_and_csr(hostname: &str) -> Result<DeviceKey, crate::AgentError> {
    let fail = |e: rcgen::Error| crate::AgentError::State(format!("device key: {e}"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, hostname);
    let csr = params.serialize_request(&key).map_err(fail)?;
    Ok(DeviceKey {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(fail)?,
    })
}

/// This machine's posture as far as an unprivileged process can tell.
/// Security-relevant fields this first cut cannot measure are reported as
/// not satisfied, never as satisfied (the agent issue adds real probes).
pub fn local_posture(device_id: &str) -> PostureReport {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let os_version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    PostureReport {
        device_id: device_id.to_owned(),
        hostname,
        os_version,
        patch_level: "unknown".into(),
        antivirus_status: false,
        firewall_enabled: false,
        disk_encryption: false,
        last_scan: String::new(),
    }
}
