//! The Umbra agent (CSA SDP "Initiating Host"): enrolls the device, logs
//! the user in over mTLS, and forwards local HTTP clients to the gateway
//! with the session token.
//!
//! Layout:
//! - [`dir`]: the agent's state directory (key, certificate, session).
//! - [`device`]: key pair, CSR and the posture report.
//! - [`posture`]: the Linux posture collectors and when to report again.
//! - [`controller`]: enrollment, login, logout and session status.
//! - [`connect`]: the local port-forward to a service behind a gateway.
//! - [`tunnel`]: the same for TCP services, one TLS tunnel per connection.

pub mod connect;
pub mod controller;
pub mod device;
pub mod dir;
pub mod knock;
pub mod posture;
pub mod tunnel;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    State(String),
    /// The controller or gateway refused; `code` is the API's error code.
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    #[error("{0}")]
    Network(String),
    #[error("tls: {0}")]
    Pki(#[from] umbra_pki::PkiError),
}
