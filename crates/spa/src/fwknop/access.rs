//! `access.conf` stanzas, parsed into typed values with Umbra's secure
//! defaults (FWKNOP.md §4.1).
//!
//! Same syntax as fwknopd: `KEY value` lines, `#` comments, each `SOURCE`
//! line starts a stanza, first matching stanza wins. Differences, all in
//! the safe direction:
//! - an HMAC key is **required** (unless [`AccessOptions::allow_no_hmac`]);
//! - `REQUIRE_SOURCE_ADDRESS` defaults to `Y` (fwknopd: `N`);
//! - keys Umbra does not implement (`DESTINATION`, `ACCESS_EXPIRE`, GnuPG,
//!   command execution, NAT, `%include`) are errors, never silently ignored:
//!   ignoring a restriction would widen access.

use std::net::IpAddr;

use super::crypto::EncryptionMode;
use super::digest::DigestType;
use super::message::ProtoPort;
use super::packet::{FwknopKeyError, FwknopKeys};

/// One `SOURCE` entry: an address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("invalid address {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix in {s:?}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// Which packet sources a stanza accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    Any,
    Nets(Vec<IpNet>),
}

impl Sources {
    /// Whether `ip` may knock under this stanza.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Sources::Any => true,
            Sources::Nets(nets) => nets.iter().any(|n| n.contains(ip)),
        }
    }
}

/// One validated access stanza.
#[derive(Debug, Clone)]
pub struct Stanza {
    pub source: Sources,
    /// If set, every requested port must be listed.
    pub open_ports: Option<Vec<ProtoPort>>,
    /// Never opened.
    pub restrict_ports: Vec<ProtoPort>,
    pub keys: FwknopKeys,
    /// Pinhole lifetime when the client asks for none (default 30 s).
    pub fw_access_timeout: u32,
    /// Cap on a client-requested timeout (default 300 s).
    pub max_fw_timeout: u32,
    pub require_username: Option<String>,
    /// Refuse allow-IP `0.0.0.0` (default **Y** in Umbra).
    pub require_source_address: bool,
}

/// Parse-time choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessOptions {
    /// Accept stanzas without an HMAC key (unauthenticated ciphertext:
    /// padding-oracle and tampering exposure). Off by default.
    pub allow_no_hmac: bool,
}

/// A config error with its line number (1-based; 0 = end of file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access.conf line {line}: {message}")]
pub struct AccessConfError {
    pub line: usize,
    pub message: String,
}

#[derive(Default)]
struct Raw {
    line: usize,
    source: Option<Sources>,
    open_ports: Option<Vec<ProtoPort>>,
    restrict_ports: Vec<ProtoPort>,
    key: Option<Vec<u8>>,
    hmac_key: Option<Vec<u8>>,
    hmac_digest: Option<DigestType>,
    mode: Option<EncryptionMode>,
    fw_access_timeout: Option<u32>,
    max_fw_timeout: Option<u32>,
    require_username: Option<String>,
    require_source_address: Option<bool>,
}

/// Parse with the secure defaults.
pub fn parse_access_conf(text: &str) -> Result<Vec<Stanza>, AccessConfError> {
    parse_access_conf_with(text, &AccessOptions::default())
}

/// Parse with explicit options.
pub fn parse_access_conf_with(
    text: &str,
    options: &AccessOptions,
) -> Result<Vec<Stanza>, AccessConfError> {
    let mut stanzas = Vec::new();
    let mut current: Option<Raw> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |message: String| AccessConfError { line: n, message };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => return Err(err(format!("{line:?} has no value"))),
        };
        if key == "SOURCE" {
            if let Some(raw) = current.take() {
                stanzas.push(finish(raw, options)?);
            }
            current = Some(Raw {
                line: n,
                source: Some(parse_sources(value).map_err(err)?),
                ..Raw::default()
            });
            continue;
        }
        let raw = current
            .as_mut()
            .ok_or_else(|| err(format!("{key} before the first SOURCE")))?;
        set(raw, key, value).map_err(err)?;
    }
    if let Some(raw) = current.take() {
        stanzas.push(finish(raw, options)?);
    }
    if stanzas.is_empty() {
        return Err(AccessConfError {
            line: 0,
            message: "no SOURCE stanza".into(),
        });
    }
    Ok(stanzas)
}

fn set(raw: &mut Raw, key: &str, value: &str) -> Result<(), String> {
    match key {
        "OPEN_PORTS" => raw.open_ports = Some(parse_ports(value)?),
        "RESTRICT_PORTS" => raw.restrict_ports = parse_ports(value)?,
        "KEY" => raw.key = Some(value.as_bytes().to_vec()),
        "KEY_BASE64" => raw.key = Some(decode_key(value, key)?),
        "HMAC_KEY" => raw.hmac_key = Some(value.as_bytes().to_vec()),
        "HMAC_KEY_BASE64" => raw.hmac_key = Some(decode_key(value, key)?),
        "HMAC_DIGEST_TYPE" => raw.hmac_digest = Some(value.parse()?),
        "ENCRYPTION_MODE" => raw.mode = Some(value.parse()?),
        "FW_ACCESS_TIMEOUT" => raw.fw_access_timeout = Some(parse_secs(value, key)?),
        "MAX_FW_TIMEOUT" => raw.max_fw_timeout = Some(parse_secs(value, key)?),
        "REQUIRE_USERNAME" => raw.require_username = Some(value.to_string()),
        "REQUIRE_SOURCE_ADDRESS" | "REQUIRE_SOURCE" => {
            raw.require_source_address = Some(parse_yn(value, key)?)
        }
        _ => {
            return Err(format!(
                "{key} is not supported by Umbra's fwknop mode (refusing rather than ignoring it)"
            ));
        }
    }
    Ok(())
}

fn finish(raw: Raw, options: &AccessOptions) -> Result<Stanza, AccessConfError> {
    let err = |message: String| AccessConfError {
        line: raw.line,
        message: format!("stanza: {message}"),
    };
    let key = raw
        .key
        .as_deref()
        .ok_or_else(|| err("KEY or KEY_BASE64 is required".into()))?;
    let mode = raw.mode.unwrap_or(EncryptionMode::Cbc);
    let hmac = match raw.hmac_key.as_deref() {
        Some(hk) => Some((hk, raw.hmac_digest.unwrap_or(DigestType::Sha256))),
        None if options.allow_no_hmac => None,
        None => {
            return Err(err(
                "HMAC_KEY or HMAC_KEY_BASE64 is required (HMAC is mandatory by default)".into(),
            ));
        }
    };
    let keys = FwknopKeys::new(key, mode, hmac).map_err(|e: FwknopKeyError| err(e.to_string()))?;
    Ok(Stanza {
        source: raw.source.unwrap_or(Sources::Nets(Vec::new())),
        open_ports: raw.open_ports,
        restrict_ports: raw.restrict_ports,
        keys,
        fw_access_timeout: raw.fw_access_timeout.unwrap_or(30),
        max_fw_timeout: raw.max_fw_timeout.unwrap_or(300),
        require_username: raw.require_username,
        require_source_address: raw.require_source_address.unwrap_or(true),
    })
}

fn parse_sources(value: &str) -> Result<Sources, String> {
    if value.eq_ignore_ascii_case("ANY") {
        return Ok(Sources::Any);
    }
    let nets = split_list(value)
        .map(IpNet::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if nets.is_empty() {
        return Err("SOURCE is empty".into());
    }
    Ok(Sources::Nets(nets))
}

fn parse_ports(value: &str) -> Result<Vec<ProtoPort>, String> {
    split_list(value)
        .map(|p| p.parse::<ProtoPort>().map_err(|e| format!("{p:?}: {e}")))
        .collect()
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn decode_key(value: &str, key: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    super::b64::PERMISSIVE
        .decode(value)
        .map_err(|_| format!("{key} is not valid base64"))
}

fn parse_secs(value: &str, key: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("{key} must be a number of seconds"))
}

fn parse_yn(value: &str, key: &str) -> Result<bool, String> {
    match value.to_ascii_uppercase().as_str() {
        "Y" | "YES" => Ok(true),
        "N" | "NO" => Ok(false),
        _ => Err(format!("{key} must be Y or N")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[path = "access_tests.rs"]
mod tests;
