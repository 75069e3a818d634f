//! Bearer secrets: enrollment tokens and admin credentials.
//!
//! Each is `<prefix>.<id>.<secret>` (enrollment tokens carry the CA pin in
//! place of an id). Only SHA-256 of the secret is stored: the secrets are 256
//! random bits, so a fast hash is enough (a slow password hash buys nothing
//! against brute force of 2^256) and a stolen database yields no usable
//! credential. Comparisons are constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes, base64url.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // aws-lc's generator only fails if the OS has no entropy source, where
    // nothing in this process could be trusted anyway.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("system random generator unavailable");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A short random id (128 bits, hex) for credential records.
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn hash_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// A parsed `<prefix>.<a>.<b>` credential.
pub struct Parts<'a> {
    pub middle: &'a str,
    pub secret: &'a str,
}

pub fn split<'a>(prefix: &str, token: &'a str) -> Option<Parts<'a>> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('.')?;
    let (middle, secret) = rest.split_once('.')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (ok(middle) && ok(secret)).then_some(Parts { middle, secret })
}

pub const ENROLLMENT_PREFIX: &str = "ue1";
pub const ADMIN_PREFIX: &str = "uat1";
pub const BOOTSTRAP_PREFIX: &str = "ubt1";
/// Gateway enrollment tokens: `ug1.<CA pin>.<secret>`.
pub const GATEWAY_PREFIX: &str = "ug1";

pub fn pin_text(pin: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_strict() {
        let p = split("uat1", "uat1.abc.def").expect("valid");
        assert_eq!((p.middle, p.secret), ("abc", "def"));
        assert!(split("uat1", "ubt1.abc.def").is_none());
        assert!(split("uat1", "uat1.abc").is_none());
        assert!(split("uat1", "uat1..def").is_none());
        assert!(split("uat1", "uat1.a b.def").is_none());
        assert!(split("uat1", "uat1.abc.def.ghi").is_none());
    }

    #[test]
    fn hashes_compare() {
        let s = random_secret();
        assert!(hash_matches(&s, &hash_secret(&s)));
        assert!(!hash_matches("other", &hash_secret(&s)));
    }
}
