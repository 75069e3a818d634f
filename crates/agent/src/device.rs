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

/// This machine's posture, from the collectors in [`crate::posture`] run
/// on `/`. What the agent cannot measure (the firewall when not root, for
/// one) is reported as unknown, never as satisfied or failed.
pub fn local_posture(device_id: &str) -> PostureReport {
    let now = crate::posture::unix_now();
    crate::posture::collect(std::path::Path::new("/"), now).report(device_id)
}
