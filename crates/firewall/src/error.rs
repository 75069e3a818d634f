//! One error enum for every backend. Messages carry the context an
//! operator needs (the program, its exit status and its stderr); callers
//! that talk to peers must show them something generic instead.

use std::time::Duration;

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (port 0, zero ttl, …); retrying won't help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The program could not be started (missing binary, no permission).
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed; `stderr` is what it printed (nft's
    /// message names the offending command).
    #[error("`{program}` failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    /// The program did not finish in time and was killed.
    #[error("`{program}` did not finish within {after:?}")]
    Timeout { program: String, after: Duration },
    /// nft printed something this crate cannot read.
    #[error("unexpected output from nft: {0}")]
    Output(String),
    /// The backend cannot do this (e.g. blocking without a block command).
    #[error("not supported by the {backend} backend: {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
    /// `shutdown` already ran; the firewall accepts no more changes.
    #[error("the firewall has been shut down")]
    ShutDown,
}

impl Error {
    /// Whether trying the same call again may succeed (a transient failure
    /// of the program rather than a bad request or a closed firewall).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::Timeout { .. })
    }
}
