//! Sealing and opening native packets. Stateless: no clock, no cache.
//!
//! Opening checks length, magic and version before touching the key, and
//! decrypts into a stack buffer: nothing is allocated until the AEAD tag
//! has verified. The AEAD is aws-lc's ChaCha20-Poly1305 (through
//! `aws-lc-rs`, already in the build for rustls): its tag check is constant
//! time, and for packets this small its fixed costs are a fraction of a
//! portable implementation's, which is what bounds the rate of forged
//! packets naming a real device (`bench/spa.sh`, "bad_tag").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use uuid::Uuid;

use super::{
    HEADER_LEN, Knock, MAGIC, MAX_BODY, MAX_PACKET, MAX_SERVICES, MIN_PACKET, NONCE_LEN, OpenAddr,
    TAG_LEN, VERSION, valid_service_name,
};
use crate::{GatewayKey, Refusal};

const OPEN_SOURCE: u8 = 0;
const OPEN_V4: u8 = 4;
const OPEN_V6: u8 = 6;

/// What the cleartext header says (authenticated only once the packet is
/// opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Key id: the device that claims to have sent the packet.
    pub device: Uuid,
    /// The AEAD nonce.
    pub nonce: [u8; NONCE_LEN],
}

/// A knock the agent cannot encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnockError {
    #[error("a knock names 1 to {max} services, got {got}")]
    ServiceCount { got: usize, max: usize },
    #[error("service name {0:?} is empty, too long or not printable ASCII without spaces")]
    ServiceName(String),
    #[error("AEAD encryption failed")]
    Encrypt,
}

/// Cheap structural checks, no key needed: length, magic, version.
pub fn peek_header(packet: &[u8]) -> Result<Header, Refusal> {
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
    if packet[..3] != MAGIC {
        return Err(Refusal::BadMagic);
    }
    if packet[3] != VERSION {
        return Err(Refusal::UnsupportedVersion(packet[3]));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&packet[4..20]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&packet[20..HEADER_LEN]);
    Ok(Header {
        device: Uuid::from_bytes(id),
        nonce,
    })
}

/// Encrypt `knock` for the gateway holding `key` (agent side).
pub fn seal(key: &GatewayKey, knock: &Knock) -> Result<Vec<u8>, KnockError> {
    if knock.services.is_empty() || knock.services.len() > MAX_SERVICES {
        return Err(KnockError::ServiceCount {
            got: knock.services.len(),
            max: MAX_SERVICES,
        });
    }
    let mut out = Vec::with_capacity(MAX_PACKET);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(knock.device.as_bytes());
    out.extend_from_slice(&knock.nonce);
    out.extend_from_slice(&knock.timestamp.to_be_bytes());
    match knock.open {
        OpenAddr::Source => out.push(OPEN_SOURCE),
        OpenAddr::Addr(IpAddr::V4(a)) => {
            out.push(OPEN_V4);
            out.extend_from_slice(&a.octets());
        }
        OpenAddr::Addr(IpAddr::V6(a)) => {
            out.push(OPEN_V6);
            out.extend_from_slice(&a.octets());
        }
    }
    // The count fits: checked against MAX_SERVICES (8) above.
    out.push(knock.services.len() as u8);
    for s in &knock.services {
        if !valid_service_name(s.as_bytes()) {
            return Err(KnockError::ServiceName(s.clone()));
        }
        // Fits: valid_service_name bounds it by MAX_SERVICE_NAME (64).
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    let cipher = aead_key(key).ok_or(KnockError::Encrypt)?;
    let (header, body) = out.split_at_mut(HEADER_LEN);
    // ChaCha20-Poly1305 only fails for messages over 256 GiB. The nonce is
    // fresh and random per knock (`Knock::new`), hence "unique for key".
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(knock.nonce),
            Aad::from(&*header),
            body,
        )
        .map_err(|_| KnockError::Encrypt)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// The AEAD key. Only fails for a key of the wrong length, which a
/// [`GatewayKey`] cannot have.
fn aead_key(key: &GatewayKey) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, key.as_bytes())
        .ok()
        .map(LessSafeKey::new)
}

/// Authenticate and decrypt `packet` with `key`, without time, replay or
/// rate checks (that is [`super::Verifier`]'s job). Used by
/// `umbra spa inspect` and tests.
pub fn open(packet: &[u8], key: &GatewayKey) -> Result<Knock, Refusal> {
    let header = peek_header(packet)?;
    open_with_header(packet, &header, key)
}

/// [`open`] after the caller has already peeked the header.
pub(crate) fn open_with_header(
    packet: &[u8],
    header: &Header,
    key: &GatewayKey,
) -> Result<Knock, Refusal> {
    // Body and tag, decrypted in place on the stack.
    let mut buf = [0u8; MAX_BODY + TAG_LEN];
    let sealed = &mut buf[..packet.len() - HEADER_LEN];
    sealed.copy_from_slice(&packet[HEADER_LEN..]);
    let cipher = aead_key(key).ok_or(Refusal::BadMac)?;
    let body = cipher
        .open_in_place(
            Nonce::assume_unique_for_key(header.nonce),
            Aad::from(&packet[..HEADER_LEN]),
            sealed,
        )
        .map_err(|_| Refusal::BadMac)?;
    let (timestamp, open, services) = parse_body(body)?;
    Ok(Knock {
        device: header.device,
        services,
        open,
        timestamp,
        nonce: header.nonce,
    })
}

/// Parse an authenticated body. Only a key holder can reach this, but the
/// parser still trusts nothing.
fn parse_body(body: &[u8]) -> Result<(u64, OpenAddr, Vec<String>), Refusal> {
    let mut r = Reader(body);
    let ts = r
        .array::<8>()
        .ok_or(Refusal::Malformed("truncated timestamp"))?;
    let open = match r.byte() {
        Some(OPEN_SOURCE) => OpenAddr::Source,
        Some(OPEN_V4) => {
            let a = r
                .array::<4>()
                .ok_or(Refusal::Malformed("truncated IPv4 address"))?;
            OpenAddr::Addr(IpAddr::V4(Ipv4Addr::from(a)))
        }
        Some(OPEN_V6) => {
            let a = r
                .array::<16>()
                .ok_or(Refusal::Malformed("truncated IPv6 address"))?;
            OpenAddr::Addr(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => return Err(Refusal::Malformed("unknown address kind")),
    };
    let count = usize::from(
        r.byte()
            .ok_or(Refusal::Malformed("missing service count"))?,
    );
    if count == 0 || count > MAX_SERVICES {
        return Err(Refusal::Malformed("service count out of range"));
    }
    let mut services = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.byte().ok_or(Refusal::Malformed("truncated service"))?);
        let name = r.take(len).ok_or(Refusal::Malformed("truncated service"))?;
        if !valid_service_name(name) {
            return Err(Refusal::Malformed("invalid service name"));
        }
        // valid_service_name admits ASCII only, so this is valid UTF-8.
        services.push(String::from_utf8_lossy(name).into_owned());
    }
    if !r.0.is_empty() {
        return Err(Refusal::Malformed("trailing bytes after the services"));
    }
    Ok((u64::from_be_bytes(ts), open, services))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[path = "wire_tests.rs"]
mod tests;
