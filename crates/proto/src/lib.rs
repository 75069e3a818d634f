//! Wire types shared by the controller, the CLI and (later) the agent and gateway.
//!
//! No I/O lives here: only the JSON shapes of `/api/v1/…` and the stable
//! machine-readable error codes. Keeping them in one crate means the server and
//! its clients cannot drift apart silently.
//!
//! Layout:
//! - [`error`]: the error envelope and every error code the API can return.
//! - [`api`]: request and response bodies, grouped by resource.
//! - [`posture`]: the device posture report (seed 000's `DeviceProfile` fields).
//! - [`token`]: the claims of session tokens and of identity assertions.
//! - [`control`]: gateway enrollment, registration and the control channel.

pub mod api;
pub mod control;
pub mod error;
pub mod posture;
pub mod token;

pub use error::{ApiError, ErrorBody, ErrorCode};
pub use posture::PostureReport;
