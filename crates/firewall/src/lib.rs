//! Dynamic pinholes for the Umbra gateway: after a valid SPA knock the
//! gateway opens a pinhole — new connections from one source address to
//! one protected port, for a few seconds — and everything else stays dark.
//!
//! One async trait, [`Pinholes`], with interchangeable backends:
//! - [`NftPinholes`]: Linux nftables; the kernel filters and expires
//!   pinholes; concurrent opens are batched into one `nft` call.
//! - [`UserspacePinholes`]: in-process table consulted at accept time
//!   ([`Pinholes::allows`]); unprivileged, but cannot hide a port.
//! - [`CommandPinholes`]: external open/close commands (cloud security
//!   groups), closed by a timer when the ttl ends.
//! - [`RecordingPinholes`]: the test fake, recording every call.
//!
//! Choose one from config with [`FirewallConfig`] →
//! [`FirewallSettings::build`]. Established connections always survive
//! their pinhole's expiry; a source block list (for auto-remediation)
//! drops everything from a source, live connections included.
//!
//! Layout:
//! - [`types`]: [`Protocol`], [`Pinhole`], [`PinholeKey`], listing types.
//! - [`pinholes`]: the [`Pinholes`] trait.
//! - [`config`]: the `[firewall]` TOML section and validation.
//! - [`nft`]: the nftables backend (ruleset, batcher, listing, runner).
//! - [`userspace`], [`command`], [`fake`]: the other backends.
//! - `table`: the in-memory expiry table the last three share.
//! - `exec`: running argv programs with a timeout, stderr kept.
//! - [`knock_socket`]: the UDP socket knocks arrive on.
//! - [`error`]: the [`Error`] enum.

pub mod command;
pub mod config;
pub mod error;
mod exec;
pub mod fake;
mod knock;
pub mod nft;
pub mod pinholes;
mod table;
pub mod types;
pub mod userspace;

pub use command::{CommandPinholes, CommandSettings};
pub use config::{BackendKind, ConfigError, FirewallConfig, FirewallSettings};
pub use error::Error;
pub use fake::{Call, RecordingPinholes};
pub use knock::knock_socket;
pub use nft::{NftPinholes, NftSettings};
pub use pinholes::Pinholes;
pub use types::{BlockedSource, MAX_TTL, OpenPinhole, Pinhole, PinholeKey, Protected, Protocol};
pub use userspace::UserspacePinholes;

// The tests that read like integration tests (fixtures, real processes)
// run in the unit-test binary; `umbra_firewall::` names this crate there.
#[cfg(test)]
extern crate self as umbra_firewall;
#[cfg(test)]
#[path = "../tests/nftables.rs"]
mod nftables_netns;
