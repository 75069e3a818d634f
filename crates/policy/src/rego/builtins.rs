//! OPA builtins that regorus lacks and Umbra's policies use, registered as
//! regorus extensions under their OPA names.
//!
//! - `net.cidr_contains_matches(cidrs, cidrs_or_ips)`: which of a collection
//!   of networks contain which addresses — the natural way to test a source
//!   address against a list of trusted networks in data, as Umbra's default
//!   policy does.
//! - `net.cidr_intersects(cidr1, cidr2)`: whether two networks overlap
//!   (segment and zone policies).
//! - `net.cidr_overlap(cidr, cidr_or_ip)`: OPA's deprecated name of
//!   `net.cidr_contains`, so old policies keep loading.
//!
//! Semantics follow OPA's Go implementation (`topdown/cidr.go`): a string
//! operand stands for itself, an array element or object value may be a
//! `[cidr, …]` tuple whose first element is the network, and matches are
//! `[key1, key2]` pairs where the key is the string itself, the array index,
//! the set element or the object key. As in Go, an IPv4-mapped IPv6 address
//! (`::ffff:10.0.0.1`) is the IPv4 address it maps.
//!
//! Not provided, by design: `io.jwt.*` and `crypto.*` (Umbra verifies tokens
//! in Rust and passes the claims in `input`), `http.send` and
//! `net.lookup_ip_addr` (no I/O during a decision).

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use regorus::{Engine, Value};

/// Names of the extensions [`register`] adds, for `docs/policy.md` and tests.
pub const EXTENSIONS: &[&str] = &[
    "net.cidr_contains_matches",
    "net.cidr_intersects",
    "net.cidr_overlap",
];

/// Adds Umbra's extensions to an engine. Unless `strict`, a failing call is
/// undefined, as OPA's builtins are outside `--strict-builtin-errors`.
/// Adding to a fresh engine cannot clash; a clash would only mean the name
/// is provided already.
pub fn register(engine: &mut Engine, strict: bool) {
    let wrap = move |f: fn(&[Value]) -> Result<Value>| {
        Box::new(move |args: Vec<Value>| match f(&args) {
            Err(_) if !strict => Ok(Value::Undefined),
            other => other,
        })
    };
    let _ = engine.add_extension(
        "net.cidr_contains_matches".into(),
        2,
        wrap(cidr_contains_matches),
    );
    let _ = engine.add_extension("net.cidr_intersects".into(), 2, wrap(cidr_intersects));
    let _ = engine.add_extension("net.cidr_overlap".into(), 2, wrap(cidr_overlap));
}

fn cidr_intersects(args: &[Value]) -> Result<Value> {
    let (a, b) = two_strings("net.cidr_intersects", args)?;
    let (a, b) = (parse_net(a)?, parse_net(b)?);
    Ok(Value::Bool(
        a.contains(&b.network()) || b.contains(&a.network()),
    ))
}

fn cidr_overlap(args: &[Value]) -> Result<Value> {
    let (a, b) = two_strings("net.cidr_overlap", args)?;
    contains(a, b).map(Value::Bool)
}

fn two_strings<'a>(name: &str, args: &'a [Value]) -> Result<(&'a str, &'a str)> {
    match args {
        [Value::String(a), Value::String(b)] => Ok((a, b)),
        _ => bail!("{name}: operands must be strings"),
    }
}

/// A network as Go's `net.ParseCIDR` reads it: the address is masked to its
/// network, and an IPv4-mapped IPv6 network is the IPv4 network.
fn parse_net(s: &str) -> Result<ipnet::IpNet> {
    let net: ipnet::IpNet = s
        .parse()
        .map_err(|_| anyhow!("invalid CIDR address: {s}"))?;
    Ok(match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
    .trunc())
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `net.cidr_contains`: `b` is an address or a network inside `a`.
fn contains(a: &str, b: &str) -> Result<bool> {
    let net = parse_net(a)?;
    if let Ok(ip) = b.parse::<IpAddr>() {
        return Ok(net.contains(&unmap(ip)));
    }
    let inner = parse_net(b)
        .map_err(|_| anyhow!("not a valid textual representation of an IP address or CIDR: {b}"))?;
    Ok(net.contains(&inner))
}

/// Each `(cidr, key)` of an operand, in OPA's order.
fn operand_items(operand: usize, v: &Value) -> Result<Vec<(Value, Value)>> {
    let cidr_of = |x: &Value| -> Result<Value> {
        match x {
            Value::String(_) => Ok(x.clone()),
            Value::Array(a) if !a.is_empty() => Ok(a[0].clone()),
            _ => bail!("operand {operand}: element must be string or non-empty array"),
        }
    };
    Ok(match v {
        Value::String(_) => vec![(v.clone(), v.clone())],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| Ok((cidr_of(x)?, Value::from(i))))
            .collect::<Result<_>>()?,
        Value::Set(items) => items
            .iter()
            .map(|x| Ok((cidr_of(x)?, x.clone())))
            .collect::<Result<_>>()?,
        Value::Object(fields) => fields
            .iter()
            .map(|(k, x)| Ok((cidr_of(x)?, k.clone())))
            .collect::<Result<_>>()?,
        _ => Vec::new(),
    })
}

fn cidr_contains_matches(args: &[Value]) -> Result<Value> {
    let [cidrs, targets] = args else {
        bail!("net.cidr_contains_matches: expects 2 operands");
    };
    let outer = operand_items(1, cidrs)?;
    let inner = operand_items(2, targets)?;
    let mut matches = Value::new_set();
    for (cidr1, key1) in &outer {
        for (cidr2, key2) in &inner {
            let (Value::String(a), Value::String(b)) = (cidr1, cidr2) else {
                bail!("net.cidr_contains_matches: CIDRs must be strings");
            };
            if contains(a, b)? {
                matches
                    .as_set_mut()?
                    .insert(Value::from(vec![key1.clone(), key2.clone()]));
            }
        }
    }
    Ok(matches)
}
