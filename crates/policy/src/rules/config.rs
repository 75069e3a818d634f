//! The native policy file, in two phases: TOML with `deny_unknown_fields`
//! into raw structs (where each typed value — CIDR, path, method, port,
//! time window — is parsed, so the TOML error points at it), then checks
//! across fields, reported with the line and column of the rule.
//!
//! ```toml
//! [settings]
//! case_insensitive_paths = false
//!
//! [risk]                       # DESIGN.md's bands; these are the defaults
//! step_up = 30
//! step_up_mfa_max_age_seconds = 900
//!
//! [compliance]                 # see crate::compliance
//! report_only = false
//!
//! [sensitivity]                # services by sensitivity (unlisted: not low)
//! low = ["wiki"]
//! high = ["payroll"]
//!
//! [[rule]]
//! name = "eng-wiki"
//! priority = 100
//! effect = "allow"
//! groups = ["eng"]
//! services = ["wiki"]
//! methods = ["GET", "POST"]
//! paths = ["/api", "/docs"]
//! device_compliance = "standard"
//! max_risk = 49
//!
//! [[service_rule]]             # seed 001
//! name = "gateway-charges"
//! priority = 10
//! effect = "allow"
//! source = "api-gateway"
//! target = "payment-service"
//! methods = ["POST"]
//! paths = ["/v1/charges", "/v1/refunds"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::matchers::{Cidr, Method, PathPrefix, Ports, SpiffePattern, TimeWindow};
use super::{Effect, Names, Rule, RuleSet, Subjects};
use crate::compliance::ComplianceConfig;
use crate::decision::Sensitivity;
use crate::risk::{RiskBands, RiskEngineConfig};

/// Largest policy file accepted.
pub const MAX_POLICY_FILE_BYTES: usize = 4 << 20;
/// Most rules in one file.
pub const MAX_RULES: usize = 10_000;

/// A refused policy file: where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based; 0 when the problem has no place (the file is too large).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

/// Risk bands and the step-up window, from `[risk]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskPolicy {
    pub bands: RiskBands,
    /// A subject whose risk is at or above `bands.step_up` must have passed
    /// MFA within this many seconds, else the decision is step-up.
    pub step_up_mfa_max_age_seconds: u64,
    /// `[risk.engine]`: how scores are computed.
    pub engine: RiskEngineConfig,
    /// How often a live session is re-evaluated, by its risk: the first
    /// entry whose `min_risk` the score reaches (highest first).
    pub reevaluate: Vec<Reevaluate>,
}

/// One step of `[risk] reevaluate`: sessions at `min_risk` or above are
/// re-evaluated every `seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reevaluate {
    pub min_risk: u8,
    pub seconds: u32,
}

/// Seed 000's intervals: risk 80 and above every minute, 60 every three,
/// 30 every five, the rest every ten.
pub const DEFAULT_REEVALUATE: [Reevaluate; 4] = [
    Reevaluate {
        min_risk: 80,
        seconds: 60,
    },
    Reevaluate {
        min_risk: 60,
        seconds: 180,
    },
    Reevaluate {
        min_risk: 30,
        seconds: 300,
    },
    Reevaluate {
        min_risk: 0,
        seconds: 600,
    },
];

impl RiskPolicy {
    /// Seconds between re-evaluations of a live session at `risk`.
    pub fn reevaluate_after(&self, risk: u8) -> u32 {
        self.reevaluate
            .iter()
            .find(|r| risk >= r.min_risk)
            .map_or(DEFAULT_REEVALUATE[3].seconds, |r| r.seconds)
    }
}

impl Default for RiskPolicy {
    fn default() -> Self {
        Self {
            bands: RiskBands::default(),
            step_up_mfa_max_age_seconds: 900,
            engine: RiskEngineConfig::default(),
            reevaluate: DEFAULT_REEVALUATE.to_vec(),
        }
    }
}

/// Everything in a native policy file, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub rules: RuleSet,
    pub compliance: ComplianceConfig,
    pub risk: RiskPolicy,
    /// How sensitive each listed service is (`[sensitivity]`); a service
    /// not listed counts as not low (between the restricted and deny risk
    /// bands it is out of reach).
    pub sensitivity: BTreeMap<String, Sensitivity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    risk: RawRisk,
    #[serde(default)]
    compliance: ComplianceConfig,
    #[serde(default)]
    sensitivity: RawSensitivity,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    service_rule: Vec<Spanned<RawServiceRule>>,
}

/// `[sensitivity]`: service names by sensitivity.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensitivity {
    #[serde(default)]
    low: Vec<String>,
    #[serde(default)]
    medium: Vec<String>,
    #[serde(default)]
    high: Vec<String>,
}

impl RawSensitivity {
    fn validate(self) -> Result<BTreeMap<String, Sensitivity>, String> {
        let mut out = BTreeMap::new();
        for (level, names) in [
            (Sensitivity::Low, self.low),
            (Sensitivity::Medium, self.medium),
            (Sensitivity::High, self.high),
        ] {
            for name in names {
                if let Some(was) = out.insert(name.clone(), level) {
                    return Err(format!(
                        "service {name:?} is listed under sensitivity {} and {}",
                        level_name(was),
                        level_name(level)
                    ));
                }
            }
        }
        Ok(out)
    }
}

fn level_name(s: Sensitivity) -> &'static str {
    match s {
        Sensitivity::Low => "low",
        Sensitivity::Medium => "medium",
        Sensitivity::High => "high",
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    case_insensitive_paths: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    step_up: Option<u8>,
    reverify: Option<u8>,
    restricted: Option<u8>,
    deny: Option<u8>,
    terminate: Option<u8>,
    step_up_mfa_max_age_seconds: Option<u64>,
    session_low_seconds: Option<u32>,
    session_medium_seconds: Option<u32>,
    session_high_seconds: Option<u32>,
    #[serde(default)]
    engine: RiskEngineConfig,
    reevaluate: Option<Vec<Reevaluate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    priority: i64,
    effect: Effect,
    #[serde(default)]
    description: Option<String>,
    users: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    spiffe_ids: Option<Vec<SpiffePattern>>,
    services: Vec<String>,
    methods: Option<Vec<Method>>,
    paths: Option<Vec<PathPrefix>>,
    ports: Option<Vec<Ports>>,
    time_windows: Option<Vec<TimeWindow>>,
    source_networks: Option<Vec<Cidr>>,
    device_compliance: Option<String>,
    max_risk: Option<u8>,
    max_mfa_age_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceRule {
    name: String,
    priority: i64,
    effect: Effect,
    #[serde(default)]
    description: Option<String>,
    /// A workload's service name or its SPIFFE ID (pattern).
    source: String,
    target: String,
    methods: Option<Vec<Method>>,
    paths: Option<Vec<PathPrefix>>,
    ports: Option<Vec<Ports>>,
    time_windows: Option<Vec<TimeWindow>>,
    source_networks: Option<Vec<Cidr>>,
}

impl PolicyConfig {
    /// Parses and validates a native policy file.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_POLICY_FILE_BYTES {
            return Err(ConfigError {
                line: 0,
                column: 0,
                message: format!(
                    "policy file of {} bytes is over the limit of {MAX_POLICY_FILE_BYTES}",
                    text.len()
                ),
            });
        }
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError {
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        let whole = |message: String| ConfigError {
            line: 0,
            column: 0,
            message,
        };
        raw.compliance.validate().map_err(whole)?;
        let risk = risk_policy(&raw.risk).map_err(whole)?;
        let sensitivity = raw.sensitivity.validate().map_err(whole)?;
        let count = raw.rule.len() + raw.service_rule.len();
        if count > MAX_RULES {
            return Err(whole(format!(
                "{count} rules is over the limit of {MAX_RULES}"
            )));
        }
        let mut names = HashSet::new();
        // (priority, position in file) keeps ties in file order across both
        // kinds of rule.
        let mut ordered: Vec<(i64, usize, Rule)> = Vec::with_capacity(count);
        for spanned in raw.rule {
            let at = line_col(text, spanned.span().start);
            let rule =
                user_rule(spanned.into_inner(), &raw.compliance).map_err(|m| at_err(at, m))?;
            ordered.push((rule.priority, at.0, rule));
        }
        for spanned in raw.service_rule {
            let at = line_col(text, spanned.span().start);
            let rule = service_rule(spanned.into_inner()).map_err(|m| at_err(at, m))?;
            ordered.push((rule.priority, at.0, rule));
        }
        ordered.sort_by_key(|(priority, line, _)| (*priority, *line));
        for (_, line, rule) in &ordered {
            if !names.insert(rule.name.clone()) {
                return Err(at_err(
                    (*line, 1),
                    format!(
                        "rule name {:?} is used twice; names must be unique",
                        rule.name
                    ),
                ));
            }
        }
        let mut rules: Vec<Rule> = ordered.into_iter().map(|(_, _, r)| r).collect();
        let case_insensitive = raw.settings.case_insensitive_paths;
        if case_insensitive {
            for p in rules.iter_mut().flat_map(|r| r.paths.iter_mut().flatten()) {
                p.lowercase();
            }
        }
        Ok(PolicyConfig {
            rules: RuleSet {
                rules,
                case_insensitive_paths: case_insensitive,
            },
            compliance: raw.compliance,
            risk,
            sensitivity,
        })
    }
}

fn at_err((line, column): (usize, usize), message: String) -> ConfigError {
    ConfigError {
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn risk_policy(raw: &RawRisk) -> Result<RiskPolicy, String> {
    let d = RiskPolicy::default();
    let b = &d.bands;
    let bands = RiskBands {
        step_up: raw.step_up.unwrap_or(b.step_up),
        reverify: raw.reverify.unwrap_or(b.reverify),
        restricted: raw.restricted.unwrap_or(b.restricted),
        deny: raw.deny.unwrap_or(b.deny),
        terminate: raw.terminate.unwrap_or(b.terminate),
        session_low_secs: raw.session_low_seconds.unwrap_or(b.session_low_secs),
        session_medium_secs: raw.session_medium_seconds.unwrap_or(b.session_medium_secs),
        session_high_secs: raw.session_high_seconds.unwrap_or(b.session_high_secs),
    };
    let order = [
        ("step_up", bands.step_up),
        ("reverify", bands.reverify),
        ("restricted", bands.restricted),
        ("deny", bands.deny),
        ("terminate", bands.terminate),
    ];
    for pair in order.windows(2) {
        if pair[0].1 > pair[1].1 {
            return Err(format!(
                "risk.{} ({}) must not be above risk.{} ({})",
                pair[0].0, pair[0].1, pair[1].0, pair[1].1
            ));
        }
    }
    if bands.terminate > 100 {
        return Err(format!("risk.terminate ({}) is above 100", bands.terminate));
    }
    Ok(RiskPolicy {
        bands,
        step_up_mfa_max_age_seconds: raw
            .step_up_mfa_max_age_seconds
            .unwrap_or(d.step_up_mfa_max_age_seconds),
        engine: raw.engine.clone(),
        reevaluate: reevaluate(raw.reevaluate.as_deref())?,
    })
}

/// Checks `[risk] reevaluate`: each bound once, a floor at 0, intervals a
/// gateway-friendly 5 s to a day; sorted highest bound first.
fn reevaluate(raw: Option<&[Reevaluate]>) -> Result<Vec<Reevaluate>, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_REEVALUATE.to_vec());
    };
    let mut steps = raw.to_vec();
    steps.sort_by_key(|s| std::cmp::Reverse(s.min_risk));
    for s in &steps {
        if s.min_risk > 100 {
            return Err(format!(
                "risk.reevaluate: min_risk {} is above 100",
                s.min_risk
            ));
        }
        if !(5..=86_400).contains(&s.seconds) {
            return Err(format!(
                "risk.reevaluate: seconds {} (min_risk {}) must be 5..=86400",
                s.seconds, s.min_risk
            ));
        }
    }
    if let Some(pair) = steps.windows(2).find(|p| p[0].min_risk == p[1].min_risk) {
        return Err(format!(
            "risk.reevaluate: min_risk {} is listed twice",
            pair[0].min_risk
        ));
    }
    if steps.last().is_none_or(|s| s.min_risk != 0) {
        return Err(
            "risk.reevaluate needs an entry with min_risk = 0 (every session has a risk)".into(),
        );
    }
    Ok(steps)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(format!(
            "rule name {name:?} must be 1-128 printable characters"
        ));
    }
    Ok(())
}

/// `Some(list)` must not be empty: an empty list matches nothing, which is
/// never what was meant (leave the key out to match anything).
fn non_empty<T>(rule: &str, key: &str, list: Option<Vec<T>>) -> Result<Option<Vec<T>>, String> {
    match list {
        Some(l) if l.is_empty() => Err(format!(
            "rule {rule:?}: {key} = [] matches nothing; leave {key} out to match any"
        )),
        other => Ok(other),
    }
}

fn names(rule: &str, key: &str, list: Vec<String>) -> Result<Names, String> {
    if list.is_empty() {
        return Err(format!("rule {rule:?}: {key} = [] matches nothing"));
    }
    if let Some(bad) = list
        .iter()
        .find(|n| n.is_empty() || n.chars().any(char::is_control))
    {
        return Err(format!("rule {rule:?}: {key} has an invalid entry {bad:?}"));
    }
    Ok(Names::from_list(list))
}

/// Method, path, port, time and network lists, shared by both kinds.
struct Target {
    methods: Option<Vec<Method>>,
    paths: Option<Vec<PathPrefix>>,
    ports: Option<Vec<Ports>>,
    time_windows: Option<Vec<TimeWindow>>,
    source_networks: Option<Vec<Cidr>>,
}

macro_rules! target_filter {
    ($t:ty) => {
        impl $t {
            fn target_filter(&mut self) -> Target {
                Target {
                    methods: self.methods.take(),
                    paths: self.paths.take(),
                    ports: self.ports.take(),
                    time_windows: self.time_windows.take(),
                    source_networks: self.source_networks.take(),
                }
            }
        }
    };
}
target_filter!(RawRule);
target_filter!(RawServiceRule);

fn user_rule(mut raw: RawRule, compliance: &ComplianceConfig) -> Result<Rule, String> {
    check_name(&raw.name)?;
    let t = raw.target_filter();
    let name = raw.name.clone();
    let n = name.as_str();
    let users = raw.users.map(|u| names(n, "users", u)).transpose()?;
    let groups = non_empty(n, "groups", raw.groups)?.unwrap_or_default();
    if let Some(g) = groups.iter().find(|g| g.is_empty() || *g == "*") {
        return Err(format!(
            "rule {n:?}: groups has an invalid entry {g:?} (for everyone, write users = [\"*\"])"
        ));
    }
    let spiffe_ids = non_empty(n, "spiffe_ids", raw.spiffe_ids)?.unwrap_or_default();
    if users.is_none() && groups.is_empty() && spiffe_ids.is_empty() {
        return Err(format!(
            "rule {n:?} names no subject: give users, groups or spiffe_ids (users = [\"*\"] for any user)"
        ));
    }
    if raw.effect == Effect::Deny {
        for (key, set) in [
            ("device_compliance", raw.device_compliance.is_some()),
            ("max_risk", raw.max_risk.is_some()),
            ("max_mfa_age_seconds", raw.max_mfa_age_seconds.is_some()),
        ] {
            if set {
                return Err(format!(
                    "rule {n:?}: a deny rule cannot have {key} (it would read \"deny when the check passes\"); \
                     deny rules take time_windows and source_networks, and requirements go on allow rules"
                ));
            }
        }
    }
    if let Some(level) = &raw.device_compliance
        && !compliance.policies.contains_key(level)
    {
        return Err(format!(
            "rule {n:?}: device_compliance {level:?} is not a compliance policy ({})",
            compliance
                .policies
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(max) = raw.max_risk
        && max > 100
    {
        return Err(format!("rule {n:?}: max_risk {max} is above 100"));
    }
    let _ = raw.description;
    Ok(Rule {
        services: names(n, "services", raw.services)?,
        methods: non_empty(n, "methods", t.methods)?,
        paths: non_empty(n, "paths", t.paths)?,
        ports: non_empty(n, "ports", t.ports)?,
        time_windows: non_empty(n, "time_windows", t.time_windows)?,
        source_networks: non_empty(n, "source_networks", t.source_networks)?,
        subjects: Subjects::Users {
            users,
            groups,
            spiffe_ids,
        },
        device_compliance: raw.device_compliance,
        max_risk: raw.max_risk,
        max_mfa_age_seconds: raw.max_mfa_age_seconds,
        name: raw.name,
        priority: raw.priority,
        effect: raw.effect,
    })
}

fn service_rule(mut raw: RawServiceRule) -> Result<Rule, String> {
    check_name(&raw.name)?;
    let t = raw.target_filter();
    let name = raw.name.clone();
    let n = name.as_str();
    let subjects = if raw.source.starts_with("spiffe://") {
        Subjects::Workload {
            name: None,
            spiffe_id: Some(
                SpiffePattern::try_from(raw.source.clone())
                    .map_err(|e| format!("rule {n:?}: source: {e}"))?,
            ),
        }
    } else {
        if raw.source.is_empty() || raw.source == "*" || raw.source.chars().any(char::is_control) {
            return Err(format!(
                "rule {n:?}: source {:?} must name one workload (a service name or a SPIFFE ID)",
                raw.source
            ));
        }
        Subjects::Workload {
            name: Some(raw.source.clone()),
            spiffe_id: None,
        }
    };
    let _ = raw.description;
    Ok(Rule {
        services: names(n, "target", vec![raw.target])?,
        methods: non_empty(n, "methods", t.methods)?,
        paths: non_empty(n, "paths", t.paths)?,
        ports: non_empty(n, "ports", t.ports)?,
        time_windows: non_empty(n, "time_windows", t.time_windows)?,
        source_networks: non_empty(n, "source_networks", t.source_networks)?,
        subjects,
        device_compliance: None,
        max_risk: None,
        max_mfa_age_seconds: None,
        name: raw.name,
        priority: raw.priority,
        effect: raw.effect,
    })
}
