//! The decrypted fwknop plaintext: its fields as types, and the encoder
//! (FWKNOP.md §2.6–2.7). Parsing lives in [`super::parse`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::DigestType;
use super::b64;

/// Protocol version string the stock client sends.
pub const PROTOCOL_VERSION: &str = "3.0.0";

/// `fko_message_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Command = 0,
    Access = 1,
    NatAccess = 2,
    ClientTimeoutAccess = 3,
    ClientTimeoutNatAccess = 4,
    LocalNatAccess = 5,
    ClientTimeoutLocalNatAccess = 6,
}

impl MessageType {
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => MessageType::Command,
            1 => MessageType::Access,
            2 => MessageType::NatAccess,
            3 => MessageType::ClientTimeoutAccess,
            4 => MessageType::ClientTimeoutNatAccess,
            5 => MessageType::LocalNatAccess,
            6 => MessageType::ClientTimeoutLocalNatAccess,
            _ => return None,
        })
    }

    /// The numeric code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Carries a `nat_access` field.
    pub fn has_nat(self) -> bool {
        matches!(
            self,
            Self::NatAccess
                | Self::ClientTimeoutNatAccess
                | Self::LocalNatAccess
                | Self::ClientTimeoutLocalNatAccess
        )
    }

    /// Carries a `client_timeout` field.
    pub fn has_timeout(self) -> bool {
        matches!(
            self,
            Self::ClientTimeoutAccess
                | Self::ClientTimeoutNatAccess
                | Self::ClientTimeoutLocalNatAccess
        )
    }
}

/// Transport protocol of a requested port (libfko admits only these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// `tcp/22`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtoPort {
    pub proto: Proto,
    pub port: u16,
}

impl fmt::Display for ProtoPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{p}/{}", self.port)
    }
}

impl FromStr for ProtoPort {
    type Err = &'static str;

    /// libfko's rule: lowercase `tcp`/`udp`, 1–5 digits, 1..=65535.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, port) = s.split_once('/').ok_or("expected proto/port")?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err("protocol must be tcp or udp"),
        };
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("port must be 1 to 5 digits");
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(ProtoPort { proto, port: p }),
            _ => Err("port must be 1..=65535"),
        }
    }
}

/// An access message: `allow_ip,proto/port[,proto/port...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// Address to open; `0.0.0.0` means "the packet's source".
    pub allow_ip: Ipv4Addr,
    /// Requested ports, at least one.
    pub ports: Vec<ProtoPort>,
}

impl fmt::Display for AccessRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.allow_ip)?;
        for p in &self.ports {
            write!(f, ",{p}")?;
        }
        Ok(())
    }
}

impl FromStr for AccessRequest {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let ip = parts.next().unwrap_or_default();
        if !(7..=15).contains(&ip.len()) {
            return Err("allow IP must be a dotted quad");
        }
        let allow_ip = ip.parse().map_err(|_| "allow IP must be a dotted quad")?;
        let ports = parts
            .map(str::parse)
            .collect::<Result<Vec<ProtoPort>, _>>()?;
        if ports.is_empty() {
            return Err("access message names no port");
        }
        Ok(AccessRequest { allow_ip, ports })
    }
}

/// A decoded, validated fwknop plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 16 decimal digits of client randomness.
    pub random: String,
    /// Username the client claims (unauthenticated beyond the shared key).
    pub username: String,
    /// Unix seconds.
    pub timestamp: u64,
    /// Protocol version string (`3.0.0`).
    pub version: String,
    pub message_type: MessageType,
    /// The decoded message text (`10.66.0.2,tcp/22`, or `IP,command`).
    pub message: String,
    /// Parsed access request (every type except [`MessageType::Command`]).
    pub access: Option<AccessRequest>,
    /// `host,port` for NAT types.
    pub nat_access: Option<String>,
    /// Never set by the stock client; parsed and ignored.
    pub server_auth: Option<String>,
    /// Requested pinhole lifetime (types 3, 4, 6).
    pub client_timeout: Option<u32>,
    /// Inner digest algorithm (inferred from its length).
    pub digest_type: DigestType,
}

impl Message {
    /// An access message as the stock client builds it: fresh random value,
    /// version 3.0.0, SHA-256 inner digest; a client timeout turns type 1
    /// into type 3, as `fko_set_spa_client_timeout` does.
    pub fn access(
        username: &str,
        timestamp: u64,
        request: AccessRequest,
        client_timeout: Option<u32>,
    ) -> Self {
        let timeout = client_timeout.filter(|&t| t > 0);
        let mut r = [0u8; 8];
        rand::fill(&mut r[..]);
        Message {
            random: format!("{:016}", u64::from_be_bytes(r) % 10_000_000_000_000_000),
            username: username.to_string(),
            timestamp,
            version: PROTOCOL_VERSION.to_string(),
            message_type: if timeout.is_some() {
                MessageType::ClientTimeoutAccess
            } else {
                MessageType::Access
            },
            message: request.to_string(),
            access: Some(request),
            nat_access: None,
            server_auth: None,
            client_timeout: timeout,
            digest_type: DigestType::Sha256,
        }
    }

    /// The plaintext `body:digest` that gets encrypted.
    pub fn to_plaintext(&self) -> String {
        let mut body = format!(
            "{}:{}:{}:{}:{}:{}",
            self.random,
            b64::encode(self.username.as_bytes()),
            self.timestamp,
            self.version,
            self.message_type.code(),
            b64::encode(self.message.as_bytes())
        );
        if let Some(nat) = &self.nat_access {
            body.push(':');
            body.push_str(&b64::encode(nat.as_bytes()));
        }
        if let Some(sa) = &self.server_auth {
            body.push(':');
            body.push_str(&b64::encode(sa.as_bytes()));
        }
        if let Some(t) = self.client_timeout {
            body.push_str(&format!(":{t}"));
        }
        let digest = self.digest_type.hash(&[body.as_bytes()]);
        body.push(':');
        body.push_str(&b64::encode(digest.as_slice()));
        body
    }
}
