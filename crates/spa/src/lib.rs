//! Single Packet Authorization (SPA) for Umbra: parsing, verification and
//! encoding of knock packets, with no I/O.
//!
//! A gateway (or a dark controller) answers nothing until a valid SPA packet
//! arrives; this crate decides whether a packet is valid. Callers pass bytes,
//! the packet's source address, the current time and a key lookup, and get a
//! typed decision back: a [`native::Verified`] / [`fwknop::Grant`] to act on,
//! or a [`Refusal`] that says precisely why (for operators and the audit log
//! only: peers get no answer at all).
//!
//! Two formats:
//! - **native** Umbra SPA: per-device, per-gateway ChaCha20-Poly1305 keys
//!   derived with HKDF, a small authenticated cleartext header and an
//!   encrypted body. See `docs/spa.md` for the layout and threat model.
//! - **fwknop-compatible**: the wire format of fwknop 2.6.10 (libfko, FKO
//!   protocol 3.0.0), so stock `fwknop` clients can knock an Umbra gateway.
//!
//! Cheap checks come first everywhere (length, magic/alphabet, rate limit,
//! key lookup, replay lookup), and nothing is allocated before the MAC/AEAD
//! check succeeds.
//!
//! Layout:
//! - [`refusal`]: the [`Refusal`] enum, every reason a packet is dropped.
//! - [`keys`]: device secrets, per-gateway key derivation ([`derive_gateway_key`]).
//! - [`window`]: unix-time helpers and the timestamp window check.
//! - [`replay`]: a replay cache bounded in capacity and time.
//! - [`ratelimit`]: per-source token buckets in a bounded table.
//! - [`native`]: Umbra's own packet format and its [`native::Verifier`].
//! - [`fwknop`]: fwknop-compatible packets, `access.conf` stanzas and the
//!   [`fwknop::FwknopVerifier`].

pub mod fwknop;
pub mod keys;
pub mod native;
pub mod ratelimit;
pub mod refusal;
pub mod replay;
pub mod window;

pub use keys::{DeviceSecret, GatewayKey, KeyError, derive_gateway_key};
pub use ratelimit::{RateLimitConfig, RateLimiter};
pub use refusal::Refusal;
pub use replay::ReplayCache;

// The tests that read like integration tests (fixtures, real processes)
// run in the unit-test binary; `umbra_spa::` names this crate there.
#[cfg(test)]
extern crate self as umbra_spa;
#[cfg(test)]
#[path = "../tests/fwknop_vectors.rs"]
mod fwknop_vectors;
#[cfg(test)]
#[path = "../tests/libfko_interop.rs"]
mod libfko_interop;
