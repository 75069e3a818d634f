//! The values every backend speaks: a protocol, a pinhole request, the key
//! that names an open pinhole, and what `list` reports.
//!
//! Requests are validated here once (port 0, a zero or huge ttl) so no
//! backend turns a nonsensical request into a kernel or cloud call.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The longest pinhole or block accepted. Pinholes live for seconds; a day
/// is far beyond any sane knock and keeps deadline arithmetic overflow-free.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A transport protocol a pinhole can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name nftables and `{proto}` placeholders use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// Parses `tcp`/`udp` (as nft prints them) and the IANA numbers 6/17.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tcp" | "6" => Some(Self::Tcp),
            "udp" | "17" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one pinhole: new connections from `source` to `proto`/`port` pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinholeKey {
    pub source: IpAddr,
    pub proto: Protocol,
    pub port: u16,
}

impl PinholeKey {
    /// Builds a key with the source in canonical form: an IPv4-mapped IPv6
    /// address (`::ffff:a.b.c.d`, what a dual-stack socket reports) becomes
    /// the IPv4 address, because that is what the kernel matches on.
    pub fn new(source: IpAddr, proto: Protocol, port: u16) -> Self {
        Self {
            source: source.to_canonical(),
            proto,
            port,
        }
    }

    pub(crate) fn validate(&self) -> Result<Self, Error> {
        if self.port == 0 {
            return Err(Error::Invalid(format!("{self}: port 0")));
        }
        Ok(Self::new(self.source, self.proto, self.port))
    }
}

impl fmt::Display for PinholeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            IpAddr::V4(a) => write!(f, "{a} -> {}/{}", self.proto, self.port),
            IpAddr::V6(a) => write!(f, "[{a}] -> {}/{}", self.proto, self.port),
        }
    }
}

/// A request to open a pinhole for `ttl`.
///
/// Opening a pinhole that is already open keeps the later of the two
/// deadlines, so a repeated knock never shortens an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pinhole {
    pub key: PinholeKey,
    pub ttl: Duration,
}

impl Pinhole {
    pub fn new(source: IpAddr, proto: Protocol, port: u16, ttl: Duration) -> Self {
        Self {
            key: PinholeKey::new(source, proto, port),
            ttl,
        }
    }

    pub(crate) fn validate(&self) -> Result<Self, Error> {
        let key = self.key.validate()?;
        let ttl = validate_ttl(self.ttl).map_err(|e| Error::Invalid(format!("{key}: {e}")))?;
        Ok(Self { key, ttl })
    }
}

pub(crate) fn validate_ttl(ttl: Duration) -> Result<Duration, String> {
    if ttl.is_zero() {
        Err("ttl is zero".into())
    } else if ttl > MAX_TTL {
        Err(format!(
            "ttl {}s exceeds {}s",
            ttl.as_secs(),
            MAX_TTL.as_secs()
        ))
    } else {
        Ok(ttl)
    }
}

/// An open pinhole as `list` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenPinhole {
    pub key: PinholeKey,
    /// Time left until it expires (whole seconds for nftables).
    pub expires_in: Duration,
}

/// A blocked source as `blocked` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedSource {
    pub source: IpAddr,
    pub expires_in: Duration,
}

/// A port the firewall hides: only pinholes let new connections reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Protected {
    pub proto: Protocol,
    pub port: u16,
}

impl Protected {
    pub fn new(proto: Protocol, port: u16) -> Self {
        Self { proto, port }
    }
}

impl From<(Protocol, u16)> for Protected {
    fn from((proto, port): (Protocol, u16)) -> Self {
        Self { proto, port }
    }
}

pub(crate) fn validate_protected(ports: &[Protected]) -> Result<(), Error> {
    match ports.iter().find(|p| p.port == 0) {
        Some(p) => Err(Error::Invalid(format!("protected port 0/{}", p.proto))),
        None => Ok(()),
    }
}
