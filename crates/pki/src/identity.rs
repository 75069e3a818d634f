//! What a verified client certificate says about its holder.
//!
//! rustls has already checked the chain and validity period by the time this
//! runs; here we extract the SPIFFE device ID, the serial (for revocation) and
//! the fingerprint (to bind tokens to the certificate, RFC 8705 `x5t#S256`).

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use crate::{PkiError, TrustDomain};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    pub device_id: String,
    pub spiffe_id: String,
    /// Lowercase hex.
    pub serial: String,
    pub not_after: i64,
    /// base64url(SHA-256(DER)), the `x5t#S256` confirmation value.
    pub thumbprint: String,
}

/// A gateway's certificate, as the controller sees it on the control channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayCertificate {
    pub name: String,
    pub serial: String,
    pub not_after: i64,
}

impl GatewayCertificate {
    pub fn parse(der: &[u8], trust_domain: &TrustDomain) -> Result<Self, PkiError> {
        let leaf = Leaf::parse(der)?;
        let name = trust_domain
            .parse_gateway_id(&leaf.uri)
            .ok_or_else(|| {
                PkiError::Certificate(format!(
                    "{:?} is not a gateway of this trust domain",
                    leaf.uri
                ))
            })?
            .to_owned();
        Ok(Self {
            name,
            serial: leaf.serial,
            not_after: leaf.not_after,
        })
    }
}

/// What every Umbra leaf certificate carries: exactly one URI SAN.
struct Leaf {
    uri: String,
    serial: String,
    not_after: i64,
}

impl Leaf {
    fn parse(der: &[u8]) -> Result<Self, PkiError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::Certificate("trailing bytes".into()));
        }
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| PkiError::Certificate(e.to_string()))?
            .ok_or_else(|| PkiError::Certificate("no subject alternative name".into()))?;
        let mut uris = sans.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        let uri = uris
            .next()
            .ok_or_else(|| PkiError::Certificate("no URI SAN".into()))?;
        if uris.next().is_some() {
            return Err(PkiError::Certificate("more than one URI SAN".into()));
        }
        Ok(Self {
            uri: uri.to_owned(),
            serial: hex::encode(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

impl PeerCertificate {
    pub fn parse(der: &[u8], trust_domain: &TrustDomain) -> Result<Self, PkiError> {
        let leaf = Leaf::parse(der)?;
        let device_id = trust_domain
            .parse_device_id(&leaf.uri)
            .ok_or_else(|| {
                PkiError::Certificate(format!(
                    "{:?} is not a device of this trust domain",
                    leaf.uri
                ))
            })?
            .to_owned();
        use base64::Engine as _;
        Ok(Self {
            device_id,
            spiffe_id: leaf.uri,
            serial: leaf.serial,
            not_after: leaf.not_after,
            thumbprint: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(der)),
        })
    }
}
