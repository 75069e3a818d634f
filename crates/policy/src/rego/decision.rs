//! The `data.umbra.authz.decision` contract: a policy answers
//! `{"allow": bool, "conditions": [string], "reasons": [string]}`.
//!
//! `allow` is the only required key; `conditions` and `reasons` default to
//! empty. `allow: false` with a prerequisite condition (`step_up_mfa`) means
//! "allowed once the condition is met"; `allow: true` with obligations
//! (`session_recording`, …) means "allowed, and do these". Anything else —
//! undefined, not an object, `allow` not a boolean, conditions that are not
//! strings — is an error, on which the caller denies.

use serde::Deserialize;

use super::{EvalError, Input, PolicySet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RegoDecision {
    pub allow: bool,
    #[serde(default)]
    pub conditions: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl PolicySet {
    /// Evaluates an Umbra decision document (normally
    /// [`crate::decision::DECISION_QUERY`]).
    pub fn decide(&self, query: &str, input: &Input) -> Result<RegoDecision, EvalError> {
        let results = self.eval_query(query, Some(input))?;
        let not_a_decision = |message: String| EvalError::NotADecision {
            query: query.to_owned(),
            message,
        };
        if results.is_undefined() {
            return Err(not_a_decision("it is undefined".into()));
        }
        let value = results
            .single_value()
            .ok_or_else(|| not_a_decision("it has more than one value".into()))?;
        // Only an object: serde would also read a struct from an array.
        if !value.is_object() {
            return Err(not_a_decision(format!("it is {value}, not an object")));
        }
        RegoDecision::deserialize(value).map_err(|e| not_a_decision(e.to_string()))
    }
}
