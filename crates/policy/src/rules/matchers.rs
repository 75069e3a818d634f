//! The values a rule matches on, each parsed once from its TOML text so that
//! a bad one is refused at load with its position (these types deserialize
//! with `try_from`, and the TOML parser reports the line and column of the
//! value that failed).

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use chrono::{Datelike, TimeZone, Timelike};
use serde::Deserialize;

use crate::path;

/// An HTTP method: an uppercase token (`GET`, `PROPFIND`). Methods are
/// case-sensitive (RFC 9110 §9.1), so `get` is not `GET`; rules are written
/// in uppercase and a request in any other case matches no method list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Method(pub(crate) String);

impl Method {
    /// Whether `m` is a method Umbra accepts in a request at all.
    pub fn is_valid(m: &str) -> bool {
        !m.is_empty()
            && m.len() <= 32
            && m.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    }
}

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if Method::is_valid(&s) {
            Ok(Method(s))
        } else {
            Err(format!(
                "invalid method {s:?}: methods are uppercase tokens such as \"GET\" (they are case-sensitive)"
            ))
        }
    }
}

/// A normalized path prefix, matched on whole segments: `/api` matches
/// `/api` and `/api/x`, not `/apix`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PathPrefix(pub(crate) String);

impl TryFrom<String> for PathPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        path::normalize_prefix(&s)
            .map(PathPrefix)
            .map_err(|e| format!("invalid path prefix {s:?}: {e}"))
    }
}

impl PathPrefix {
    pub fn matches(&self, normalized_path: &str) -> bool {
        path::prefix_matches(&self.0, normalized_path)
    }

    pub(crate) fn lowercase(&mut self) {
        self.0.make_ascii_lowercase();
    }
}

/// A port or an inclusive range (`443`, `"8000-8100"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub(crate) RangeInclusive<u16>);

impl Ports {
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Ports;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (1-65535) or a range such as \"8000-8100\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Ports, E> {
                port(n).map(|p| Ports(p..=p)).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Ports, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Ports, E> {
                let bad = || E::custom(format!("invalid port range {s:?}: expected \"LOW-HIGH\""));
                let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
                let lo: i64 = lo.trim().parse().map_err(|_| bad())?;
                let hi: i64 = hi.trim().parse().map_err(|_| bad())?;
                let (lo, hi) = (port(lo).map_err(E::custom)?, port(hi).map_err(E::custom)?);
                if lo > hi {
                    return Err(E::custom(format!("invalid port range {s:?}: {lo} > {hi}")));
                }
                Ok(Ports(lo..=hi))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn port(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port {n}: ports are 1-65535"))
}

/// A network in CIDR notation. A bare address is a single-host network.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr(pub(crate) ipnet::IpNet);

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            // `10.1.2.3/8` is almost always a typo for a host or for
            // `10.0.0.0/8`; refuse it rather than guess which.
            if net.trunc() != net {
                return Err(format!(
                    "invalid network {s:?}: host bits are set (did you mean {}?)",
                    net.trunc()
                ));
            }
            return Ok(Cidr(net));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| {
                format!("invalid network {s:?}: expected CIDR notation such as \"10.0.0.0/8\"")
            })
    }
}

impl Cidr {
    /// IPv4-mapped IPv6 sources (`::ffff:10.0.0.1`, what a dual-stack socket
    /// reports) are matched as the IPv4 address they carry, so an IPv4 rule
    /// cannot be dodged, nor an IPv4 deny rule bypassed, by the socket type.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// A SPIFFE ID, or a prefix of IDs written with a trailing `/*`
/// (`spiffe://umbra.local/ns/prod/*`), matched on whole segments.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SpiffePattern {
    pub(crate) id: String,
    pub(crate) prefix: bool,
}

impl TryFrom<String> for SpiffePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (id, prefix) = match s.strip_suffix("/*") {
            Some(base) => (base.to_owned(), true),
            None => (s.clone(), false),
        };
        let bad = |why: &str| format!("invalid SPIFFE ID {s:?}: {why}");
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("must start with spiffe://"))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(bad(
                "the trust domain must be lowercase letters, digits, '.', '-', '_'",
            ));
        }
        if !prefix && path.is_empty() {
            return Err(bad(
                "a workload ID needs a path; write spiffe://DOMAIN/* for the whole domain",
            ));
        }
        for segment in path.split('/').filter(|_| !path.is_empty()) {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(bad("empty, '.' and '..' path segments are not allowed"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(bad("path segments are letters, digits, '.', '-', '_'"));
            }
        }
        Ok(SpiffePattern { id, prefix })
    }
}

impl SpiffePattern {
    pub fn matches(&self, id: &str) -> bool {
        if !self.prefix {
            return id == self.id;
        }
        id.strip_prefix(self.id.as_str())
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
    }
}

/// Days and hours in a time zone: `{ days = "mon-fri", start = "08:00",
/// end = "18:00", timezone = "Europe/Berlin" }`. A window whose end is
/// before its start runs past midnight into the next day (`22:00`–`06:00`),
/// and belongs to the day it starts on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTimeWindow")]
pub struct TimeWindow {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after midnight.
    start: u32,
    end: u32,
    tz: chrono_tz::Tz,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeWindow {
    #[serde(default)]
    days: Option<Days>,
    start: String,
    end: String,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Days {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<RawTimeWindow> for TimeWindow {
    type Error = String;
    fn try_from(raw: RawTimeWindow) -> Result<Self, String> {
        let start = minutes(&raw.start)?;
        let end = minutes(&raw.end)?;
        if start == end {
            return Err(format!(
                "time window {}–{} is empty; for all day write start = \"00:00\", end = \"24:00\"",
                raw.start, raw.end
            ));
        }
        if start == 24 * 60 {
            return Err("a time window cannot start at 24:00".into());
        }
        let tz = match raw.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(name) => chrono_tz::Tz::from_str(name).map_err(|_| {
                format!("unknown time zone {name:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")
            })?,
        };
        let mut days = [false; 7];
        match raw.days {
            None => days = [true; 7],
            Some(Days::One(s)) => day_spec(&s, &mut days)?,
            Some(Days::Many(list)) => {
                if list.is_empty() {
                    return Err("days = [] matches no day; leave it out for every day".into());
                }
                for s in &list {
                    day_spec(s, &mut days)?;
                }
            }
        }
        Ok(TimeWindow {
            days,
            start,
            end,
            tz,
        })
    }
}

fn minutes(hhmm: &str) -> Result<u32, String> {
    let bad = || format!("invalid time {hhmm:?}: expected HH:MM, 00:00 to 24:00");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `mon` or `monday`, in any case.
fn day(s: &str) -> Result<usize, String> {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = s.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .zip(FULL)
        .position(|(short, full)| lower == *short || lower == full)
        .ok_or_else(|| format!("invalid day {s:?}: expected mon, tue, wed, thu, fri, sat or sun"))
}

/// `mon`, `mon-fri`, `fri-mon` (wrapping through the weekend).
fn day_spec(s: &str, days: &mut [bool; 7]) -> Result<(), String> {
    match s.split_once('-') {
        None => days[day(s)?] = true,
        Some((a, b)) => {
            let (a, b) = (day(a)?, day(b)?);
            let mut d = a;
            loop {
                days[d] = true;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
    }
    Ok(())
}

impl TimeWindow {
    /// Whether Unix time `now` falls in the window.
    pub fn contains(&self, now: i64) -> bool {
        let Some(utc) = chrono::Utc.timestamp_opt(now, 0).single() else {
            return false;
        };
        let local = utc.with_timezone(&self.tz);
        let today = local.weekday().num_days_from_monday() as usize;
        let yesterday = (today + 6) % 7;
        let minute = local.hour() * 60 + local.minute();
        if self.start < self.end {
            self.days[today] && (self.start..self.end).contains(&minute)
        } else {
            (self.days[today] && minute >= self.start)
                || (self.days[yesterday] && minute < self.end)
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = DAY_NAMES
            .iter()
            .zip(self.days)
            .filter_map(|(d, on)| on.then_some(*d))
            .collect();
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02} {}",
            days.join(","),
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60,
            self.tz.name()
        )
    }
}
