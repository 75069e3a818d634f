//! The one interface the gateway programs against. Every backend — the
//! kernel (nftables), an in-process table (userspace), an external command
//! (cloud security groups) and the test fake — implements it, so the SPA
//! listener does not care where a pinhole lives.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{BlockedSource, Error, OpenPinhole, Pinhole, PinholeKey, Protected, Protocol};

/// Dynamic pinholes in front of a set of protected ports.
///
/// Lifecycle: [`install`](Self::install) once at start (it is idempotent
/// and keeps pinholes that survived a restart), then any number of opens,
/// closes and blocks, then [`shutdown`](Self::shutdown). Expiry is the
/// backend's job: callers never have to close a pinhole whose ttl ran out.
///
/// Connections established through a pinhole survive its expiry and its
/// closing; only new connections need an open pinhole.
#[async_trait]
pub trait Pinholes: Send + Sync + 'static {
    /// A short name for logs and errors (`nftables`, `userspace`, …).
    fn backend(&self) -> &'static str;

    /// Sets up filtering for `protected` ports. Safe to call again (e.g.
    /// after a config reload): the set of protected ports is replaced,
    /// open pinholes and blocks are kept.
    async fn install(&self, protected: &[Protected]) -> Result<(), Error>;

    /// Opens every pinhole in `batch`. Batching is cheaper than one call
    /// each, and concurrent callers are coalesced by the nftables backend
    /// anyway. All-or-nothing for invalid requests: nothing is opened if
    /// any request is invalid.
    async fn open(&self, batch: &[Pinhole]) -> Result<(), Error>;

    /// Closes one pinhole now. Closing one that is not open is not an error.
    async fn close(&self, key: PinholeKey) -> Result<(), Error>;

    /// The pinholes open now.
    async fn list(&self) -> Result<Vec<OpenPinhole>, Error>;

    /// How many pinholes are open now.
    async fn count(&self) -> Result<usize, Error> {
        Ok(self.list().await?.len())
    }

    /// Drops everything from `source` for `duration`, established
    /// connections included (auto-remediation). Blocking again extends to
    /// the later deadline.
    async fn block(&self, source: IpAddr, duration: Duration) -> Result<(), Error>;

    /// Lifts a block. Unblocking a source that is not blocked is not an error.
    async fn unblock(&self, source: IpAddr) -> Result<(), Error>;

    /// The sources blocked now.
    async fn blocked(&self) -> Result<Vec<BlockedSource>, Error>;

    /// Accept-time check for a new connection the gateway itself accepted.
    ///
    /// Backends that filter outside the process (nftables, a cloud
    /// security group) return `true`: the packet would not have arrived
    /// otherwise. The userspace backend answers from its table. Cheap and
    /// synchronous so it can run on every accept.
    fn allows(&self, source: IpAddr, proto: Protocol, port: u16, now: Instant) -> bool {
        let _ = (source, proto, port, now);
        true
    }

    /// Removes everything this firewall installed (nftables: the whole
    /// table; command: runs the close command for every open pinhole).
    /// Later calls fail with [`Error::ShutDown`].
    async fn shutdown(&self) -> Result<(), Error>;
}
