//! Running a case: its decision compared with what it expects, and the
//! words a failing case prints.

use std::fmt;

use super::{Case, Expect};
use crate::decision::{Condition, Decision, DecisionPoint, Outcome};

impl Case {
    /// Decides the case's input and compares the decision with what the
    /// case expects.
    pub fn run(&self, point: &DecisionPoint) -> CaseResult {
        let decision = point.decide(&self.input);
        let mismatches = self.expect.compare(&decision);
        CaseResult {
            decision,
            mismatches,
        }
    }
}

impl Expect {
    fn compare(&self, d: &Decision) -> Vec<Mismatch> {
        let mut out = Vec::new();
        if d.outcome != self.outcome {
            out.push(Mismatch::Outcome {
                expected: self.outcome,
                decided: d.outcome,
            });
        }
        if let Some(rule) = &self.rule
            && d.matched_rule.as_ref() != Some(rule)
        {
            out.push(Mismatch::Rule {
                expected: rule.clone(),
                decided: d.matched_rule.clone(),
            });
        }
        if let Some(conditions) = &self.conditions
            && *conditions != d.conditions
        {
            out.push(Mismatch::Conditions {
                expected: conditions.clone(),
                decided: d.conditions.clone(),
            });
        }
        let missing: Vec<String> = self
            .failing_checks
            .iter()
            .filter(|name| !d.failing_checks.iter().any(|c| &c.name == *name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            out.push(Mismatch::FailingChecks {
                missing,
                decided: d.failing_checks.iter().map(|c| c.name.clone()).collect(),
            });
        }
        out
    }
}

/// One case's decision and how it differs from the expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    pub decision: Decision,
    /// Empty when the case passed.
    pub mismatches: Vec<Mismatch>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// What a failing case prints: each mismatch, everything the case
    /// expected, then the decision with its failing checks and reasons, one
    /// line each.
    pub fn explain(&self, expect: &Expect) -> Vec<String> {
        let d = &self.decision;
        let mut lines: Vec<String> = self.mismatches.iter().map(ToString::to_string).collect();
        lines.push(format!("expected: {expect}"));
        let mut decided = format!("decision: {}", outcome_str(d.outcome));
        if let Some(rule) = &d.matched_rule {
            decided.push_str(&format!(", rule {rule}"));
        }
        if !d.conditions.is_empty() {
            decided.push_str(&format!(", conditions {}", conditions_str(&d.conditions)));
        }
        lines.push(decided);
        for c in &d.failing_checks {
            lines.push(format!("  failing {}: {}", c.name, c.message));
        }
        // A deny's reasons begin with its failing checks' messages.
        let skip = if d.outcome == Outcome::Deny {
            d.failing_checks.len()
        } else {
            0
        };
        for r in d.reasons.iter().skip(skip) {
            lines.push(format!("  reason: {r}"));
        }
        lines
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(outcome_str(self.outcome))?;
        if let Some(rule) = &self.rule {
            write!(f, ", rule {rule}")?;
        }
        if let Some(c) = &self.conditions {
            write!(f, ", conditions {}", conditions_str(c))?;
        }
        if !self.failing_checks.is_empty() {
            write!(
                f,
                ", failing checks including [{}]",
                self.failing_checks.join(", ")
            )?;
        }
        Ok(())
    }
}

/// How a decision differs from what its case expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Outcome {
        expected: Outcome,
        decided: Outcome,
    },
    Rule {
        expected: String,
        decided: Option<String>,
    },
    Conditions {
        expected: Vec<Condition>,
        decided: Vec<Condition>,
    },
    /// Expected checks that did not fail, and the ones that did.
    FailingChecks {
        missing: Vec<String>,
        decided: Vec<String>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Outcome { expected, decided } => write!(
                f,
                "expected outcome {}, decided {}",
                outcome_str(*expected),
                outcome_str(*decided)
            ),
            Mismatch::Rule { expected, decided } => write!(
                f,
                "expected rule {expected}, decided {}",
                decided.as_deref().unwrap_or("(no rule)")
            ),
            Mismatch::Conditions { expected, decided } => write!(
                f,
                "expected conditions {}, decided {}",
                conditions_str(expected),
                conditions_str(decided)
            ),
            Mismatch::FailingChecks { missing, decided } => write!(
                f,
                "expected failing checks [{}] among the failing, which are [{}]",
                missing.join(", "),
                decided.join(", ")
            ),
        }
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Conditional => "conditional",
        Outcome::Deny => "deny",
    }
}

fn conditions_str(list: &[Condition]) -> String {
    let names: Vec<&str> = list.iter().map(|c| c.as_str()).collect();
    format!("[{}]", names.join(", "))
}
