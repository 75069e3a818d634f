//! The gateway's identity: its certificate from the Umbra CA (for serving
//! agents and for the control channel) and its assertion-signing key.
//!
//! On the first start the gateway makes a key, sends a CSR with its
//! one-time token and keeps what comes back in `state_dir`; the controller
//! is trusted on first contact through the CA pin inside the token, never
//! blindly. Keys are written owner-only. The assertion key is separate from
//! the TLS key: one key, one protocol.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;
use umbra_proto::control::{GatewayEnrollRequest, GatewayEnrollResponse};
use zeroize::Zeroizing;

use crate::GatewayError;
use crate::config::Config;

const KEY_FILE: &str = "gateway.key";
const CERT_FILE: &str = "gateway.crt";
const CA_FILE: &str = "ca.pem";
const ASSERTION_KEY_FILE: &str = "assertion.key";

pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub key_pem: Zeroizing<String>,
    pub ca: CertificateDer<'static>,
    pub assertion: AssertionKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("assertion_kid", &self.assertion.kid)
            .finish_non_exhaustive()
    }
}

pub struct AssertionKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GatewayError + '_ {
    move |source| GatewayError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), GatewayError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn key_pem_to_pkcs8(pem: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Ok(Zeroizing::new(k.secret_pkcs8_der().to_vec())),
        _ => Err(GatewayError::Identity(format!(
            "{}: not a PKCS#8 private key",
            path.display()
        ))),
    }
}

/// Loads the identity from `state_dir`, enrolling first if there is none.
pub async fn load_or_enroll(config: &Config) -> Result<Identity, GatewayError> {
    let dir = &config.state_dir;
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .map_err(io(dir))?;
    let cert_path = dir.join(CERT_FILE);
    if !cert_path.exists() {
        let source = config.enrollment_token.as_ref().ok_or_else(|| {
            GatewayError::Identity(format!(
                "{} has no certificate and no enrollment_token is configured; \
                 create one with `umbra admin gateway add NAME --san HOST`",
                dir.display()
            ))
        })?;
        let token = source
            .read()
            .map_err(|e| GatewayError::Identity(e.to_string()))?;
        enroll(config, &token).await?;
    }
    let key_path = dir.join(KEY_FILE);
    let key_pem = Zeroizing::new(std::fs::read_to_string(&key_path).map_err(io(&key_path))?);
    let key_pkcs8 = key_pem_to_pkcs8(&key_pem, &key_path)?;
    let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| GatewayError::Identity(format!("{}: {e}", cert_path.display())))?;
    let ca_path = dir.join(CA_FILE);
    let ca = CertificateDer::from_pem_file(&ca_path)
        .map_err(|e| GatewayError::Identity(format!("{}: {e}", ca_path.display())))?;
    let name = gateway_name(&cert)?;
    let assertion = assertion_key(&dir.join(ASSERTION_KEY_FILE), &name)?;
    check_key_matches(&cert, &key_pkcs8, &key_path)?;
    Ok(Identity {
        cert,
        cert_pem,
        key_pkcs8,
        key_pem,
        ca,
        assertion,
    })
}

async fn enroll(config: &Config, token: &str) -> Result<(), GatewayError> {
    let bad = || GatewayError::Identity("enrollment_token: not a gateway token (ug1.…)".into());
    let mut parts = token.split('.');
    let (Some("ug1"), Some(pin), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let pin: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(pin)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or_else(bad)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    let tls = umbra_pki::tls::pinned_client_config(pin)?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| GatewayError::Controller(e.to_string()))?;
    let url = format!("{}/api/v1/gateways/enroll", config.controller_url);
    let resp = http
        .post(&url)
        .json(&GatewayEnrollRequest {
            token: token.to_owned(),
            csr,
        })
        .send()
        .await
        .map_err(|e| GatewayError::Controller(format!("{url}: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| GatewayError::Controller(e.to_string()))?;
    if !status.is_success() {
        return Err(GatewayError::Controller(format!(
            "enrollment refused (HTTP {status}): {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let enrolled: GatewayEnrollResponse = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::Controller(format!("enrollment response: {e}")))?;
    let ca = CertificateDer::from_pem_slice(enrolled.ca_certificate.as_bytes())
        .map_err(|e| GatewayError::Controller(format!("CA certificate: {e}")))?;
    if umbra_pki::tls::ca_pin(&ca) != pin {
        return Err(GatewayError::Controller(
            "the controller returned a CA that does not match the token's pin".into(),
        ));
    }
    let dir: PathBuf = config.state_dir.clone();
    write_private(&dir.join(KEY_FILE), &key.serialize_pem())?;
    write_private(&dir.join(CA_FILE), &enrolled.ca_certificate)?;
    // The certificate last: its presence means "enrolled".
    write_private(&dir.join(CERT_FILE), &enrolled.certificate)?;
    tracing::info!(name = %enrolled.name, expires = %enrolled.expires_at, "gateway enrolled");
    Ok(())
}

fn assertion_key(path: &Path, name: &str) -> Result<AssertionKey, GatewayError> {
    let pem = if path.exists() {
        Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?)
    } else {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| GatewayError::Identity(e.to_string()))?;
        let pem = Zeroizing::new(key.serialize_pem());
        write_private(path, &pem)?;
        pem
    };
    let pkcs8 = key_pem_to_pkcs8(&pem, path)?;
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice())
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    let kid = assertion_kid(name, key.public_key_raw());
    let encoding = EncodingKey::from_ec_der(&pkcs8);
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    Ok(AssertionKey { kid, encoding, jwk })
}

/// Writes a renewed key and certificate, each atomically. A crash between
/// the two leaves a pair that does not match; the next start detects it
/// and says to enroll again, rather than serving a broken identity.
pub fn store(dir: &Path, key_pem: &str, cert_pem: &str) -> Result<(), GatewayError> {
    write_private(&dir.join(KEY_FILE), key_pem)?;
    write_private(&dir.join(CERT_FILE), cert_pem)
}

/// The certificate the gateway serves, swappable while it runs.
pub struct ServerCert(std::sync::RwLock<std::sync::Arc<rustls::sign::CertifiedKey>>);

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCert")
    }
}

impl ServerCert {
    pub fn new(key: std::sync::Arc<rustls::sign::CertifiedKey>) -> Self {
        Self(std::sync::RwLock::new(key))
    }

    pub fn replace(&self, key: std::sync::Arc<rustls::sign::CertifiedKey>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// `gw-<gateway>-<hash of the public key>`: the controller registers a key
/// only under this id, so the id says which gateway a key belongs to (an
/// upstream can match it with the assertion's `iss`) and cannot collide
/// with another gateway's or the controller's keys.
pub fn assertion_kid(gateway: &str, public_key_raw: &[u8]) -> String {
    format!(
        "gw-{gateway}-{}",
        hex::encode(&sha2::Sha256::digest(public_key_raw)[..8])
    )
}

/// The gateway name in the certificate's SPIFFE ID.
fn gateway_name(cert: &CertificateDer<'_>) -> Result<String, GatewayError> {
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    c.subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => {
                    u.rsplit_once("/gateway/").map(|(_, name)| name.to_owned())
                }
                _ => None,
            })
        })
        .ok_or_else(|| GatewayError::Identity("the certificate is not a gateway's".into()))
}

/// A key and certificate that do not belong together (an interrupted
/// renewal, a hand-edited directory) would fail every handshake later;
/// refuse to start instead, saying what to do.
fn check_key_matches(
    cert: &CertificateDer<'_>,
    key_pkcs8: &[u8],
    key_path: &Path,
) -> Result<(), GatewayError> {
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    let key =
        rcgen::KeyPair::try_from(key_pkcs8).map_err(|e| GatewayError::Identity(e.to_string()))?;
    if c.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(GatewayError::Identity(format!(
            "{} does not match the gateway certificate; enroll the gateway again \
             (`umbra admin gateway add NAME --san HOST` gives a new token)",
            key_path.display()
        )));
    }
    Ok(())
}
