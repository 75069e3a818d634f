//! The one decision interface.
//!
//! [`DecisionInput`] holds the facts of one access — subject, device
//! posture, request, context, risk — and is, serialized with a few facts
//! Umbra derives (the normalized path, the device's compliance reports), the
//! `input` document Rego policies see (`docs/policy.md` describes it).
//! [`DecisionPoint::decide`] answers with a [`Decision`]: allow, allow once
//! conditions are met (step-up MFA), or deny, with the rule that decided,
//! every failing check and the risk factors, for the audit record.
//!
//! Order of checks (all are run, so the audit record lists every reason):
//! 1. The request itself: a path that does not normalize or a method that is
//!    not an uppercase token is refused before any rule sees it.
//! 2. The risk gate: at or above the deny band (80), new access is denied.
//! 3. The required compliance policy, if one is configured for all access.
//! 4. Native rules (first match wins) and/or the Rego entry point
//!    `data.umbra.authz.decision`; with both, both must allow.
//! 5. The risk bands: 70–79 only low-sensitivity services; at or above the
//!    step-up band (30) a stale MFA makes the decision step-up; obligations
//!    (device re-verification, detailed audit, session recording) are added.
//!
//! Deciding never fails: an evaluation error is a deny whose failing check
//! names it, so a caller cannot mistake an error for an allow.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use umbra_proto::PostureReport;

use crate::compliance::{ComplianceConfig, ComplianceReport};
use crate::path;
use crate::rego::PolicySet;
use crate::rego::decision::RegoDecision;
use crate::rules::matchers::Method;
use crate::rules::{ComplianceSource, ComplianceStatus, Facts, PolicyConfig, RuleEffect};

/// Umbra's Rego entry point.
pub const DECISION_QUERY: &str = "data.umbra.authz.decision";

/// The facts of one access.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionInput {
    pub subject: Subject,
    /// The device the request comes from, when there is one.
    #[serde(default)]
    pub device: Option<Device>,
    pub request: Request,
    pub context: Context,
    #[serde(default)]
    pub risk: Risk,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The user's name; `None` for a workload.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The device's id.
    #[serde(default)]
    pub device: Option<String>,
    /// From the client certificate: a device's or a workload's SVID.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// A calling workload's service name (seed 001's `source_service`).
    #[serde(default)]
    pub service: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The last posture report; `None` when the device never sent one.
    #[serde(default)]
    pub posture: Option<PostureReport>,
}

/// How sensitive a service is (its configuration says); between the
/// restricted and deny bands only `low` is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    Low,
    Medium,
    High,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub service: String,
    /// `None` for a TCP stream.
    #[serde(default)]
    pub method: Option<String>,
    /// The request path; normalized before any rule sees it.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// `None` counts as not low.
    #[serde(default)]
    pub sensitivity: Option<Sensitivity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    /// Unix seconds: the decision's clock (callers inject it).
    pub now_s: i64,
    #[serde(default)]
    pub session_age_s: Option<u64>,
    /// Seconds since the subject last passed MFA; `None` when never.
    #[serde(default)]
    pub mfa_age_s: Option<u64>,
}

/// The risk score (0–100, `DESIGN.md`) and what it is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    pub score: u8,
    #[serde(default)]
    pub factors: Vec<RiskFactor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskFactor {
    pub name: String,
    /// Its contribution to the score.
    pub points: u8,
}

/// A check that did not pass: a stable name and a message for the audit
/// trail (and, where safe, for the user).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub message: String,
}

impl Check {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    /// Allowed once every prerequisite condition is met.
    Conditional,
    Deny,
}

/// What comes with a decision. [`Condition::StepUpMfa`] is a prerequisite
/// (nothing passes until it is met); the others are obligations the
/// enforcement point carries out while it lets the request through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    StepUpMfa,
    DeviceReverification,
    DetailedAudit,
    SessionRecording,
}

impl Condition {
    pub fn is_prerequisite(self) -> bool {
        matches!(self, Condition::StepUpMfa)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::StepUpMfa => "step_up_mfa",
            Condition::DeviceReverification => "device_reverification",
            Condition::DetailedAudit => "detailed_audit",
            Condition::SessionRecording => "session_recording",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Condition::StepUpMfa,
            Condition::DeviceReverification,
            Condition::DetailedAudit,
            Condition::SessionRecording,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The answer, with everything the audit record needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// Sorted, without duplicates.
    pub conditions: Vec<Condition>,
    /// The native rule that decided (or came closest when none applied).
    pub matched_rule: Option<String>,
    pub failing_checks: Vec<Check>,
    /// Compliance findings that did not count (report-only mode).
    pub report_only: Vec<Check>,
    pub risk: Risk,
    /// Human-readable explanation, one line each.
    pub reasons: Vec<String>,
}

impl Decision {
    /// True only for [`Outcome::Allow`]: a conditional decision is not an
    /// allow until its conditions are met.
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// A step-up MFA would turn this decision into an allow.
    pub fn needs_step_up(&self) -> bool {
        self.outcome == Outcome::Conditional && self.conditions.contains(&Condition::StepUpMfa)
    }
}

/// Where Rego sits next to the native rules.
#[derive(Clone, Debug)]
pub struct RegoPolicy {
    pub set: PolicySet,
    /// Normally [`DECISION_QUERY`].
    pub query: String,
    /// Rego decides alone; native rules are not consulted.
    pub exclusive: bool,
}

/// Native configuration plus, optionally, a Rego policy set: everything a
/// decision needs. Immutable; the caller swaps a new one in (an
/// `Arc<DecisionPoint>`) when policy changes.
#[derive(Clone, Debug, Default)]
pub struct DecisionPoint {
    pub config: PolicyConfig,
    pub rego: Option<RegoPolicy>,
}

/// Compliance computed on demand from the posture report.
struct PostureCompliance<'a> {
    config: &'a ComplianceConfig,
    posture: Option<&'a PostureReport>,
    now: i64,
}

impl ComplianceSource for PostureCompliance<'_> {
    fn status(&self, level: &str) -> ComplianceStatus {
        let Some(policy) = self.config.policies.get(level) else {
            return ComplianceStatus::NonCompliant(vec![Check::new(
                format!("compliance.{level}"),
                format!("compliance policy {level} is not configured"),
            )]);
        };
        let Some(posture) = self.posture else {
            return ComplianceStatus::NonCompliant(vec![Check::new(
                format!("compliance.{level}"),
                format!(
                    "the device has sent no posture report, so compliance with {level} is unknown"
                ),
            )]);
        };
        let report = policy.check(posture, self.now);
        if report.compliant {
            return ComplianceStatus::Compliant;
        }
        ComplianceStatus::NonCompliant(
            report
                .blocking(policy)
                .map(|f| {
                    Check::new(
                        format!("compliance.{level}.{}", f.check.as_str()),
                        f.message.clone(),
                    )
                })
                .collect(),
        )
    }
}

/// The `input` document Rego sees.
#[derive(Serialize)]
struct RegoDocument<'a> {
    subject: &'a Subject,
    device: Option<RegoDevice<'a>>,
    request: RegoRequest<'a>,
    context: RegoContext,
    risk: &'a Risk,
}

#[derive(Serialize)]
struct RegoDevice<'a> {
    posture: Option<&'a PostureReport>,
    compliance: BTreeMap<String, RegoCompliance>,
    report_only: bool,
}

/// A compliance report with what blocks under the policy's own rule for
/// unknown checks, so a Rego policy need not know that rule.
#[derive(Serialize)]
struct RegoCompliance {
    #[serde(flatten)]
    report: ComplianceReport,
    blocking: Vec<crate::compliance::Finding>,
}

#[derive(Serialize)]
struct RegoContext {
    /// Canonical: an IPv4-mapped IPv6 address is written as IPv4, so
    /// policies match it against IPv4 networks.
    source_address: Option<IpAddr>,
    now_s: i64,
    session_age_s: Option<u64>,
    mfa_age_s: Option<u64>,
}

#[derive(Serialize)]
struct RegoRequest<'a> {
    service: &'a str,
    method: Option<&'a str>,
    path: Option<&'a str>,
    port: Option<u16>,
    sensitivity: Option<Sensitivity>,
}

/// Collects checks, conditions and reasons, then settles the outcome.
struct Verdict {
    failing: Vec<Check>,
    report_only: Vec<Check>,
    conditions: Vec<Condition>,
    reasons: Vec<String>,
    matched_rule: Option<String>,
}

impl DecisionPoint {
    pub fn new(config: PolicyConfig) -> Self {
        Self { config, rego: None }
    }

    /// The coarse check ([`crate::rules::RuleSet::may_allow`]) for what
    /// comes before a request. With Rego deciding alone, only Rego can say,
    /// and it says so on each request: the answer here is yes.
    pub fn may_allow(&self, user: &str, groups: &[String], service: &str) -> bool {
        self.rego.as_ref().is_some_and(|r| r.exclusive)
            || self.config.rules.may_allow(user, groups, service)
    }

    /// Decides one access. Never fails: errors are denials that say so.
    pub fn decide(&self, input: &DecisionInput) -> Decision {
        let mut v = Verdict {
            failing: Vec::new(),
            report_only: Vec::new(),
            conditions: Vec::new(),
            reasons: Vec::new(),
            matched_rule: None,
        };
        let normalized = match self.check_request(&input.request) {
            Ok(p) => p,
            Err(check) => {
                v.failing.push(check);
                return v.finish(input);
            }
        };
        let bands = &self.config.risk.bands;
        let risk = input.risk.score;
        if risk >= bands.deny {
            v.failing.push(Check::new(
                "risk",
                format!(
                    "risk {risk} is at or above {}: new access is denied until an admin approves",
                    bands.deny
                ),
            ));
        }
        let compliance = PostureCompliance {
            config: &self.config.compliance,
            posture: input.device.as_ref().and_then(|d| d.posture.as_ref()),
            now: input.context.now_s,
        };
        let report_only = self.config.compliance.report_only;
        if let Some(level) = &self.config.compliance.required
            && let ComplianceStatus::NonCompliant(findings) = compliance.status(level)
        {
            if report_only {
                v.report_only.extend(findings);
            } else {
                v.failing.extend(findings);
            }
        }
        let rego_exclusive = self.rego.as_ref().is_some_and(|r| r.exclusive);
        if !rego_exclusive {
            self.native(input, normalized.as_deref(), &compliance, &mut v);
        }
        if let Some(rego) = &self.rego {
            self.rego(rego, input, normalized.as_deref(), &mut v);
        }
        self.risk_bands(input, &mut v);
        v.finish(input)
    }

    /// Normalizes the path and checks the method.
    fn check_request(&self, r: &Request) -> Result<Option<String>, Check> {
        if let Some(m) = &r.method
            && !Method::is_valid(m)
        {
            return Err(Check::new(
                "method",
                format!("method {m:?} is refused: methods are uppercase tokens"),
            ));
        }
        r.path
            .as_deref()
            .map(|p| {
                path::normalize(p)
                    .map_err(|e| Check::new("path", format!("path {p:?} is refused: {e}")))
            })
            .transpose()
    }

    fn native(
        &self,
        input: &DecisionInput,
        path: Option<&str>,
        compliance: &PostureCompliance<'_>,
        v: &mut Verdict,
    ) {
        let s = &input.subject;
        let facts = Facts {
            user: s.user.as_deref(),
            groups: &s.groups,
            spiffe_id: s.spiffe_id.as_deref(),
            workload: s.service.as_deref(),
            service: &input.request.service,
            method: input.request.method.as_deref(),
            path,
            port: input.request.port,
            source: input.context.source_address,
            now: input.context.now_s,
            mfa_age: input.context.mfa_age_s,
            risk: input.risk.score,
        };
        let d = self
            .config
            .rules
            .evaluate(&facts, compliance, self.config.compliance.report_only);
        v.report_only.extend(d.report_only);
        match (&d.effect, &d.rule) {
            (RuleEffect::Allow, Some(rule)) => {
                v.reasons.push(format!("rule {rule} allows this request"))
            }
            (RuleEffect::StepUp, Some(rule)) => {
                v.reasons
                    .push(format!("rule {rule} allows this request after a fresh MFA"));
                v.conditions.push(Condition::StepUpMfa);
            }
            (RuleEffect::Deny, Some(rule)) if !d.matched => {
                v.reasons
                    .push(format!("no rule applies; the closest is {rule}"));
            }
            _ => {}
        }
        match d.effect {
            RuleEffect::StepUp => v.reasons.extend(d.failing.into_iter().map(|c| c.message)),
            RuleEffect::Deny => v.failing.extend(d.failing),
            RuleEffect::Allow => {}
        }
        v.matched_rule = d.rule;
    }

    /// The input document a Rego policy sees for `input`.
    pub fn rego_input(&self, input: &DecisionInput) -> serde_json::Value {
        let path = input
            .request
            .path
            .as_deref()
            .and_then(|p| path::normalize(p).ok());
        serde_json::to_value(self.rego_document(input, path.as_deref())).unwrap_or_default()
    }

    fn rego_document<'a>(
        &'a self,
        input: &'a DecisionInput,
        path: Option<&'a str>,
    ) -> RegoDocument<'a> {
        let c = &self.config.compliance;
        RegoDocument {
            subject: &input.subject,
            device: input.device.as_ref().map(|d| RegoDevice {
                posture: d.posture.as_ref(),
                compliance: d
                    .posture
                    .as_ref()
                    .map(|p| {
                        c.policies
                            .iter()
                            .map(|(name, policy)| {
                                let report = policy.check(p, input.context.now_s);
                                let blocking = report.blocking(policy).cloned().collect();
                                (name.clone(), RegoCompliance { report, blocking })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                report_only: c.report_only,
            }),
            request: RegoRequest {
                service: &input.request.service,
                method: input.request.method.as_deref(),
                path,
                port: input.request.port,
                sensitivity: self.sensitivity(&input.request),
            },
            context: RegoContext {
                source_address: input.context.source_address.map(|ip| ip.to_canonical()),
                now_s: input.context.now_s,
                session_age_s: input.context.session_age_s,
                mfa_age_s: input.context.mfa_age_s,
            },
            risk: &input.risk,
        }
    }

    fn rego(&self, rego: &RegoPolicy, input: &DecisionInput, path: Option<&str>, v: &mut Verdict) {
        let doc = self.rego_document(input, path);
        let decided = rego
            .set
            .input_from(&doc)
            .and_then(|i| rego.set.decide(&rego.query, &i));
        match decided {
            Ok(d) => apply_rego(d, v),
            Err(e) => v.failing.push(Check::new(
                e.code(),
                format!("the Rego policy could not decide: {e}"),
            )),
        }
    }

    /// The request's sensitivity, or else the policy's `[sensitivity]`.
    fn sensitivity(&self, r: &Request) -> Option<Sensitivity> {
        r.sensitivity
            .or_else(|| self.config.sensitivity.get(&r.service).copied())
    }

    fn risk_bands(&self, input: &DecisionInput, v: &mut Verdict) {
        let b = &self.config.risk.bands;
        let risk = input.risk.score;
        let sensitivity = self.sensitivity(&input.request);
        if risk >= b.restricted && risk < b.deny && sensitivity != Some(Sensitivity::Low) {
            v.failing.push(Check::new(
                "sensitivity",
                format!(
                    "risk {risk} allows only low-sensitivity services, and {} is {}",
                    input.request.service,
                    match sensitivity {
                        Some(Sensitivity::Medium) => "medium",
                        Some(Sensitivity::High) => "high",
                        _ => "unclassified",
                    }
                ),
            ));
        }
        let window = self.config.risk.step_up_mfa_max_age_seconds;
        if risk >= b.step_up && input.context.mfa_age_s.is_none_or(|age| age > window) {
            v.conditions.push(Condition::StepUpMfa);
            v.reasons.push(format!(
                "risk {risk} needs an MFA within {window} s ({})",
                match input.context.mfa_age_s {
                    Some(age) => format!("the last was {age} s ago"),
                    None => "there was none".to_owned(),
                }
            ));
        }
        if risk >= b.reverify {
            v.conditions.push(Condition::DeviceReverification);
            v.conditions.push(Condition::DetailedAudit);
        }
        if risk >= b.restricted {
            v.conditions.push(Condition::SessionRecording);
        }
    }
}

fn apply_rego(d: RegoDecision, v: &mut Verdict) {
    let mut prerequisite = false;
    for c in &d.conditions {
        match Condition::parse(c) {
            Some(cond) => {
                prerequisite |= cond.is_prerequisite();
                v.conditions.push(cond);
            }
            // A condition nobody knows how to meet cannot be met.
            None => v.failing.push(Check::new(
                "rego_condition",
                format!("the Rego policy asks for condition {c:?}, which Umbra does not know"),
            )),
        }
    }
    if d.allow || prerequisite {
        v.reasons.extend(d.reasons);
    } else if d.reasons.is_empty() {
        v.failing
            .push(Check::new("rego", "the Rego policy denies this request"));
    } else {
        v.failing
            .extend(d.reasons.into_iter().map(|r| Check::new("rego", r)));
    }
}

impl Verdict {
    fn finish(mut self, input: &DecisionInput) -> Decision {
        self.conditions.sort_unstable();
        self.conditions.dedup();
        let outcome = if !self.failing.is_empty() {
            Outcome::Deny
        } else if self.conditions.iter().any(|c| c.is_prerequisite()) {
            Outcome::Conditional
        } else {
            Outcome::Allow
        };
        if outcome == Outcome::Deny {
            // Nothing helps a denied request; obligations would only confuse.
            self.conditions.clear();
            let mut reasons: Vec<String> = self.failing.iter().map(|c| c.message.clone()).collect();
            reasons.extend(self.reasons);
            self.reasons = reasons;
        }
        Decision {
            outcome,
            conditions: self.conditions,
            matched_rule: self.matched_rule,
            failing_checks: self.failing,
            report_only: self.report_only,
            risk: input.risk.clone(),
            reasons: self.reasons,
        }
    }
}

#[cfg(test)]
mod tests;
