//! The risk engine: one score on `DESIGN.md`'s 0–100 scale from the seeds'
//! factors, each factor's contribution kept for the explanation.
//!
//! | factor | weight (default) | full weight when |
//! |---|---|---|
//! | network | 20 (seed 003 `location` 0.2) | the source is outside the trusted networks |
//! | device | 30 (seed 003 `device` 0.3) | the posture fails every check ([`super::login_risk`]'s device part, scaled) |
//! | behaviour | 30 (seed 003 `behavior` 0.3) | hour, network and service are all new against the user's baseline |
//! | time | 20 (seed 003 `time` 0.2) | outside business hours |
//! | sensitivity | 20 | the resource is highly sensitive (medium: half) |
//! | failed logins | 20 | 4 or more failures since the last success (5 each) |
//!
//! Contributions add up and the score is capped at 100. What cannot be
//! known (no source address, no baseline yet) costs half the weight, as an
//! unknown posture check does: riskier than a pass, not a failure.
//!
//! The behavioural baseline is learned from the user's own audit history:
//! successful accesses in the last `baseline_days` (30) before `now`, the
//! hours of day, networks (/24 for IPv4, /48 for IPv6) and services seen.
//! Everything takes values and a time; nothing reads a clock or a database,
//! so the same history and time give the same score.

use std::collections::BTreeSet;
use std::net::IpAddr;

use chrono::{TimeZone, Timelike};
use serde::Deserialize;
use umbra_proto::PostureReport;

use super::{LoginSignals, MAX_DEVICE_WEIGHT, login_risk};
use crate::decision::{Risk, RiskFactor, Sensitivity};
use crate::rules::matchers::{Cidr, TimeWindow};

/// Most points each factor can add.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskWeights {
    pub network: u8,
    pub device: u8,
    pub behaviour: u8,
    pub time: u8,
    pub sensitivity: u8,
    pub failed_logins: u8,
}

impl Default for RiskWeights {
    fn default() -> Self {
        Self {
            network: 20,
            device: 30,
            behaviour: 30,
            time: 20,
            sensitivity: 20,
            failed_logins: 20,
        }
    }
}

/// `[risk.engine]`: weights and what counts as usual.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskEngineConfig {
    pub weights: RiskWeights,
    /// Networks the organisation trusts (offices, the VPN being replaced).
    pub trusted_networks: Vec<Cidr>,
    /// When people normally work; none configured means no time factor.
    pub business_hours: Vec<TimeWindow>,
    /// How far back the behavioural baseline looks.
    pub baseline_days: u32,
    /// Fewer successful accesses than this and there is no baseline yet.
    pub baseline_min_events: u32,
    /// Time zone of the hours in the baseline (an IANA name).
    #[serde(deserialize_with = "tz")]
    pub baseline_timezone: chrono_tz::Tz,
}

fn tz<'de, D: serde::Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let name = String::deserialize(d)?;
    name.parse()
        .map_err(|_| serde::de::Error::custom(format!("unknown time zone {name:?}")))
}

impl Default for RiskEngineConfig {
    fn default() -> Self {
        Self {
            weights: RiskWeights::default(),
            trusted_networks: Vec::new(),
            business_hours: Vec::new(),
            baseline_days: 30,
            baseline_min_events: 10,
            baseline_timezone: chrono_tz::UTC,
        }
    }
}

/// One past access of the user, from the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEvent {
    /// Unix seconds.
    pub at: i64,
    pub source: Option<IpAddr>,
    pub service: String,
    pub allowed: bool,
}

/// What is usual for one user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    pub events: u32,
    /// Accesses per hour of day (in the baseline's time zone).
    pub hours: [u32; 24],
    pub networks: BTreeSet<IpAddr>,
    pub services: BTreeSet<String>,
}

/// The network an address belongs to, for "seen before": a /24 or a /48,
/// so a new address from the same office or ISP pool is not new.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

fn hour_of(at: i64, tz: chrono_tz::Tz) -> Option<usize> {
    let t = chrono::Utc.timestamp_opt(at, 0).single()?;
    usize::try_from(t.with_timezone(&tz).hour()).ok()
}

impl Baseline {
    /// Learns from the allowed accesses in `[now - days, now)`; later and
    /// denied events are ignored (an attacker's failed probing must not
    /// become "usual").
    pub fn learn(events: &[AccessEvent], now: i64, config: &RiskEngineConfig) -> Self {
        let since = now.saturating_sub(i64::from(config.baseline_days) * 86_400);
        let mut b = Baseline::default();
        for e in events
            .iter()
            .filter(|e| e.allowed && e.at >= since && e.at < now)
        {
            b.events += 1;
            if let Some(h) = hour_of(e.at, config.baseline_timezone) {
                b.hours[h] += 1;
            }
            if let Some(ip) = e.source {
                b.networks.insert(network_of(ip));
            }
            b.services.insert(e.service.clone());
        }
        b
    }
}

/// The facts the engine scores.
#[derive(Clone, Copy, Debug)]
pub struct RiskSignals<'a> {
    pub now: i64,
    pub source: Option<IpAddr>,
    pub posture: Option<&'a PostureReport>,
    /// Unix time of the posture report's `last_scan`.
    pub last_scan: Option<i64>,
    /// The service asked for; `None` at login.
    pub service: Option<&'a str>,
    pub sensitivity: Option<Sensitivity>,
    pub recent_failures: u32,
    /// `None` when history is not available (counts as no baseline).
    pub baseline: Option<&'a Baseline>,
}

fn scaled(weight: u8, part: u32, whole: u32) -> u8 {
    if whole == 0 {
        return 0;
    }
    let points = (u32::from(weight) * part.min(whole) + whole / 2) / whole;
    u8::try_from(points).unwrap_or(weight)
}

impl RiskEngineConfig {
    /// Scores one login or access.
    pub fn assess(&self, s: &RiskSignals<'_>) -> Risk {
        let w = &self.weights;
        let mut factors = Vec::new();
        let mut add = |name: &str, points: u8| {
            if points > 0 {
                factors.push(RiskFactor {
                    name: name.to_owned(),
                    points,
                });
            }
        };
        if !self.trusted_networks.is_empty() {
            match s.source {
                None => add("network_unknown", scaled(w.network, 1, 2)),
                Some(ip) if !self.trusted_networks.iter().any(|n| n.contains(ip)) => {
                    add("untrusted_network", w.network);
                }
                Some(_) => {}
            }
        }
        match s.posture {
            None => add("device_unknown", scaled(w.device, 1, 2)),
            Some(p) => {
                let (device, _) = login_risk(&LoginSignals {
                    posture: p,
                    last_scan: s.last_scan,
                    now: s.now,
                    recent_failures: 0,
                });
                add(
                    "device_posture",
                    scaled(w.device, u32::from(device), u32::from(MAX_DEVICE_WEIGHT)),
                );
            }
        }
        self.behaviour(s, &mut add);
        if !self.business_hours.is_empty() && !self.business_hours.iter().any(|t| t.contains(s.now))
        {
            add("outside_business_hours", w.time);
        }
        match s.sensitivity {
            Some(Sensitivity::High) => add("sensitive_resource", w.sensitivity),
            Some(Sensitivity::Medium) => add("sensitive_resource", scaled(w.sensitivity, 1, 2)),
            _ => {}
        }
        add(
            "recent_failed_logins",
            scaled(w.failed_logins, s.recent_failures, 4),
        );
        let total: u32 = factors.iter().map(|f| u32::from(f.points)).sum();
        Risk {
            score: u8::try_from(total.min(100)).unwrap_or(100),
            factors,
        }
    }

    /// Unusual hour, new network, new service: a third of the weight each.
    fn behaviour(&self, s: &RiskSignals<'_>, add: &mut impl FnMut(&str, u8)) {
        let w = self.weights.behaviour;
        let Some(b) = s.baseline.filter(|b| b.events >= self.baseline_min_events) else {
            add("no_baseline", scaled(w, 1, 2));
            return;
        };
        let third = scaled(w, 1, 3);
        // Unusual: an hour (or its neighbours) holding under 2% of accesses.
        if let Some(h) = hour_of(s.now, self.baseline_timezone) {
            let near = b.hours[(h + 23) % 24] + b.hours[h] + b.hours[(h + 1) % 24];
            if near * 50 < b.events {
                add("unusual_hour", third);
            }
        }
        if let Some(ip) = s.source
            && !b.networks.contains(&network_of(ip))
        {
            add("new_network", third);
        }
        if let Some(service) = s.service
            && !b.services.contains(service)
        {
            add("new_service", third);
        }
    }
}

#[cfg(test)]
mod tests;
