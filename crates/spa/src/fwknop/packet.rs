//! The outer fwknop layer: structure checks, HMAC, Rijndael (FWKNOP.md
//! §2.2–2.4, §2.9), for one set of keys.
//!
//! [`decode`] does what libfko's `fko_new_with_data()` does plus fwknopd's
//! pre-checks; it does not look at time, replay or access rules (that is
//! [`super::FwknopVerifier`]). Nothing is allocated before the HMAC has
//! verified: the MAC is computed over the restored prefix and the packet in
//! two updates, and compared in base64 form, in constant time, on the stack.

use std::fmt;

use sha2::Digest;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::b64;
use super::crypto::{EncryptionMode, KeyIv, crypt, pkcs7_pad, pkcs7_unpad_lenient};
use super::digest::{DigestType, HmacKey, ct_eq};
use super::message::Message;
use super::parse::parse_plaintext;
use crate::Refusal;

/// base64("Salted__") minus its last 2 bits: the client strips it.
pub const RIJNDAEL_PREFIX: &[u8] = b"U2FsdGVkX1";
/// fwknopd drops shorter payloads (`MIN_SPA_DATA_SIZE`).
pub const MIN_PACKET: usize = 140;
/// fwknopd drops longer payloads (`MAX_SPA_PACKET_LEN`).
pub const MAX_PACKET: usize = 1500;
/// libfko treats a prefixed ciphertext of this many base64 chars or more
/// as GnuPG; Umbra does not speak GnuPG mode.
pub const GPG_THRESHOLD: usize = 400;
/// Longest Rijndael passphrase (`RIJNDAEL_MAX_KEYSIZE`).
pub const MAX_KEY: usize = 32;
/// Longest HMAC key (`MAX_DIGEST_BLOCK_LEN`).
pub const MAX_HMAC_KEY: usize = 136;

/// Key material for one access stanza (or one client).
#[derive(Clone)]
pub struct FwknopKeys {
    key: Zeroizing<Vec<u8>>,
    mode: EncryptionMode,
    /// Keyed once here, not per packet (see [`HmacKey`]).
    hmac: Option<HmacKey>,
}

/// Unusable key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FwknopKeyError {
    #[error("Rijndael key must be 1 to {MAX_KEY} bytes, got {0}")]
    KeyLength(usize),
    #[error("HMAC key must be 1 to {MAX_HMAC_KEY} bytes, got {0}")]
    HmacKeyLength(usize),
    #[error("the HMAC key must differ from the Rijndael key")]
    SameKeys,
    #[error("legacy IV mode cannot be combined with HMAC (fwknop refuses it too)")]
    LegacyWithHmac,
}

impl FwknopKeys {
    /// Validate and wrap keys. `hmac: None` is the unauthenticated legacy
    /// setup; access stanzas refuse it unless explicitly allowed.
    pub fn new(
        key: &[u8],
        mode: EncryptionMode,
        hmac: Option<(&[u8], DigestType)>,
    ) -> Result<Self, FwknopKeyError> {
        // Legacy mode truncates long keys to 16 itself; others refuse > 32.
        if key.is_empty() || (key.len() > MAX_KEY && mode != EncryptionMode::LegacyIv) {
            return Err(FwknopKeyError::KeyLength(key.len()));
        }
        let hmac = match hmac {
            None => None,
            Some((hk, _)) if hk.is_empty() || hk.len() > MAX_HMAC_KEY => {
                return Err(FwknopKeyError::HmacKeyLength(hk.len()));
            }
            Some((hk, _)) if bool::from(hk.ct_eq(key)) => return Err(FwknopKeyError::SameKeys),
            Some(_) if mode == EncryptionMode::LegacyIv => {
                return Err(FwknopKeyError::LegacyWithHmac);
            }
            Some((hk, d)) => Some(HmacKey::new(d, hk)),
        };
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
            mode,
            hmac,
        })
    }

    /// The encryption mode.
    pub fn mode(&self) -> EncryptionMode {
        self.mode
    }

    /// The HMAC digest, if HMAC is used.
    pub fn hmac_digest(&self) -> Option<DigestType> {
        self.hmac.as_ref().map(HmacKey::digest)
    }
}

impl fmt::Debug for FwknopKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FwknopKeys")
            .field("key", &"***")
            .field("mode", &self.mode)
            .field("hmac", &self.hmac.as_ref().map(|h| (Redacted, h.digest())))
            .finish()
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// fwknopd's pre-checks (§3.1 step 1): size, no leading prefix, alphabet.
pub fn check_structure(packet: &[u8]) -> Result<(), Refusal> {
    if packet.len() < MIN_PACKET {
        return Err(Refusal::TooShort {
            len: packet.len(),
            min: MIN_PACKET,
        });
    }
    if packet.len() > MAX_PACKET {
        return Err(Refusal::TooLong {
            len: packet.len(),
            max: MAX_PACKET,
        });
    }
    if packet.starts_with(RIJNDAEL_PREFIX) {
        return Err(Refusal::RijndaelPrefix);
    }
    if !b64::is_base64_charset(packet) {
        return Err(Refusal::NotBase64);
    }
    Ok(())
}

/// fwknopd's replay-cache key: SHA-256 of the payload exactly as received.
pub fn replay_digest(packet: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(packet).into()
}

/// Check structure and HMAC, decrypt and parse `packet` with `keys`.
pub fn decode(packet: &[u8], keys: &FwknopKeys) -> Result<Message, Refusal> {
    check_structure(packet)?;
    decode_checked(packet, keys)
}

/// Longest prefixed base64 ciphertext: libfko calls 400+ chars GnuPG.
const MAX_CT_B64: usize = GPG_THRESHOLD - 1;
/// Its decoded size, rounded up to whole base64 quanta.
const MAX_RAW: usize = b64::decoded_len_max(MAX_CT_B64);

/// [`decode`] for a packet that already passed [`check_structure`] (the
/// verifier checks it once, then tries each matching stanza).
pub(crate) fn decode_checked(packet: &[u8], keys: &FwknopKeys) -> Result<Message, Refusal> {
    // fwknopd only tries AES on payloads under 400 chars (pitfall P3).
    if packet.len() >= GPG_THRESHOLD {
        return Err(Refusal::UnsupportedMessage(
            "GnuPG-sized packet (Umbra speaks Rijndael only)",
        ));
    }
    let ct_b64 = match &keys.hmac {
        Some(hk) => {
            let mac_len = hk.digest().b64_len();
            let Some(split) = packet.len().checked_sub(mac_len) else {
                return Err(Refusal::TooShort {
                    len: packet.len(),
                    min: MIN_PACKET,
                });
            };
            let (ct, mac) = packet.split_at(split);
            check_rijndael_len(ct)?;
            let computed = hk.mac(&[RIJNDAEL_PREFIX, ct]).ok_or(Refusal::BadMac)?;
            let mut buf = [0u8; 88];
            let n = b64::encode_into(computed.as_slice(), &mut buf).ok_or(Refusal::BadMac)?;
            if !ct_eq(&buf[..n], mac) {
                return Err(Refusal::BadMac);
            }
            ct
        }
        None => {
            check_rijndael_len(packet)?;
            packet
        }
    };
    // Restore the prefix and decode on the stack, no allocation; the
    // plaintext is decrypted in place and wiped (below).
    let mut text = [0u8; MAX_CT_B64];
    let text_len = RIJNDAEL_PREFIX.len() + ct_b64.len();
    text[..RIJNDAEL_PREFIX.len()].copy_from_slice(RIJNDAEL_PREFIX);
    text[RIJNDAEL_PREFIX.len()..text_len].copy_from_slice(ct_b64);
    let mut raw = [0u8; MAX_RAW];
    let raw_len = b64::decode_into(&text[..text_len], &mut raw).ok_or(Refusal::NotBase64)?;
    let raw = &mut raw[..raw_len];
    if raw_len < 32 || &raw[..8] != b"Salted__" || (raw_len - 16) % 16 != 0 {
        return Err(Refusal::DecryptionFailed);
    }
    let (head, ct) = raw.split_at_mut(16);
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&head[8..]);
    let d = KeyIv::derive(&keys.key, &salt, keys.mode);
    // Decrypted in place; wiped on every way out, only as far as it is used.
    let pt = WipeOnDrop(ct);
    crypt(keys.mode, &d.key, &d.iv, pt.0, false);
    parse_plaintext(pkcs7_unpad_lenient(pt.0))
}

/// Zeroizes the borrowed plaintext when dropped.
struct WipeOnDrop<'a>(&'a mut [u8]);

impl Drop for WipeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// libfko classifies a prefixed ciphertext of 400+ chars as GnuPG.
fn check_rijndael_len(ct_b64: &[u8]) -> Result<(), Refusal> {
    if RIJNDAEL_PREFIX.len() + ct_b64.len() >= GPG_THRESHOLD {
        return Err(Refusal::UnsupportedMessage(
            "GnuPG-sized packet (Umbra speaks Rijndael only)",
        ));
    }
    Ok(())
}

/// A message fwknopd would not accept from us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("encoded packet is {0} characters; fwknopd only decrypts Rijndael packets under 400")]
    TooLong(usize),
}

/// Encrypt `message` with a fresh random salt, as the stock client does.
pub fn encode(message: &Message, keys: &FwknopKeys) -> Result<String, EncodeError> {
    let mut salt = [0u8; 8];
    rand::fill(&mut salt[..]);
    encode_with_salt(message, keys, salt)
}

/// Encrypt `message` with a given salt (deterministic; for tests/vectors).
pub fn encode_with_salt(
    message: &Message,
    keys: &FwknopKeys,
    salt: [u8; 8],
) -> Result<String, EncodeError> {
    let mut pt = Zeroizing::new(message.to_plaintext().into_bytes());
    pkcs7_pad(&mut pt);
    let d = KeyIv::derive(&keys.key, &salt, keys.mode);
    crypt(keys.mode, &d.key, &d.iv, &mut pt, true);
    let mut raw = Vec::with_capacity(16 + pt.len());
    raw.extend_from_slice(b"Salted__");
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(&pt);
    let c = b64::encode(&raw);
    let mut packet = c[RIJNDAEL_PREFIX.len()..].to_string();
    if let Some(hk) = &keys.hmac
        && let Some(mac) = hk.mac(&[c.as_bytes()])
    {
        packet.push_str(&b64::encode(mac.as_slice()));
    }
    if c.len() >= GPG_THRESHOLD || packet.len() >= GPG_THRESHOLD {
        return Err(EncodeError::TooLong(packet.len()));
    }
    Ok(packet)
}
