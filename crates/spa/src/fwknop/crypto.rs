//! fwknop's encryption: the OpenSSL `EVP_BytesToKey` key derivation, the
//! AES-256 block modes and PKCS#7 padding.
//!
//! These are fixed by the wire format (FWKNOP.md §2.3–2.7), weak parts
//! included (MD5 KDF, unauthenticated CBC): compatibility is the point.
//! What keeps the mode safe is the HMAC checked before decryption, which is
//! why Umbra requires it by default.

use std::fmt;
use std::str::FromStr;

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit};
use zeroize::{Zeroize, Zeroizing};

use md5::{Digest, Md5};

/// Rijndael modes fwknop offers (`ENCRYPTION_MODE`, client `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionMode {
    Cbc,
    Ecb,
    Cfb,
    Ofb,
    Ctr,
    /// CBC with fwknop's legacy key handling: passphrases shorter than 16
    /// bytes are right-padded with `'0'`, longer ones truncated to 16.
    LegacyIv,
}

impl EncryptionMode {
    /// fwknop's name.
    pub fn name(self) -> &'static str {
        match self {
            EncryptionMode::Cbc => "cbc",
            EncryptionMode::Ecb => "ecb",
            EncryptionMode::Cfb => "cfb",
            EncryptionMode::Ofb => "ofb",
            EncryptionMode::Ctr => "ctr",
            EncryptionMode::LegacyIv => "legacy",
        }
    }
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncryptionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cbc" => Ok(EncryptionMode::Cbc),
            "ecb" => Ok(EncryptionMode::Ecb),
            "cfb" => Ok(EncryptionMode::Cfb),
            "ofb" => Ok(EncryptionMode::Ofb),
            "ctr" => Ok(EncryptionMode::Ctr),
            "legacy" => Ok(EncryptionMode::LegacyIv),
            _ => Err(format!(
                "unsupported encryption mode {s:?} (cbc, ecb, cfb, ofb, ctr, legacy; GnuPG/asymmetric is not supported)"
            )),
        }
    }
}

/// OpenSSL `EVP_BytesToKey(MD5, salt, password, count = 1)`: 32-byte key
/// and 16-byte IV, always AES-256 whatever the passphrase length.
pub fn evp_bytes_to_key(
    password: &[u8],
    salt: &[u8; 8],
    mode: EncryptionMode,
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 16]>) {
    let d = KeyIv::derive(password, salt, mode);
    (Zeroizing::new(d.key), Zeroizing::new(d.iv))
}

/// An [`evp_bytes_to_key`] result that wipes itself on drop, as slices:
/// one bulk fill per buffer, where `Zeroizing<[u8; N]>` issues one
/// volatile byte store per element.
pub(crate) struct KeyIv {
    pub(crate) key: [u8; 32],
    pub(crate) iv: [u8; 16],
}

impl KeyIv {
    pub(crate) fn derive(password: &[u8], salt: &[u8; 8], mode: EncryptionMode) -> Self {
        let mut legacy = [b'0'; 16];
        let password = if mode == EncryptionMode::LegacyIv {
            let n = password.len().min(16);
            legacy[..n].copy_from_slice(&password[..n]);
            &legacy[..]
        } else {
            password
        };
        let mut d = KeyIv {
            key: [0u8; 32],
            iv: [0u8; 16],
        };
        // D_i = MD5(D_{i-1} || P || salt), D_0 empty. The messages are laid
        // out once as D || P || salt; each round overwrites D.
        let mut msg = [0u8; 16 + MAX_SHORT_PASSWORD + 8];
        let n = 16 + password.len() + 8;
        if let Some(m) = msg.get_mut(..n) {
            m[16..n - 8].copy_from_slice(password);
            m[n - 8..].copy_from_slice(salt);
            md5_short(&m[16..], &mut d.key[..16]);
            m[..16].copy_from_slice(&d.key[..16]);
            md5_short(m, &mut d.key[16..]);
            m[..16].copy_from_slice(&d.key[16..]);
            md5_short(m, &mut d.iv);
        } else {
            // Only through `evp_bytes_to_key` (stanza keys are <= 32 bytes).
            let round = |prev: &[u8], out: &mut [u8]| {
                let mut h = Md5::new();
                h.update(prev);
                h.update(password);
                h.update(salt);
                out.copy_from_slice(&h.finalize());
            };
            let (d1, d2) = d.key.split_at_mut(16);
            round(&[], d1);
            round(d1, d2);
            round(d2, &mut d.iv);
        }
        msg.as_mut_slice().zeroize();
        legacy.as_mut_slice().zeroize();
        d
    }
}

/// Longest password [`md5_short`] takes in a KDF round (D || P || salt and
/// the MD5 padding fit two blocks).
const MAX_SHORT_PASSWORD: usize = 2 * 64 - 9 - 16 - 8;

/// MD5 of a message of at most 119 bytes, padded on the stack (RFC 1321
/// §3.1–3.2) and fed to md-5's block function directly. The KDF's five
/// compressions are a fifth of a packet's cost and cannot be avoided; the
/// streaming hasher's buffering and finalization around them added about a
/// sixth more in profiles.
fn md5_short(message: &[u8], out: &mut [u8]) {
    const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut blocks = [[0u8; 64]; 2];
    let flat = blocks.as_flattened_mut();
    let len = message.len();
    debug_assert!(len + 9 <= flat.len());
    flat[..len].copy_from_slice(message);
    flat[len] = 0x80;
    let used = if len + 9 <= 64 { 64 } else { 128 };
    let bits = (len as u64) * 8;
    flat[used - 8..used].copy_from_slice(&bits.to_le_bytes());
    let mut state = INIT;
    md5::block_api::compress(&mut state, &blocks[..used / 64]);
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    blocks.as_flattened_mut().zeroize();
}

impl Drop for KeyIv {
    fn drop(&mut self) {
        self.key.as_mut_slice().zeroize();
        self.iv.as_mut_slice().zeroize();
    }
}

/// Encrypt or decrypt `data` in place; its length must be a multiple of 16
/// (fwknop pads with PKCS#7 in every mode, stream modes included).
pub fn crypt(mode: EncryptionMode, key: &[u8; 32], iv: &[u8; 16], data: &mut [u8], encrypt: bool) {
    debug_assert_eq!(data.len() % 16, 0);
    // Whole blocks at once: the AES backends pipeline several blocks per
    // call (CBC decryption and ECB are parallel) and set up once.
    let (blocks, _partial) = aes::Block::slice_as_chunks_mut(data);
    match mode {
        EncryptionMode::Cbc | EncryptionMode::LegacyIv => {
            if encrypt {
                cbc::Encryptor::<Aes256>::new(key.into(), iv.into()).encrypt_blocks(blocks);
            } else {
                cbc::Decryptor::<Aes256>::new(key.into(), iv.into()).decrypt_blocks(blocks);
            }
        }
        EncryptionMode::Ecb => {
            use aes::cipher::BlockCipherDecrypt;
            let c = Aes256::new(key.into());
            if encrypt {
                c.encrypt_blocks(blocks);
            } else {
                c.decrypt_blocks(blocks);
            }
        }
        EncryptionMode::Cfb | EncryptionMode::Ofb | EncryptionMode::Ctr => {
            stream_mode(mode, key, iv, data, encrypt);
        }
    }
}

/// CFB-128, OFB and CTR (128-bit big-endian counter starting at the IV):
/// all built on the block encryption only.
fn stream_mode(
    mode: EncryptionMode,
    key: &[u8; 32],
    iv: &[u8; 16],
    data: &mut [u8],
    encrypt: bool,
) {
    let c = Aes256::new(key.into());
    let mut reg = *iv;
    let mut counter = u128::from_be_bytes(*iv);
    for chunk in data.chunks_exact_mut(16) {
        let mut ks = if mode == EncryptionMode::Ctr {
            let b = aes::Block::from(counter.to_be_bytes());
            counter = counter.wrapping_add(1);
            b
        } else {
            aes::Block::from(reg)
        };
        c.encrypt_block(&mut ks);
        let input = block(chunk);
        for (d, k) in chunk.iter_mut().zip(ks.iter()) {
            *d ^= k;
        }
        match mode {
            EncryptionMode::Ofb => reg.copy_from_slice(&ks),
            // CFB feeds back the ciphertext block.
            EncryptionMode::Cfb if encrypt => reg.copy_from_slice(chunk),
            EncryptionMode::Cfb => reg.copy_from_slice(&input),
            _ => {}
        }
    }
}

fn block(chunk: &[u8]) -> aes::Block {
    let mut b = aes::Block::default();
    b.copy_from_slice(chunk);
    b
}

/// Append PKCS#7 padding (always 1..=16 bytes).
pub fn pkcs7_pad(data: &mut Vec<u8>) {
    let n = 16 - data.len() % 16;
    // n is 1..=16, fits in a byte.
    data.resize(data.len() + n, n as u8);
}

/// Strip PKCS#7 padding only if it is consistent; libfko never reports
/// bad padding (the "16 digits then ':'" check and the digest decide).
pub fn pkcs7_unpad_lenient(data: &[u8]) -> &[u8] {
    let Some(&last) = data.last() else {
        return data;
    };
    let n = usize::from(last);
    if (1..=16).contains(&n) && n <= data.len() && data[data.len() - n..].iter().all(|&b| b == last)
    {
        &data[..data.len() - n]
    } else {
        data
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[path = "crypto_tests.rs"]
mod tests;
