//! The Umbra controller: identities, the CA, sessions, the audit trail and
//! the HTTPS API (`DESIGN.md`, "controller": SDP Controller / NIST PE+PA).
//!
//! Start it with [`Controller::start`] and serve it with [`server::run`] on a
//! listener you bound; stop it by cancelling the token you passed.
//!
//! Layout:
//! - [`config`]: TOML config, two-phase parse and validation;
//!   [`browser_config`]: its `[browser]` section.
//! - [`state`]: the shared [`Controller`] and its start-up (KEK check, CA,
//!   signing key, bootstrap credential).
//! - [`server`]: the tokio-rustls accept loops and graceful shutdown.
//! - [`knock`]: a dark controller's SPA listener; [`spa`]: SPA key material.
//! - `api`: routes and handlers (`public`, `enroll`, `auth`, `admin`, `guard`,
//!   and the browser's `login` page and `verify`).
//! - [`audit`]: the audit log's checkpoint key, periodic signed
//!   checkpoints, and the API views of records and checkpoints.
//! - [`policies`]: the Rego set served on the OPA Data API, rebuilt when
//!   the store's policy revision moves.
//! - [`tokens`]: ES256 session tokens and the JWKS.
//! - [`reevaluate`]: continuous verification of every live session.
//! - [`detect`]: threat detection and automatic response; [`webhook`]:
//!   alert delivery.
//! - [`metrics`]: the Prometheus metrics of `GET /metrics`.
//! - [`password`], [`totp`], [`ratelimit`], [`secrets`]: credential checks.
//! - [`clock`]: injectable time. [`context`], [`error`]: request plumbing.

mod access;
mod api;
pub mod audit;
pub mod browser_config;
pub mod clock;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod detect;
pub mod error;
pub mod events;
pub mod knock;
pub mod metrics;
pub mod password;
pub mod policies;
pub mod ratelimit;
pub mod recovery;
pub mod reevaluate;
mod risk;
pub mod secrets;
pub mod server;
pub mod spa;
pub mod state;
pub mod tokens;
pub mod totp;
pub mod webhook;

pub use state::{Controller, StartError};
