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
use zeroize::Zeroizing;

use super::digest::DigestType;

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
    let mut legacy = Zeroizing::new([b'0'; 16]);
    let password = if mode == EncryptionMode::LegacyIv {
        let n = password.len().min(16);
        legacy[..n].copy_from_slice(&password[..n]);
        &legacy[..]
    } else {
        password
    };
    let d1 = DigestType::Md5.hash(&[password, salt]);
    let d2 = DigestType::Md5.hash(&[d1.as_slice(), password, salt]);
    let d3 = DigestType::Md5.hash(&[d2.as_slice(), password, salt]);
    let mut key = Zeroizing::new([0u8; 32]);
    key[..16].copy_from_slice(d1.as_slice());
    key[16..].copy_from_slice(d2.as_slice());
    let mut iv = Zeroizing::new([0u8; 16]);
    iv.copy_from_slice(d3.as_slice());
    (key, iv)
}

/// Encrypt or decrypt `data` in place; its length must be a multiple of 16
/// (fwknop pads with PKCS#7 in every mode, stream modes included).
pub fn crypt(mode: EncryptionMode, key: &[u8; 32], iv: &[u8; 16], data: &mut [u8], encrypt: bool) {
    debug_assert_eq!(data.len() % 16, 0);
    match mode {
        EncryptionMode::Cbc | EncryptionMode::LegacyIv => {
            if encrypt {
                let mut c = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
                for chunk in data.chunks_exact_mut(16) {
                    let mut b = block(chunk);
                    c.encrypt_block(&mut b);
                    chunk.copy_from_slice(&b);
                }
            } else {
                let mut c = cbc::Decryptor::<Aes256>::new(key.into(), iv.into());
                for chunk in data.chunks_exact_mut(16) {
                    let mut b = block(chunk);
                    c.decrypt_block(&mut b);
                    chunk.copy_from_slice(&b);
                }
            }
        }
        EncryptionMode::Ecb => {
            use aes::cipher::BlockCipherDecrypt;
            let c = Aes256::new(key.into());
            for chunk in data.chunks_exact_mut(16) {
                let mut b = block(chunk);
                if encrypt {
                    c.encrypt_block(&mut b);
                } else {
                    c.decrypt_block(&mut b);
                }
                chunk.copy_from_slice(&b);
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
