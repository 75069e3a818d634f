//! Policy and risk decisions, without I/O.
//!
//! Every access decision in Umbra comes from this crate: default deny,
//! explicit policy, device posture and a risk score, each decision with its
//! reasons. Callers (the controller at login and on re-checks, the gateway on
//! every request and stream, the OPA-compatible Data API) hand in values and
//! a time and get a decision back; nothing here reads a file, a socket or the
//! clock.
//!
//! Layout:
//! - [`risk`]: the 0–100 scale, its bands and the login score.
//! - [`access`]: the admin API's grants, read as native rules.
//! - [`path`]: request path normalization and whole-segment prefixes.
//! - [`rego`]: Rego (OPA-compatible) on regorus: policy sets compiled once,
//!   evaluated many times, switched atomically.
//! - [`rules`]: native access rules from TOML, first match wins.
//! - [`ruletest`]: `*_test.toml` case files for native rules, parsed and
//!   run (what `umbra policy test` runs beside the Rego tests).
//! - [`compliance`]: device compliance policies (`high_security`,
//!   `standard`), each failing check named.
//! - [`decision`]: the one decision interface: [`decision::DecisionInput`]
//!   in (the Rego `input` document), [`decision::Decision`] out.

pub mod access;
pub mod compliance;
pub mod decision;
pub mod path;
pub mod rego;
pub mod risk;
pub mod rules;
pub mod ruletest;

// The tests that read like integration tests (fixtures, OPA's answers) run
// in the unit-test binary; `umbra_policy::` names this crate there.
#[cfg(test)]
extern crate self as umbra_policy;
#[cfg(test)]
#[path = "../tests/opa_compat.rs"]
mod opa_compat;
