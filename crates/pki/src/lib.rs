//! Umbra's public-key infrastructure: the built-in certificate authority,
//! device certificates with SPIFFE IDs, the key-encryption key that seals
//! secrets at rest, and rustls configuration builders.
//!
//! No network or storage I/O: callers pass bytes and the current time in and
//! get certificates, decisions and sealed blobs out.
//!
//! Layout:
//! - [`kek`]: AES-256-GCM sealing of secrets at rest, bound to a context label.
//! - [`ca`]: the CA: creation, loading, CSR checks, certificate issuance.
//! - [`spiffe`]: trust domains and SPIFFE IDs (`spiffe://<td>/device/<id>`).
//! - [`identity`]: what a presented certificate says (device id, serial, expiry).
//! - [`tls`]: rustls server and client configurations.

pub mod ca;
pub mod clock;
pub mod identity;
pub mod kek;
pub mod spiffe;
pub mod tls;

pub use ca::{CertificateAuthority, IssuedCertificate};
pub use identity::{GatewayCertificate, PeerCertificate};
pub use kek::Kek;
pub use spiffe::TrustDomain;

/// Everything that can go wrong in this crate. Each variant says what was
/// wrong with which input so an operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("key-encryption key must be {expected} bytes, got {got}")]
    KekLength { expected: usize, got: usize },
    #[error("key-encryption key is not valid base64: {0}")]
    KekEncoding(String),
    #[error("sealed value is malformed: {0}")]
    SealedFormat(&'static str),
    #[error("sealed value does not decrypt under this key-encryption key (wrong key, or tampered)")]
    Unseal,
    #[error("CSR is larger than {max} bytes")]
    CsrTooLarge { max: usize },
    #[error("CSR could not be parsed or its signature does not verify: {0}")]
    CsrInvalid(String),
    #[error("CSR key algorithm is not accepted (use ECDSA P-256/P-384 or Ed25519)")]
    CsrKeyAlgorithm,
    #[error("invalid trust domain {0:?}: lowercase letters, digits, '.', '-' and '_' only")]
    TrustDomain(String),
    #[error("certificate is malformed: {0}")]
    Certificate(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
}
