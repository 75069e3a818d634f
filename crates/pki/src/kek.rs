//! Sealing secrets at rest under the key-encryption key (KEK).
//!
//! The CA key, token-signing keys and TOTP secrets are stored sealed: a
//! database dump or a stolen SQLite file reveals nothing without the KEK,
//! which lives outside the store (config file or environment).
//!
//! Format: `v1.<base64url(nonce ‖ ciphertext ‖ tag)>`, AES-256-GCM with a
//! random 96-bit nonce. The AAD is a context label (`"ca-key"`,
//! `"totp:<user-id>"`, …) so a sealed value copied into another row or column
//! fails to open instead of being accepted as that row's secret.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::PkiError;

const PREFIX: &str = "v1.";

/// The key-encryption key. `Debug` never prints key material.
pub struct Kek {
    key: RandomizedNonceKey,
    /// A separate key, derived from the KEK, for keyed hashes of
    /// low-entropy secrets (recovery codes): a stolen database cannot be
    /// brute-forced offline without the KEK.
    mac: hmac::Key,
    id: String,
}

impl Kek {
    /// A KEK is 32 random bytes.
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PkiError> {
        if bytes.len() != Self::LEN {
            return Err(PkiError::KekLength {
                expected: Self::LEN,
                got: bytes.len(),
            });
        }
        let key =
            RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| PkiError::KekLength {
                expected: Self::LEN,
                got: bytes.len(),
            })?;
        // A public identifier: lets operators and the store tell which KEK
        // sealed a value without revealing anything about the key.
        let digest = Sha256::digest([b"umbra-kek-id:".as_slice(), bytes].concat());
        let id = hex::encode(&digest[..8]);
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes),
            b"umbra-kek-mac-v1",
        );
        let mac = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        Ok(Self { key, mac, id })
    }

    /// Parses the standard base64 form used in config files and `UMBRA_KEK`.
    pub fn from_base64(text: &str) -> Result<Self, PkiError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|e| PkiError::KekEncoding(e.to_string()))?,
        );
        Self::from_bytes(&bytes)
    }

    /// A fresh random KEK and its base64 form (to be written to a 0600 file).
    pub fn generate() -> Result<(Self, Zeroizing<String>), PkiError> {
        let mut bytes = Zeroizing::new([0u8; Self::LEN]);
        aws_lc_rs::rand::fill(bytes.as_mut_slice())
            .map_err(|_| PkiError::KekEncoding("random generator failed".into()))?;
        let text = Zeroizing::new(STANDARD.encode(bytes.as_slice()));
        Ok((Self::from_bytes(bytes.as_slice())?, text))
    }

    /// Public, non-secret identifier of this key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A keyed hash of `data` bound to `context`, hex.
    pub fn mac(&self, context: &str, data: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(context.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        hex::encode(ctx.sign().as_ref())
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, PkiError> {
        let mut buf = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| PkiError::SealedFormat("encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        buf.iter_mut().for_each(|b| *b = 0);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or(PkiError::SealedFormat("missing version prefix"))?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| PkiError::SealedFormat("not base64url"))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(PkiError::SealedFormat("too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| PkiError::Unseal)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), buf.as_mut_slice())
            .map_err(|_| PkiError::Unseal)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn round_trip() {
        let k = kek(7);
        let sealed = k.seal("totp:u1", b"JBSWY3DPEHPK3PXP").expect("seal");
        assert!(!sealed.contains("JBSWY3DP"));
        assert_eq!(
            k.open("totp:u1", &sealed).expect("open").as_slice(),
            b"JBSWY3DPEHPK3PXP"
        );
    }

    #[test]
    fn nonces_differ() {
        let k = kek(7);
        assert_ne!(
            k.seal("c", b"x").expect("seal"),
            k.seal("c", b"x").expect("seal")
        );
    }

    #[test]
    fn wrong_context_wrong_key_and_tampering_fail() {
        let k = kek(7);
        let sealed = k.seal("totp:u1", b"secret").expect("seal");
        assert!(matches!(k.open("totp:u2", &sealed), Err(PkiError::Unseal)));
        assert!(matches!(
            kek(8).open("totp:u1", &sealed),
            Err(PkiError::Unseal)
        ));
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(k.open("totp:u1", &tampered).is_err());
        assert!(matches!(
            k.open("c", "v2.abc"),
            Err(PkiError::SealedFormat(_))
        ));
        assert!(matches!(
            k.open("c", "v1.AAAA"),
            Err(PkiError::SealedFormat(_))
        ));
    }

    #[test]
    fn macs_depend_on_key_context_and_data() {
        let m = kek(7).mac("recovery:u1", b"abcde");
        assert_eq!(m.len(), 64);
        assert_eq!(m, kek(7).mac("recovery:u1", b"abcde"));
        assert_ne!(m, kek(8).mac("recovery:u1", b"abcde"));
        assert_ne!(m, kek(7).mac("recovery:u2", b"abcde"));
        assert_ne!(m, kek(7).mac("recovery:u1", b"abcdf"));
    }

    #[test]
    fn bad_key_material_is_refused() {
        assert!(matches!(
            Kek::from_bytes(&[0; 16]),
            Err(PkiError::KekLength { got: 16, .. })
        ));
        assert!(matches!(
            Kek::from_base64("not base64!"),
            Err(PkiError::KekEncoding(_))
        ));
        let (k, text) = Kek::generate().expect("generate");
        assert_eq!(Kek::from_base64(&text).expect("parse").id(), k.id());
        assert!(!format!("{k:?}").contains(text.as_str()));
    }
}
