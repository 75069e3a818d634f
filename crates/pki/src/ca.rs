//! The built-in certificate authority.
//!
//! One self-signed ECDSA P-256 root per deployment. It signs short-lived
//! device certificates from CSRs (the device's private key never leaves the
//! device), the controller's own server certificate, and (later) gateway and
//! workload certificates. The CA key leaves this type only as PKCS#8 DER for
//! sealing under the KEK.
//!
//! A CSR is used for exactly one thing: its public key, after its
//! self-signature verifies. Whatever subject, SANs or extensions it asks for
//! are ignored; the CA alone decides what a certificate says.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{PkiError, TrustDomain};

/// Largest CSR accepted (PEM text). Real ones are well under 1 KiB.
pub const MAX_CSR_PEM: usize = 8 * 1024;

/// Certificates are back-dated this much to tolerate clock skew between
/// the controller and the peers that verify them.
const BACKDATE_SECS: i64 = 300;

/// A certificate the CA just signed.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// Lowercase hex, as stored and as shown to operators.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pin: [u8; 32],
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("pin", &hex::encode(self.pin))
            .field("key", &"***")
            .finish()
    }
}

impl CertificateAuthority {
    /// Creates a new root valid for `lifetime_secs` from `now`.
    pub fn generate(
        trust_domain: TrustDomain,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Umbra");
        dn.push(DnType::CommonName, format!("Umbra CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = to_time(now - BACKDATE_SECS)?;
        params.not_after = to_time(now + lifetime_secs)?;
        params.serial_number = Some(random_serial()?.0);
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        Self::from_parts_inner(trust_domain, der, key)
    }

    /// Loads a CA from its certificate (DER) and PKCS#8 key (DER), checking
    /// that they belong together.
    pub fn from_parts(
        trust_domain: TrustDomain,
        cert_der: &[u8],
        key_pkcs8: &[u8],
    ) -> Result<Self, PkiError> {
        let key = KeyPair::try_from(&PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()))?;
        let cert_der = CertificateDer::from(cert_der.to_vec());
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| PkiError::Certificate(e.to_string()))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::Certificate(
                "CA certificate does not match its key".into(),
            ));
        }
        Self::from_parts_inner(trust_domain, cert_der, key)
    }

    fn from_parts_inner(
        trust_domain: TrustDomain,
        cert_der: CertificateDer<'static>,
        key: KeyPair,
    ) -> Result<Self, PkiError> {
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        let pin = Sha256::digest(&cert_der).into();
        Ok(Self {
            trust_domain,
            cert_der,
            cert_pem,
            issuer,
            pin,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate: what enrollment tokens pin.
    pub fn pin(&self) -> [u8; 32] {
        self.pin
    }

    /// The CA key for sealing at rest. Handle with care.
    pub fn key_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.issuer.key().serialize_der())
    }

    /// Checks a device's CSR and signs a client certificate for it whose only
    /// name is its SPIFFE ID.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        device_id: &str,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = parse_csr(csr_pem)?;
        let spiffe = self.trust_domain.device_id(device_id);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Umbra");
        dn.push(DnType::CommonName, device_id);
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::URI(spiffe.try_into().map_err(
                |e: rcgen::Error| PkiError::Certificate(e.to_string()),
            )?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &public_key, now, lifetime_secs)
    }

    /// Signs a gateway's CSR: its SPIFFE ID plus the DNS names and IP
    /// addresses the admin chose (`sans`), for both serving agents and
    /// authenticating to the controller.
    pub fn sign_gateway_csr(
        &self,
        csr_pem: &str,
        name: &str,
        sans: &[String],
        now: i64,
        lifetime_secs: i64,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = parse_csr(csr_pem)?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        let spiffe = self.trust_domain.gateway_id(name);
        params.subject_alt_names.push(SanType::URI(
            spiffe
                .try_into()
                .map_err(|e: rcgen::Error| PkiError::Certificate(e.to_string()))?,
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Umbra");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params, &public_key, now, lifetime_secs)
    }

    /// A server certificate for `names` (DNS names or IP addresses) with a
    /// fresh key; returns the certificate and the key's PKCS#8 DER.
    pub fn issue_server_certificate(
        &self,
        names: &[String],
        now: i64,
        lifetime_secs: i64,
    ) -> Result<(IssuedCertificate, Zeroizing<Vec<u8>>), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Umbra");
        dn.push(
            DnType::CommonName,
            names.first().map_or("umbra", String::as_str),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issued = self.sign(params, &key, now, lifetime_secs)?;
        Ok((issued, Zeroizing::new(key.serialize_der())))
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl PublicKeyData,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<IssuedCertificate, PkiError> {
        let not_before = now - BACKDATE_SECS;
        let not_after = now + lifetime_secs;
        let (serial, serial_hex) = random_serial()?;
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(public_key, &self.issuer)?;
        let der = cert.der().clone();
        Ok(IssuedCertificate {
            pem: pem_encode("CERTIFICATE", &der),
            der,
            serial: serial_hex,
            not_before,
            not_after,
        })
    }
}

/// Parses a CSR and verifies its self-signature; returns its public key.
fn parse_csr(csr_pem: &str) -> Result<rcgen::PublicKey, PkiError> {
    if csr_pem.len() > MAX_CSR_PEM {
        return Err(PkiError::CsrTooLarge { max: MAX_CSR_PEM });
    }
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::CsrInvalid(e.to_string()))?;
    let alg = csr.public_key.algorithm();
    let accepted = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ];
    if !accepted.contains(&alg) {
        return Err(PkiError::CsrKeyAlgorithm);
    }
    Ok(csr.public_key)
}

/// A random positive 128-bit serial and its hex form. Random serials make
/// certificates unpredictable (the classic MD5 collision defence) and unique
/// across controllers without coordination.
fn random_serial() -> Result<(SerialNumber, String), PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Tls("random failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive, and no leading zero byte
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

fn to_time(unix: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| PkiError::Certificate(e.to_string()))
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerCertificate;

    const NOW: i64 = 1_800_000_000;

    fn ca() -> CertificateAuthority {
        let td = TrustDomain::new("umbra.test").expect("td");
        CertificateAuthority::generate(td, NOW, 10 * 365 * 86400).expect("ca")
    }

    fn csr(key: &KeyPair) -> String {
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "admin");
        params
            .serialize_request(key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn device_certificate_carries_only_the_spiffe_id() {
        let ca = ca();
        let key = KeyPair::generate().expect("key");
        let issued = ca
            .sign_device_csr(&csr(&key), "dev-1", NOW, 86400)
            .expect("sign");
        let peer = PeerCertificate::parse(&issued.der, ca.trust_domain()).expect("parse");
        assert_eq!(peer.device_id, "dev-1");
        assert_eq!(peer.serial, issued.serial);
        assert_eq!(peer.not_after, NOW + 86400);
        let (_, x509) = x509_parser::parse_x509_certificate(&issued.der).expect("x509");
        let sans = x509.subject_alternative_name().expect("ext").expect("san");
        assert_eq!(
            sans.value.general_names.len(),
            1,
            "the CSR's DNS SAN must be dropped"
        );
        assert!(!issued.pem.contains("evil"));
    }

    #[test]
    fn csr_with_a_bad_signature_is_refused() {
        let ca = ca();
        let key = KeyPair::generate().expect("key");
        let pem = csr(&key);
        // Flip a byte inside the signature (the tail of the DER).
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine as _;
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(der_b64)
            .expect("b64");
        let n = der.len() - 3;
        der[n] ^= 0x55;
        let forged = pem_encode("CERTIFICATE REQUEST", &der);
        assert!(matches!(
            ca.sign_device_csr(&forged, "dev-1", NOW, 60),
            Err(PkiError::CsrInvalid(_))
        ));
    }

    #[test]
    fn garbage_and_oversized_csrs_are_refused() {
        let ca = ca();
        assert!(matches!(
            ca.sign_device_csr("hello", "d", NOW, 60),
            Err(PkiError::CsrInvalid(_))
        ));
        let big = "A".repeat(MAX_CSR_PEM + 1);
        assert!(matches!(
            ca.sign_device_csr(&big, "d", NOW, 60),
            Err(PkiError::CsrTooLarge { .. })
        ));
    }

    #[test]
    fn reload_from_parts_and_mismatched_key() {
        let ca = ca();
        let again = CertificateAuthority::from_parts(
            ca.trust_domain().clone(),
            ca.cert_der(),
            &ca.key_pkcs8(),
        )
        .expect("reload");
        assert_eq!(again.pin(), ca.pin());
        let other = self::ca();
        assert!(
            CertificateAuthority::from_parts(
                ca.trust_domain().clone(),
                ca.cert_der(),
                &other.key_pkcs8()
            )
            .is_err()
        );
    }
}
