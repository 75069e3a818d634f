//! Tests for native rules: `*_test.toml` case files, parsed and run
//! without I/O.
//!
//! Rules are edited by hand, and a reordered priority or a widened path can
//! quietly let someone in. A case file pins the decisions that matter — who
//! gets in, who does not, that `/api/../admin` is not under `/api` — and
//! `umbra policy test` runs it beside the Rego tests, so CI catches the
//! change before the controller loads it.
//!
//! ```toml
//! policy = "rules.toml"            # the native policy, relative to this file
//!
//! [defaults]                       # sections every case starts from
//! context = { now_s = 1767603600, mfa_age_s = 60 }
//!
//! [[case]]
//! name = "eng reads the wiki"
//! input.subject = { user = "bob", groups = ["eng"] }
//! input.request = { service = "wiki", method = "GET", path = "/api/pages/1" }
//! outcome = "allow"                # allow | conditional | deny
//! rule = "wiki"                    # optional: the decision's matched_rule
//! conditions = []                  # optional: exactly these conditions
//! failing_checks = []              # optional: each among the failing checks
//! ```
//!
//! A case's `input` is a [`DecisionInput`] (`docs/policy.md`) with the same
//! serde types, so unknown keys are refused with their line and column.
//! Each of its sections (`subject`, `device`, `request`, `context`, `risk`)
//! replaces the same section of `[defaults]` whole: no deep merge, so what a
//! case says is all there is to read. The CLI reads the files; this module
//! takes their text and a [`DecisionPoint`].

use std::collections::HashSet;

use serde::Deserialize;
use toml::Spanned;

use crate::decision::{
    Condition, Context, DecisionInput, DecisionPoint, Device, Outcome, Request, Risk, Subject,
};
use crate::rules::{ConfigError, MAX_POLICY_FILE_BYTES, line_col};

mod run;
pub use run::{CaseResult, Mismatch};

/// Largest test file accepted.
pub const MAX_TEST_FILE_BYTES: usize = MAX_POLICY_FILE_BYTES;
/// Most cases in one file.
pub const MAX_CASES: usize = 10_000;

/// A parsed `*_test.toml` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestFile {
    /// The native policy file under test, as written: a path relative to
    /// the test file's directory (`../` is fine; the CLI resolves it).
    pub policy: String,
    /// Line and column of `policy`, for errors about that file.
    pub policy_at: (usize, usize),
    pub cases: Vec<Case>,
}

/// One case: an input and what its decision must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    /// 1-based line of the case in its file.
    pub line: usize,
    pub input: DecisionInput,
    pub expect: Expect,
}

/// What a case expects; `None` and empty lists are not checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub outcome: Outcome,
    /// The decision's `matched_rule` (on a deny, the closest rule).
    pub rule: Option<String>,
    /// Exactly these conditions, in any order.
    pub conditions: Option<Vec<Condition>>,
    /// Check names each of which must be among the failing checks.
    pub failing_checks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    policy: Spanned<String>,
    #[serde(default)]
    defaults: RawInput,
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

/// A [`DecisionInput`] by sections, each optional until the case's and the
/// defaults' are put together.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    subject: Option<Subject>,
    device: Option<Device>,
    request: Option<Request>,
    context: Option<Context>,
    risk: Option<Risk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    input: RawInput,
    outcome: Outcome,
    rule: Option<String>,
    conditions: Option<Vec<Condition>>,
    #[serde(default)]
    failing_checks: Vec<String>,
}

impl TestFile {
    /// Parses a test file; errors carry the line and column.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_TEST_FILE_BYTES {
            return Err(at(
                (0, 0),
                format!(
                    "test file of {} bytes is over the limit of {MAX_TEST_FILE_BYTES}",
                    text.len()
                ),
            ));
        }
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let place = e.span().map_or((0, 0), |s| line_col(text, s.start));
            at(place, e.message().trim().to_owned())
        })?;
        let policy_at = line_col(text, raw.policy.span().start);
        let policy = raw.policy.into_inner();
        if policy.trim().is_empty() {
            return Err(at(policy_at, "policy must name the policy file".into()));
        }
        if raw.case.is_empty() {
            return Err(at(
                (1, 1),
                "no [[case]] in this test file; a test file needs at least one".into(),
            ));
        }
        if raw.case.len() > MAX_CASES {
            return Err(at(
                (0, 0),
                format!("{} cases is over the limit of {MAX_CASES}", raw.case.len()),
            ));
        }
        let mut names = HashSet::new();
        let mut cases = Vec::with_capacity(raw.case.len());
        for spanned in raw.case {
            let place = line_col(text, spanned.span().start);
            let c = spanned.into_inner();
            if c.name.is_empty() || c.name.chars().any(char::is_control) {
                return Err(at(
                    place,
                    format!("case name {:?} must be printable and not empty", c.name),
                ));
            }
            if !names.insert(c.name.clone()) {
                return Err(at(
                    place,
                    format!("case name {:?} is used twice; names must be unique", c.name),
                ));
            }
            let input = c
                .input
                .complete(&raw.defaults)
                .map_err(|section| {
                    at(
                        place,
                        format!(
                            "case {:?}: input has no {section} (give input.{section} or [defaults] {section})",
                            c.name
                        ),
                    )
                })?;
            let conditions = c.conditions.map(|mut list| {
                list.sort_unstable();
                list.dedup();
                list
            });
            cases.push(Case {
                name: c.name,
                line: place.0,
                input,
                expect: Expect {
                    outcome: c.outcome,
                    rule: c.rule,
                    conditions,
                    failing_checks: c.failing_checks,
                },
            });
        }
        Ok(TestFile {
            policy,
            policy_at,
            cases,
        })
    }

    /// Runs every case against `point` (the policy named by `policy`).
    pub fn run(&self, point: &DecisionPoint) -> Vec<CaseResult> {
        self.cases.iter().map(|c| c.run(point)).collect()
    }
}

impl RawInput {
    /// The case's sections, else the defaults'; `Err` names a required
    /// section neither gives.
    fn complete(self, defaults: &RawInput) -> Result<DecisionInput, &'static str> {
        let d = defaults;
        Ok(DecisionInput {
            subject: self
                .subject
                .or_else(|| d.subject.clone())
                .ok_or("subject")?,
            device: self.device.or_else(|| d.device.clone()),
            request: self
                .request
                .or_else(|| d.request.clone())
                .ok_or("request")?,
            context: self
                .context
                .or_else(|| d.context.clone())
                .ok_or("context")?,
            risk: self.risk.or_else(|| d.risk.clone()).unwrap_or_default(),
        })
    }
}

fn at((line, column): (usize, usize), message: String) -> ConfigError {
    ConfigError {
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests;
