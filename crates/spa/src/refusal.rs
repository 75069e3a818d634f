//! Why a packet was dropped.
//!
//! One flat enum for both formats so the gateway logs and counts refusals
//! the same way whatever the client. The precise reason is for operators,
//! `umbra spa inspect` and the audit log; the peer never learns it (an
//! invalid SPA packet gets no response at all).

use std::net::IpAddr;

use uuid::Uuid;

/// Every reason a verifier refuses a packet. Variants are ordered roughly
/// in the order the checks run: cheap structural checks first, crypto in
/// the middle, policy (time, address, ports) last.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    // --- structure (before any crypto) ---
    #[error("packet is {len} bytes, shorter than the minimum of {min}")]
    TooShort { len: usize, min: usize },
    #[error("packet is {len} bytes, longer than the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("not a native Umbra SPA packet (bad magic bytes)")]
    BadMagic,
    #[error("unsupported native SPA version {0}")]
    UnsupportedVersion(u8),
    #[error("packet contains characters outside the base64 alphabet")]
    NotBase64,
    #[error("packet starts with the stripped Rijndael prefix U2FsdGVkX1 (fwknopd drops these)")]
    RijndaelPrefix,
    #[error("source {0} matches no access stanza")]
    NoStanza(IpAddr),
    #[error("source {0} is over its rate limit")]
    RateLimited(IpAddr),
    #[error("unknown device {0}")]
    UnknownDevice(Uuid),
    #[error("replayed packet (already accepted within the time window)")]
    Replay,
    #[error("replay cache is full; refusing rather than forgetting a packet")]
    ReplayCacheFull,

    // --- cryptography ---
    #[error(
        "authentication failed: the AEAD tag or HMAC does not verify (wrong key or tampered packet)"
    )]
    BadMac,
    #[error(
        "decryption failed: the plaintext does not start with 16 digits and ':' (wrong key or mode)"
    )]
    DecryptionFailed,
    #[error("inner digest does not match the decrypted message")]
    DigestMismatch,
    #[error("malformed packet body: {0}")]
    Malformed(&'static str),

    // --- time ---
    #[error(
        "packet timestamp {timestamp} is before this verifier started ({started}); \
         a previous instance may have accepted it"
    )]
    BeforeStartup { timestamp: u64, started: u64 },
    #[error("packet is {age} s old, outside the {window} s window")]
    Stale { age: u64, window: u64 },
    #[error("packet is {ahead} s in the future, outside the {window} s window")]
    Future { ahead: u64, window: u64 },

    // --- what the packet asks for ---
    #[error("packet asks to open {requested} but came from {from}")]
    AddressMismatch { requested: IpAddr, from: IpAddr },
    #[error("packet asks to open 0.0.0.0 but the stanza requires an explicit source address")]
    SourceAddressRequired,
    #[error("username {got:?} is not the one the stanza requires")]
    UsernameMismatch { got: String },
    #[error("requested port {0} is not allowed by the access stanza")]
    PortDenied(String),
    #[error("unsupported fwknop message type: {0}")]
    UnsupportedMessage(&'static str),
}

impl Refusal {
    /// A short stable label for metrics (`umbra_spa_refused_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::TooShort { .. } => "too_short",
            Refusal::TooLong { .. } => "too_long",
            Refusal::BadMagic => "bad_magic",
            Refusal::UnsupportedVersion(_) => "unsupported_version",
            Refusal::NotBase64 => "not_base64",
            Refusal::RijndaelPrefix => "rijndael_prefix",
            Refusal::NoStanza(_) => "no_stanza",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::UnknownDevice(_) => "unknown_device",
            Refusal::Replay => "replay",
            Refusal::ReplayCacheFull => "replay_cache_full",
            Refusal::BadMac => "bad_mac",
            Refusal::DecryptionFailed => "decryption_failed",
            Refusal::DigestMismatch => "digest_mismatch",
            Refusal::Malformed(_) => "malformed",
            Refusal::BeforeStartup { .. } => "before_startup",
            Refusal::Stale { .. } => "stale",
            Refusal::Future { .. } => "future",
            Refusal::AddressMismatch { .. } => "address_mismatch",
            Refusal::SourceAddressRequired => "source_address_required",
            Refusal::UsernameMismatch { .. } => "username_mismatch",
            Refusal::PortDenied(_) => "port_denied",
            Refusal::UnsupportedMessage(_) => "unsupported_message",
        }
    }
}
