//! Reading `nft -j list table inet <table>` back: the open pinholes and
//! blocks with the time the kernel says they have left. Parsed from
//! `serde_json::Value` on purpose: the output schema differs between nft
//! versions (numbers vs names, optional fields), and an element we cannot
//! read is skipped with a warning rather than failing the whole listing.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::ruleset::{BLOCKED4, BLOCKED6, PINHOLES4, PINHOLES6};
use crate::{BlockedSource, Error, OpenPinhole, PinholeKey, Protocol};

#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) pinholes: Vec<OpenPinhole>,
    pub(crate) blocked: Vec<BlockedSource>,
}

pub(crate) fn parse(json: &[u8]) -> Result<Listing, Error> {
    let doc: Value = serde_json::from_slice(json).map_err(|e| Error::Output(e.to_string()))?;
    let objects = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Output("no \"nftables\" array".into()))?;
    let mut listing = Listing::default();
    for set in objects.iter().filter_map(|o| o.get("set")) {
        let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
        let elems = set
            .get("elem")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for elem in elems {
            let parsed = match name {
                PINHOLES4 | PINHOLES6 => pinhole(elem).map(|p| listing.pinholes.push(p)),
                BLOCKED4 | BLOCKED6 => block(elem).map(|b| listing.blocked.push(b)),
                _ => Some(()),
            };
            if parsed.is_none() {
                tracing::warn!(set = name, %elem, "nftables: skipping an element this version cannot read");
            }
        }
    }
    listing.pinholes.sort_by_key(|p| p.key);
    listing.blocked.sort_by_key(|b| b.source);
    Ok(listing)
}

/// An element is either a bare value or `{"elem": {"val": …, "expires": …}}`.
fn split(elem: &Value) -> (&Value, Duration) {
    match elem.get("elem") {
        Some(inner) => {
            let secs = inner
                .get("expires")
                .or_else(|| inner.get("timeout"))
                .and_then(Value::as_u64);
            (
                inner.get("val").unwrap_or(&Value::Null),
                Duration::from_secs(secs.unwrap_or(0)),
            )
        }
        None => (elem, Duration::ZERO),
    }
}

fn pinhole(elem: &Value) -> Option<OpenPinhole> {
    let (val, expires_in) = split(elem);
    let parts = val.get("concat")?.as_array()?;
    let [addr, proto, port] = parts.as_slice() else {
        return None;
    };
    let source: IpAddr = addr.as_str()?.parse().ok()?;
    let proto = match proto {
        Value::String(s) => Protocol::parse(s)?,
        Value::Number(n) => Protocol::parse(&n.to_string())?,
        _ => return None,
    };
    let port = match port {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(OpenPinhole {
        key: PinholeKey::new(source, proto, port),
        expires_in,
    })
}

fn block(elem: &Value) -> Option<BlockedSource> {
    let (val, expires_in) = split(elem);
    Some(BlockedSource {
        source: val.as_str()?.parse().ok()?,
        expires_in,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn reads_nft_1_0_6_output() {
        let out = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "umbra", "handle": 1}},
          {"set": {"family": "inet", "name": "pinholes4", "table": "umbra", "type": ["ipv4_addr", "inet_proto", "inet_service"],
            "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["10.0.0.1", "tcp", 22]}, "timeout": 30, "expires": 27}},
            {"elem": {"val": {"concat": ["10.0.0.2", 17, "53"]}, "timeout": 30, "expires": 3}},
            {"elem": {"val": {"concat": ["garbage", "tcp", 22]}, "timeout": 30}}]}},
          {"set": {"family": "inet", "name": "blocked6", "table": "umbra", "type": "ipv6_addr",
            "elem": [{"elem": {"val": "fd00::9", "timeout": 60, "expires": 59}}]}},
          {"set": {"family": "inet", "name": "protected", "table": "umbra", "elem": [{"concat": ["tcp", 22]}]}}]}"#;
        let l = parse(out).unwrap();
        assert_eq!(l.pinholes.len(), 2);
        assert_eq!(
            l.pinholes[0].key,
            PinholeKey::new("10.0.0.1".parse().unwrap(), Protocol::Tcp, 22)
        );
        assert_eq!(l.pinholes[0].expires_in, Duration::from_secs(27));
        assert_eq!(l.pinholes[1].key.proto, Protocol::Udp);
        assert_eq!(l.blocked[0].source, "fd00::9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rejects_what_is_not_a_listing() {
        assert!(parse(b"nope").is_err());
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"{"nftables": []}"#).unwrap().pinholes.is_empty());
    }
}
