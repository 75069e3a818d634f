//! The hash algorithms fwknop uses for its inner digest and its HMAC.
//!
//! Everything works on stack buffers ([`DigestBuf`]) so the HMAC check on
//! the hot path allocates nothing.

use std::fmt;
use std::str::FromStr;

use hmac::{KeyInit, Mac, SimpleHmac};
use sha2::Digest;
use sha2::digest::common::BlockSizeUser;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use zeroize::{Zeroize, Zeroizing};

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

/// An HMAC key made ready once, when a stanza is loaded: the key block
/// XORed with ipad and with opad is hashed then (RFC 2104), and the two
/// midstates are kept. Each MAC then hashes only the message and one outer
/// block, two compressions fewer than keying per packet.
///
/// The midstates are as good as the key for forging MACs, so they are kept
/// serialized in zeroized buffers, wiped on drop like the key itself.
#[derive(Clone)]
pub struct HmacKey {
    digest: DigestType,
    inner: Zeroizing<Vec<u8>>,
    outer: Zeroizing<Vec<u8>>,
}

macro_rules! hmac_key_dispatch {
    ($digest:expr, $f:ident ( $($arg:expr),* )) => {
        match $digest {
            DigestType::Md5 => $f::<md5::Md5>($($arg),*),
            DigestType::Sha1 => $f::<sha1::Sha1>($($arg),*),
            DigestType::Sha256 => $f::<sha2::Sha256>($($arg),*),
            DigestType::Sha384 => $f::<sha2::Sha384>($($arg),*),
            DigestType::Sha512 => $f::<sha2::Sha512>($($arg),*),
            DigestType::Sha3_256 => $f::<sha3::Sha3_256>($($arg),*),
            DigestType::Sha3_512 => $f::<sha3::Sha3_512>($($arg),*),
        }
    };
}

impl HmacKey {
    /// Key `digest`'s HMAC with `key` (any length: RFC 2104 hashes keys
    /// longer than the block, zero-pads shorter ones).
    pub fn new(digest: DigestType, key: &[u8]) -> Self {
        let (inner, outer) = hmac_key_dispatch!(digest, pad_states(key));
        Self {
            digest,
            inner,
            outer,
        }
    }

    /// The hash the MAC uses.
    pub fn digest(&self) -> DigestType {
        self.digest
    }

    /// HMAC of the concatenation of `parts` (no allocation). `None` only if
    /// a midstate does not deserialize, which would be a bug here.
    pub fn mac(&self, parts: &[&[u8]]) -> Option<DigestBuf> {
        hmac_key_dispatch!(
            self.digest,
            mac_from_states(&self.inner, &self.outer, parts)
        )
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey({}, ***)", self.digest)
    }
}

const IPAD: u8 = 0x36;
const OPAD: u8 = 0x5c;

/// The serialized states of `D` after hashing `K ^ ipad` and `K ^ opad`.
fn pad_states<D>(key: &[u8]) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>)
where
    D: Digest + BlockSizeUser + SerializableState,
{
    let mut block = Zeroizing::new(vec![0u8; D::block_size()]);
    if key.len() > block.len() {
        let mut h = D::digest(key);
        block[..h.len()].copy_from_slice(&h);
        h.as_mut_slice().zeroize();
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut state = |pad: u8| {
        block.iter_mut().for_each(|b| *b ^= pad);
        let mut d = D::new();
        Digest::update(&mut d, &block[..]);
        block.iter_mut().for_each(|b| *b ^= pad);
        let mut serialized = d.serialize();
        let kept = Zeroizing::new(serialized.as_slice().to_vec());
        serialized.as_mut_slice().zeroize();
        kept
    };
    (state(IPAD), state(OPAD))
}

/// `H(outer || H(inner || parts))` from the two pad midstates.
fn mac_from_states<D>(inner: &[u8], outer: &[u8], parts: &[&[u8]]) -> Option<DigestBuf>
where
    D: Digest + SerializableState,
{
    let mut h = D::deserialize(&SerializedState::<D>::try_from(inner).ok()?).ok()?;
    for p in parts {
        Digest::update(&mut h, p);
    }
    let inner_hash = h.finalize();
    let mut h = D::deserialize(&SerializedState::<D>::try_from(outer).ok()?).ok()?;
    Digest::update(&mut h, &inner_hash);
    Some(DigestBuf::from_slice(&h.finalize()))
}

/// Constant-time equality of two MACs or digests (their lengths are
/// public). The bytes are folded branch-free and only the result goes
/// through `subtle`, instead of one optimisation barrier per byte.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    bool::from(subtle::ConstantTimeEq::ct_eq(&diff, &0u8))
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
