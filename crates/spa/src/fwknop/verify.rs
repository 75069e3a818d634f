//! [`FwknopVerifier`]: fwknopd's processing order (FWKNOP.md §3.1) with
//! Umbra's secure defaults.
//!
//! 1. size, prefix, alphabet;
//! 2. a stanza whose `SOURCE` matches;
//! 3. per-source rate limit (Umbra addition);
//! 4. replay lookup by SHA-256 of the payload;
//! 5. per matching stanza: HMAC, then decrypt, then parse; first success wins;
//! 6. the replay key is recorded right after decryption, as fwknopd does,
//!    so authentic-but-refused packets are burned too;
//! 7. start-up rule (Umbra addition) and the ±`max_age` window;
//! 8. allow-IP; 9. username; 10. message type (access only); 11. ports;
//! 12. pinhole timeout.
//!
//! Deviation from fwknopd: a non-zero allow-IP must equal the packet's
//! source unless `allow_other_address` is set (fwknopd opens any address
//! the packet names).

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use super::access::Stanza;
use super::message::{Message, MessageType, ProtoPort};
use super::packet::{check_structure, decode_checked, replay_digest};
use crate::window::{check_startup, check_window, unix_secs};
use crate::{RateLimitConfig, RateLimiter, Refusal, ReplayCache};

/// fwknopd's `MAX_SPA_PACKET_AGE` default.
pub const DEFAULT_MAX_AGE: u64 = 120;

/// Settings outside the stanzas (fwknopd.conf's share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwknopConfig {
    /// Accepted clock difference in seconds, both directions. Default 120.
    pub max_age_secs: u64,
    /// Most payload digests remembered. Default 262,144.
    pub replay_capacity: usize,
    pub rate_limit: RateLimitConfig,
    /// Let a packet open an allow-IP other than its source. Default off.
    pub allow_other_address: bool,
}

impl Default for FwknopConfig {
    fn default() -> Self {
        Self {
            max_age_secs: DEFAULT_MAX_AGE,
            replay_capacity: 1 << 18,
            rate_limit: RateLimitConfig::default(),
            allow_other_address: false,
        }
    }
}

/// What to open, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Index of the stanza that accepted the packet.
    pub stanza: usize,
    /// Resolved address to open.
    pub open: IpAddr,
    pub ports: Vec<ProtoPort>,
    /// Pinhole lifetime in seconds.
    pub timeout_secs: u32,
    /// The whole decoded message, for the audit record.
    pub message: Message,
}

/// Stateful fwknop-mode verifier.
#[derive(Debug)]
pub struct FwknopVerifier {
    stanzas: Vec<Stanza>,
    config: FwknopConfig,
    started: u64,
    replay: ReplayCache<[u8; 32]>,
    limiter: RateLimiter,
}

impl FwknopVerifier {
    /// A verifier over `stanzas` (from [`super::parse_access_conf`]) whose
    /// process started at `started_at`.
    pub fn new(stanzas: Vec<Stanza>, config: FwknopConfig, started_at: SystemTime) -> Self {
        Self {
            replay: ReplayCache::new(config.replay_capacity),
            limiter: RateLimiter::new(config.rate_limit),
            started: unix_secs(started_at),
            stanzas,
            config,
        }
    }

    /// Decide on one datagram from `source`, received at `now`.
    pub fn verify(
        &mut self,
        packet: &[u8],
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Grant, Refusal> {
        check_structure(packet)?;
        if !self.stanzas.iter().any(|s| s.source.contains(source)) {
            return Err(Refusal::NoStanza(source));
        }
        if !self.limiter.allow(source, now) {
            return Err(Refusal::RateLimited(source));
        }
        let now_s = unix_secs(now);
        let digest = replay_digest(packet);
        if self.replay.contains(&digest, now_s) {
            return Err(Refusal::Replay);
        }
        let (index, message) = self.decode_first(packet, source)?;
        let max_age = self.config.max_age_secs;
        let expires = message
            .timestamp
            .min(now_s.saturating_add(max_age))
            .saturating_add(max_age + 1);
        self.replay.insert(digest, expires, now_s)?;
        check_startup(message.timestamp, self.started)?;
        check_window(message.timestamp, now_s, max_age)?;
        let stanza = &self.stanzas[index];
        let (open, ports) = self.resolve(stanza, &message, source)?;
        let timeout_secs = match message.client_timeout {
            Some(t) if t > 0 => t.min(stanza.max_fw_timeout),
            _ => stanza.fw_access_timeout,
        };
        Ok(Grant {
            stanza: index,
            open,
            ports,
            timeout_secs,
            message,
        })
    }

    /// Try each stanza matching `source` in order; report the first
    /// stanza's failure if none decodes (usually the only stanza).
    fn decode_first(&self, packet: &[u8], source: IpAddr) -> Result<(usize, Message), Refusal> {
        let mut first_err = None;
        for (i, s) in self
            .stanzas
            .iter()
            .enumerate()
            .filter(|(_, s)| s.source.contains(source))
        {
            match decode_checked(packet, &s.keys) {
                Ok(m) => return Ok((i, m)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(Refusal::NoStanza(source)))
    }

    fn resolve(
        &self,
        stanza: &Stanza,
        m: &Message,
        source: IpAddr,
    ) -> Result<(IpAddr, Vec<ProtoPort>), Refusal> {
        let access = m.access.as_ref().ok_or(Refusal::UnsupportedMessage(
            "command messages (Umbra never runs commands)",
        ))?;
        let open = if access.allow_ip == Ipv4Addr::UNSPECIFIED {
            if stanza.require_source_address {
                return Err(Refusal::SourceAddressRequired);
            }
            source
        } else {
            let requested = IpAddr::V4(access.allow_ip);
            if !self.config.allow_other_address && requested != source.to_canonical() {
                return Err(Refusal::AddressMismatch {
                    requested,
                    from: source,
                });
            }
            requested
        };
        if let Some(required) = &stanza.require_username
            && *required != m.username
        {
            return Err(Refusal::UsernameMismatch {
                got: m.username.clone(),
            });
        }
        if m.message_type != MessageType::Access
            && m.message_type != MessageType::ClientTimeoutAccess
        {
            return Err(Refusal::UnsupportedMessage(
                "NAT access (Umbra does not forward)",
            ));
        }
        for p in &access.ports {
            let open_ok = stanza.open_ports.as_ref().is_none_or(|o| o.contains(p));
            if stanza.restrict_ports.contains(p) || !open_ok {
                return Err(Refusal::PortDenied(p.to_string()));
            }
        }
        Ok((open, access.ports.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[path = "verify_tests.rs"]
mod tests;
