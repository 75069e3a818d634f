//! Native Umbra SPA, version 1.
//!
//! ```text
//! header (32 bytes, cleartext, authenticated as AEAD associated data)
//!   0..3    magic   F5 55 53  ("\xF5US": never valid base64, so a native
//!                              packet can't be mistaken for an fwknop one)
//!   3       version 01
//!   4..20   key id  = the device id (UUID, 16 bytes)
//!   20..32  nonce   12 random bytes (the ChaCha20-Poly1305 nonce)
//! body (ChaCha20-Poly1305 under the per-gateway key)
//!   0..8    timestamp, unix seconds, big-endian u64
//!   8       open kind: 0 = the packet's source, 4 = IPv4, 6 = IPv6
//!   ..      0, 4 or 16 address bytes
//!   ..      service count n, 1..=MAX_SERVICES
//!   n ×     name length (1..=MAX_SERVICE_NAME) ‖ name (printable ASCII, no space)
//! tag (16 bytes)
//! ```
//!
//! Why AEAD and not signatures, why the device id is in clear, and the
//! threat model: `docs/spa.md`.
//!
//! Layout: [`wire`] seals and opens packets (stateless); [`verify`] is the
//! gateway-side [`Verifier`] with window, replay cache and rate limiter.

pub mod verify;
pub mod wire;

use std::net::IpAddr;

use uuid::Uuid;

use crate::GatewayKey;

pub use verify::{Verified, Verifier, VerifierConfig};
pub use wire::{Header, KnockError, open, peek_header, seal};

/// Magic bytes at the start of every native packet.
pub const MAGIC: [u8; 3] = [0xF5, b'U', b'S'];
/// The only version this crate speaks.
pub const VERSION: u8 = 1;
/// AEAD nonce length.
pub const NONCE_LEN: usize = 12;
/// Cleartext header length.
pub const HEADER_LEN: usize = 3 + 1 + 16 + NONCE_LEN;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Most services one knock may name.
pub const MAX_SERVICES: usize = 8;
/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 64;
/// Smallest body: timestamp, open kind "source", one 1-byte service.
pub const MIN_BODY: usize = 8 + 1 + 1 + 1 + 1;
/// Largest body: timestamp, IPv6, the most and longest services.
pub const MAX_BODY: usize = 8 + 1 + 16 + 1 + MAX_SERVICES * (1 + MAX_SERVICE_NAME);
/// Smallest well-formed packet.
pub const MIN_PACKET: usize = HEADER_LEN + MIN_BODY + TAG_LEN;
/// Largest well-formed packet (fits any MTU).
pub const MAX_PACKET: usize = HEADER_LEN + MAX_BODY + TAG_LEN;

/// Which address the knock asks the gateway to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAddr {
    /// Whatever address the packet arrives from (the usual case: the agent
    /// does not know its public address behind NAT).
    Source,
    /// This exact address; by default it must equal the packet's source.
    Addr(IpAddr),
}

/// A knock: what the agent asks for. Sealed with [`seal`], recovered by
/// [`open`] / [`Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knock {
    /// The knocking device (also the key id in the header).
    pub device: Uuid,
    /// Requested service names, 1..=[`MAX_SERVICES`].
    pub services: Vec<String>,
    /// Address to open.
    pub open: OpenAddr,
    /// Unix seconds when the knock was made.
    pub timestamp: u64,
    /// Random per-packet nonce; also what the replay cache remembers.
    pub nonce: [u8; NONCE_LEN],
}

impl Knock {
    /// A knock with a fresh random nonce.
    pub fn new(device: Uuid, services: Vec<String>, open: OpenAddr, timestamp: u64) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        Self {
            device,
            services,
            open,
            timestamp,
            nonce,
        }
    }
}

/// Where the verifier finds a device's key for this gateway. Returning
/// `None` refuses the packet before any cryptography runs.
pub trait KeyLookup {
    /// The per-gateway key for `device`, if it is enrolled and allowed here.
    fn native_key(&self, device: &Uuid) -> Option<GatewayKey>;
}

impl KeyLookup for std::collections::HashMap<Uuid, GatewayKey> {
    fn native_key(&self, device: &Uuid) -> Option<GatewayKey> {
        self.get(device).cloned()
    }
}

impl<F: Fn(&Uuid) -> Option<GatewayKey>> KeyLookup for F {
    fn native_key(&self, device: &Uuid) -> Option<GatewayKey> {
        self(device)
    }
}

/// Whether `name` is an acceptable service name on the wire.
pub fn valid_service_name(name: &[u8]) -> bool {
    (1..=MAX_SERVICE_NAME).contains(&name.len()) && name.iter().all(|b| b.is_ascii_graphic())
}
