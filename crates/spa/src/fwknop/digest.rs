//! The hash algorithms fwknop uses for its inner digest and its HMAC.
//!
//! Everything works on stack buffers ([`DigestBuf`]) so the HMAC check on
//! the hot path allocates nothing.

use std::fmt;
use std::str::FromStr;

use hmac::{KeyInit, Mac, SimpleHmac};
use sha2::Digest as _;

/// Hash algorithms fwknop uses for the inner digest and the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestType {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sha3_256,
    Sha3_512,
}

/// A digest or MAC output on the stack (at most 64 bytes).
#[derive(Clone, Copy)]
pub struct DigestBuf {
    bytes: [u8; 64],
    len: usize,
}

impl DigestBuf {
    fn from_slice(s: &[u8]) -> Self {
        let mut bytes = [0u8; 64];
        bytes[..s.len()].copy_from_slice(s);
        Self {
            bytes,
            len: s.len(),
        }
    }

    /// The output bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

macro_rules! hash_parts {
    ($h:ty, $parts:expr) => {{
        let mut d = <$h>::new();
        for p in $parts {
            d.update(p);
        }
        DigestBuf::from_slice(&d.finalize())
    }};
}

macro_rules! hmac_parts {
    ($h:ty, $key:expr, $parts:expr) => {{
        // SimpleHmac accepts keys of any length (RFC 2104: long keys are
        // hashed first), so this cannot fail.
        let mut m = <SimpleHmac<$h> as KeyInit>::new_from_slice($key).ok()?;
        for p in $parts {
            m.update(p);
        }
        DigestBuf::from_slice(&m.finalize().into_bytes())
    }};
}

impl DigestType {
    /// All types, in fwknop's numbering order.
    pub const ALL: [DigestType; 7] = [
        DigestType::Md5,
        DigestType::Sha1,
        DigestType::Sha256,
        DigestType::Sha384,
        DigestType::Sha512,
        DigestType::Sha3_256,
        DigestType::Sha3_512,
    ];

    /// fwknop's lowercase name (`sha3_256` style).
    pub fn name(self) -> &'static str {
        match self {
            DigestType::Md5 => "md5",
            DigestType::Sha1 => "sha1",
            DigestType::Sha256 => "sha256",
            DigestType::Sha384 => "sha384",
            DigestType::Sha512 => "sha512",
            DigestType::Sha3_256 => "sha3_256",
            DigestType::Sha3_512 => "sha3_512",
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestType::Md5 => 16,
            DigestType::Sha1 => 20,
            DigestType::Sha256 | DigestType::Sha3_256 => 32,
            DigestType::Sha384 => 48,
            DigestType::Sha512 | DigestType::Sha3_512 => 64,
        }
    }

    /// Length of the unpadded base64 form (how fwknop tells types apart).
    pub fn b64_len(self) -> usize {
        (self.output_len() * 4).div_ceil(3)
    }

    /// Inner-digest candidates for a base64 length; SHA-2 before SHA-3 as
    /// libfko tries them.
    pub fn by_b64_len(len: usize) -> &'static [DigestType] {
        match len {
            22 => &[DigestType::Md5],
            27 => &[DigestType::Sha1],
            43 => &[DigestType::Sha256, DigestType::Sha3_256],
            64 => &[DigestType::Sha384],
            86 => &[DigestType::Sha512, DigestType::Sha3_512],
            _ => &[],
        }
    }

    /// Hash the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> DigestBuf {
        match self {
            DigestType::Md5 => hash_parts!(md5::Md5, parts),
            DigestType::Sha1 => hash_parts!(sha1::Sha1, parts),
            DigestType::Sha256 => hash_parts!(sha2::Sha256, parts),
            DigestType::Sha384 => hash_parts!(sha2::Sha384, parts),
            DigestType::Sha512 => hash_parts!(sha2::Sha512, parts),
            DigestType::Sha3_256 => hash_parts!(sha3::Sha3_256, parts),
            DigestType::Sha3_512 => hash_parts!(sha3::Sha3_512, parts),
        }
    }

    /// RFC 2104 HMAC of the concatenation of `parts` (no allocation).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Option<DigestBuf> {
        Some(match self {
            DigestType::Md5 => hmac_parts!(md5::Md5, key, parts),
            DigestType::Sha1 => hmac_parts!(sha1::Sha1, key, parts),
            DigestType::Sha256 => hmac_parts!(sha2::Sha256, key, parts),
            DigestType::Sha384 => hmac_parts!(sha2::Sha384, key, parts),
            DigestType::Sha512 => hmac_parts!(sha2::Sha512, key, parts),
            DigestType::Sha3_256 => hmac_parts!(sha3::Sha3_256, key, parts),
            DigestType::Sha3_512 => hmac_parts!(sha3::Sha3_512, key, parts),
        })
    }
}

impl fmt::Display for DigestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DigestType {
    type Err = String;

    /// Case-insensitive; `sha3_256` and `sha3-256` both work.
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        DigestType::ALL
            .into_iter()
            .find(|d| d.name() == norm)
            .ok_or_else(|| {
                format!("unknown digest type {s:?} (md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512)")
            })
    }
}
