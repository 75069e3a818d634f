//! Native access rules: TOML in, decisions out, no interpreter in between.
//!
//! A rule names *who* (users, groups, SPIFFE IDs — or, for service-to-service
//! rules as in seed 001, a source workload), *what* (services, methods,
//! path prefixes on whole segments, ports) and *under which conditions*
//! (device compliance level, maximum risk, MFA age, time windows, source
//! networks). Rules are tried in priority order, lowest number first (ties
//! in file order), and the first rule that applies decides — seed 000's
//! engine. A rule applies when its who, what and conditions all hold.
//! Nothing applying means deny.
//!
//! Explanations: a decision names the rule that decided. When no rule
//! applied, it names the first allow rule that would have applied but for
//! its conditions (with each failing check: "Firewall is disabled",
//! "risk 62 is above 49"), or, failing that, the first rule for this subject
//! and service that did not cover the method, path or port — so the audit
//! trail says why, not just "no".
//!
//! An allow rule whose only unmet condition is `max_mfa_age_seconds` decides
//! *step-up*: the subject gets in after a fresh MFA, which is what the rule
//! asks. Deny rules take only conditions that say when they apply (time
//! windows, source networks); "deny unless compliant" is an allow rule
//! with a compliance condition followed by default deny.

mod config;
pub mod matchers;

use std::net::IpAddr;

pub(crate) use config::line_col;
pub use config::{
    ConfigError, DEFAULT_REEVALUATE, MAX_POLICY_FILE_BYTES, MAX_RULES, PolicyConfig, Reevaluate,
    RiskPolicy,
};
use matchers::{Cidr, Method, PathPrefix, Ports, SpiffePattern, TimeWindow};

use crate::decision::Check;

/// What a rule does when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// `"*"` or a list of names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Names {
    Any,
    List(Vec<String>),
}

impl Names {
    fn from_list(list: Vec<String>) -> Self {
        if list.iter().any(|n| n == "*") {
            Names::Any
        } else {
            Names::List(list)
        }
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            Names::Any => true,
            Names::List(list) => list.iter().any(|n| n == name),
        }
    }
}

/// Who a rule is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subjects {
    /// Users by name (`*`: any user), groups, SPIFFE IDs.
    Users {
        users: Option<Names>,
        groups: Vec<String>,
        spiffe_ids: Vec<SpiffePattern>,
    },
    /// A calling workload, by service name or SPIFFE ID (seed 001's source).
    Workload {
        name: Option<String>,
        spiffe_id: Option<SpiffePattern>,
    },
}

/// One rule, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub priority: i64,
    pub effect: Effect,
    pub subjects: Subjects,
    pub services: Names,
    pub methods: Option<Vec<Method>>,
    pub paths: Option<Vec<PathPrefix>>,
    pub ports: Option<Vec<Ports>>,
    pub device_compliance: Option<String>,
    pub max_risk: Option<u8>,
    pub max_mfa_age_seconds: Option<u64>,
    pub time_windows: Option<Vec<TimeWindow>>,
    pub source_networks: Option<Vec<Cidr>>,
}

/// Rules in the order they are tried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    case_insensitive_paths: bool,
}

/// What a rule sees of a request. Paths are normalized
/// ([`crate::path::normalize`]) by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub user: Option<&'a str>,
    pub groups: &'a [String],
    pub spiffe_id: Option<&'a str>,
    /// The calling workload's service name (service-to-service).
    pub workload: Option<&'a str>,
    pub service: &'a str,
    /// `None` for a TCP stream.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub port: Option<u16>,
    pub source: Option<IpAddr>,
    /// Unix seconds.
    pub now: i64,
    /// Seconds since the subject last passed MFA; `None` when never.
    pub mfa_age: Option<u64>,
    pub risk: u8,
}

/// A device's standing against one compliance policy, as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComplianceStatus {
    Compliant,
    /// The blocking findings, each as a check.
    NonCompliant(Vec<Check>),
}

/// Answers "is this device compliant with level L?" for the rules; the
/// decision point implements it over the posture report.
pub trait ComplianceSource {
    fn status(&self, level: &str) -> ComplianceStatus;
}

/// What the rules decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleEffect {
    Allow,
    /// Allowed after a fresh MFA.
    StepUp,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleDecision {
    pub effect: RuleEffect,
    /// The rule that decided, or the one that came closest when none did.
    pub rule: Option<String>,
    /// Whether `rule` applied (and so decided).
    pub matched: bool,
    pub failing: Vec<Check>,
    /// Compliance findings that would have failed a rule in report-only mode.
    pub report_only: Vec<Check>,
}

impl RuleSet {
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn case_insensitive_paths(&self) -> bool {
        self.case_insensitive_paths
    }

    /// Adds rules, keeping priority order; an added rule goes after those
    /// already there with the same priority.
    pub fn extend(&mut self, rules: impl IntoIterator<Item = Rule>) {
        self.rules.extend(rules);
        self.rules.sort_by_key(|r| r.priority);
    }

    /// Whether some allow rule names this user (or one of the groups) and
    /// this service, whatever its conditions and target: the coarse check
    /// for what needs no request (the service list a login returns, an SPA
    /// knock). Each request is still decided in full.
    pub fn may_allow(&self, user: &str, groups: &[String], service: &str) -> bool {
        self.rules.iter().any(|r| {
            r.effect == Effect::Allow
                && r.services.contains(service)
                && matches!(&r.subjects, Subjects::Users { users, groups: gs, .. }
                    if users.as_ref().is_some_and(|n| n.contains(user))
                        || groups.iter().any(|g| gs.contains(g)))
        })
    }

    /// First applying rule decides; default deny.
    pub fn evaluate(
        &self,
        facts: &Facts<'_>,
        compliance: &dyn ComplianceSource,
        report_only: bool,
    ) -> RuleDecision {
        let lowered;
        let mut facts = *facts;
        if self.case_insensitive_paths
            && let Some(p) = facts.path
        {
            lowered = p.to_ascii_lowercase();
            facts.path = Some(&lowered);
        }
        let mut closest_conditions: Option<(&Rule, Vec<Check>)> = None;
        let mut closest_target: Option<(&Rule, Vec<Check>)> = None;
        for rule in &self.rules {
            if !rule.subject_matches(&facts) || !rule.services.contains(facts.service) {
                continue;
            }
            let misses = rule.target_misses(&facts);
            if !misses.is_empty() {
                if rule.effect == Effect::Allow && closest_target.is_none() {
                    closest_target = Some((rule, misses));
                }
                continue;
            }
            let mut c = Conditions::default();
            rule.check_conditions(&facts, compliance, report_only, &mut c);
            if c.failing.is_empty() {
                let effect = match rule.effect {
                    Effect::Deny => RuleEffect::Deny,
                    Effect::Allow if c.mfa_too_old => RuleEffect::StepUp,
                    Effect::Allow => RuleEffect::Allow,
                };
                let failing = match effect {
                    RuleEffect::Deny => vec![Check::new(
                        "deny_rule",
                        format!("rule {} denies this request", rule.name),
                    )],
                    _ => c.step_up,
                };
                return RuleDecision {
                    effect,
                    rule: Some(rule.name.clone()),
                    matched: true,
                    failing,
                    report_only: c.report_only,
                };
            }
            if rule.effect == Effect::Allow && closest_conditions.is_none() {
                let mut failing = c.failing;
                failing.extend(c.step_up);
                closest_conditions = Some((rule, failing));
            }
        }
        let (rule, failing) = match closest_conditions.or(closest_target) {
            Some((rule, failing)) => (Some(rule.name.clone()), failing),
            None => (
                None,
                vec![Check::new(
                    "no_rule",
                    format!("no rule grants {} access to {}", who(&facts), facts.service),
                )],
            ),
        };
        RuleDecision {
            effect: RuleEffect::Deny,
            rule,
            matched: false,
            failing,
            report_only: Vec::new(),
        }
    }
}

fn who(f: &Facts<'_>) -> String {
    match (f.user, f.workload, f.spiffe_id) {
        (Some(u), _, _) => format!("user {u}"),
        (None, Some(w), _) => format!("workload {w}"),
        (None, None, Some(id)) => id.to_owned(),
        (None, None, None) => "an unnamed subject".to_owned(),
    }
}

#[derive(Default)]
struct Conditions {
    failing: Vec<Check>,
    report_only: Vec<Check>,
    /// The MFA-age check failed (it is in `step_up`, not `failing`).
    mfa_too_old: bool,
    step_up: Vec<Check>,
}

impl Rule {
    fn subject_matches(&self, f: &Facts<'_>) -> bool {
        match &self.subjects {
            Subjects::Users {
                users,
                groups,
                spiffe_ids,
            } => {
                f.user
                    .is_some_and(|u| users.as_ref().is_some_and(|n| n.contains(u)))
                    || f.groups.iter().any(|g| groups.contains(g))
                    || f.spiffe_id
                        .is_some_and(|id| spiffe_ids.iter().any(|p| p.matches(id)))
            }
            Subjects::Workload { name, spiffe_id } => {
                name.as_deref().is_some_and(|n| f.workload == Some(n))
                    || spiffe_id
                        .as_ref()
                        .is_some_and(|p| f.spiffe_id.is_some_and(|id| p.matches(id)))
            }
        }
    }

    /// The method, path and port checks this request misses.
    fn target_misses(&self, f: &Facts<'_>) -> Vec<Check> {
        let mut misses = Vec::new();
        if let Some(methods) = &self.methods
            && !f.method.is_some_and(|m| methods.iter().any(|x| x.0 == m))
        {
            misses.push(Check::new(
                "method",
                format!(
                    "method {} is not among {} of rule {}",
                    f.method.unwrap_or("(none)"),
                    join(methods.iter().map(|m| m.0.as_str())),
                    self.name
                ),
            ));
        }
        if let Some(paths) = &self.paths
            && !f.path.is_some_and(|p| paths.iter().any(|x| x.matches(p)))
        {
            misses.push(Check::new(
                "path",
                format!(
                    "path {} is not under {} of rule {}",
                    f.path.unwrap_or("(none)"),
                    join(paths.iter().map(|p| p.0.as_str())),
                    self.name
                ),
            ));
        }
        if let Some(ports) = &self.ports
            && !f.port.is_some_and(|p| ports.iter().any(|x| x.contains(p)))
        {
            misses.push(Check::new(
                "port",
                format!(
                    "port {} is not allowed by rule {}",
                    f.port
                        .map_or_else(|| "(none)".to_owned(), |p| p.to_string()),
                    self.name
                ),
            ));
        }
        misses
    }

    fn check_conditions(
        &self,
        f: &Facts<'_>,
        compliance: &dyn ComplianceSource,
        report_only: bool,
        c: &mut Conditions,
    ) {
        if let Some(level) = &self.device_compliance
            && let ComplianceStatus::NonCompliant(findings) = compliance.status(level)
        {
            if report_only {
                c.report_only.extend(findings);
            } else {
                c.failing.extend(findings);
            }
        }
        if let Some(max) = self.max_risk
            && f.risk > max
        {
            c.failing.push(Check::new(
                "max_risk",
                format!(
                    "risk {} is above {max}, the most rule {} allows",
                    f.risk, self.name
                ),
            ));
        }
        if let Some(max) = self.max_mfa_age_seconds
            && f.mfa_age.is_none_or(|age| age > max)
        {
            c.mfa_too_old = true;
            c.step_up.push(Check::new(
                "mfa_age",
                match f.mfa_age {
                    Some(age) => format!(
                        "MFA was {age} s ago; rule {} needs it within {max} s",
                        self.name
                    ),
                    None => format!(
                        "rule {} needs MFA within {max} s, and there was none",
                        self.name
                    ),
                },
            ));
        }
        if let Some(windows) = &self.time_windows
            && !windows.iter().any(|w| w.contains(f.now))
        {
            c.failing.push(Check::new(
                "time_window",
                format!(
                    "outside the time windows of rule {} ({})",
                    self.name,
                    join(windows.iter().map(ToString::to_string))
                ),
            ));
        }
        if let Some(nets) = &self.source_networks
            && !f
                .source
                .is_some_and(|ip| nets.iter().any(|n| n.contains(ip)))
        {
            c.failing.push(Check::new(
                "source_network",
                format!(
                    "source address {} is outside the networks of rule {}",
                    f.source
                        .map_or_else(|| "(unknown)".to_owned(), |ip| ip.to_string()),
                    self.name
                ),
            ));
        }
    }
}

fn join<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    let mut out = String::new();
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(s.as_ref());
    }
    out
}

#[cfg(test)]
mod tests;
