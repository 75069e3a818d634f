//! rustls configurations, all on the aws-lc-rs provider.
//!
//! The controller's listener asks for a client certificate but does not
//! require one at the handshake: public endpoints (health, JWKS, enrollment)
//! must work without one, and the handlers that need a device (login,
//! renewal, the gateways' control channel) refuse requests that lack it. A
//! certificate that *is* presented must chain to the Umbra CA and be within
//! its validity period, or the handshake fails.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::PkiError;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    Ok(Arc::new(roots))
}

/// A server that verifies any presented client certificate against `ca`,
/// but lets clients without one through to the HTTP layer.
/// `time` is the clock client certificates are checked against: injectable,
/// so expiry can be tested without waiting.
pub fn server_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: &[u8],
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<ServerConfig, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let mut config = ServerConfig::builder_with_details(provider(), time)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that trusts only `ca`, optionally presenting a certificate.
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Decides, after the chain and validity checks pass, whether a client
/// certificate may complete the handshake (revocation, kind of identity).
pub trait ClientCertPolicy: Send + Sync + std::fmt::Debug {
    /// `Err` carries the reason; the peer sees a plain certificate error.
    fn admit(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::CertificateError>;
}

/// Client certificates are mandatory and must chain to `ca`, be within their
/// validity at `time`, and pass `policy` (the gateway's revocation lists):
/// a revoked device never completes the handshake.
#[derive(Debug)]
struct PolicyVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    policy: Arc<dyn ClientCertPolicy>,
}

impl rustls::server::danger::ClientCertVerifier for PolicyVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.policy
            .admit(end_entity)
            .map_err(rustls::Error::InvalidCertificate)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate chain and its key, ready for a rustls certificate resolver.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, PkiError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
}

/// A server that requires a client certificate from `ca` admitted by
/// `policy` (the gateway's listener), serving whatever certificate `cert`
/// resolves to (so a renewed certificate takes effect without a restart).
/// ALPN: HTTP/2, HTTP/1.1, and Umbra's TCP tunnels.
pub fn strict_server_config(
    ca: &CertificateDer<'static>,
    cert: Arc<dyn rustls::server::ResolvesServerCert>,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
    policy: Arc<dyn ClientCertPolicy>,
) -> Result<ServerConfig, PkiError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let verifier = Arc::new(PolicyVerifier { inner, policy });
    let mut config = ServerConfig::builder_with_details(provider(), time)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        b"umbra-tunnel/1".to_vec(),
    ];
    Ok(config)
}

/// The CA pin carried in enrollment tokens: SHA-256 of the CA certificate.
pub fn ca_pin(ca: &CertificateDer<'_>) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(ca.as_ref()).into()
}

/// Verifies a server whose chain includes a CA certificate with the pinned
/// hash, against that CA (chain, validity, name). First contact only: an
/// enrolling agent or gateway knows the pin from its token, not the CA.
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| bool::from(subtle::ConstantTimeEq::ct_eq(&ca_pin(c)[..], &self.pin[..])))
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))?;
        let roots =
            roots(&ca.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client that trusts the CA whose certificate hashes to `pin`, presented
/// in the server's chain; no client certificate.
pub fn pinned_client_config(pin: [u8; 32]) -> Result<ClientConfig, PkiError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin }))
        .with_no_client_auth())
}
