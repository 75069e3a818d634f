//! Policy and risk decisions, without I/O.
//!
//! This first cut holds the risk scale that every part of Umbra shares
//! (`DESIGN.md`, "Risk scale") and the login risk score computed from the
//! signals the controller has today: device posture and recent failures. The
//! Rego engine and the full risk engine (location, time, behaviour) arrive
//! with the policy issue and plug into the same types.
//!
//! Layout:
//! - [`risk`]: the 0–100 scale, its bands and the login score.
//! - [`access`]: the access decision point the gateway and the controller
//!   ask, today answered from per-service allow lists.

pub mod access;
pub mod risk;
