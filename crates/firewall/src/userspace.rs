//! The userspace backend: pinholes kept in process memory and consulted by
//! the gateway's own listeners when they accept a connection.
//!
//! It needs no privilege, so `umbra dev` and unprivileged test runs use it.
//! **It cannot hide a port from a scan**: the kernel completes the TCP
//! handshake before the gateway sees the connection, so a port scanner
//! still finds the port open; the gateway only closes unauthorized
//! connections right after accept. Use the nftables backend where the
//! service must be dark.
//!
//! Time is `tokio::time::Instant`, so tests pause and advance it; the
//! accept-time check takes `now` explicitly.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::table::{Table, key};
use crate::types::{validate_protected, validate_ttl};
use crate::{
    BlockedSource, Error, OpenPinhole, Pinhole, PinholeKey, Pinholes, Protected, Protocol,
};

/// In-memory pinholes with expiry. Cheap to clone; clones share the table.
#[derive(Clone, Debug, Default)]
pub struct UserspacePinholes {
    state: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    table: Table,
    shut_down: bool,
}

impl UserspacePinholes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `source` is blocked at `now`; the SPA listener can drop a
    /// blocked source's knocks before any crypto.
    pub fn is_blocked(&self, source: IpAddr, now: Instant) -> bool {
        self.read().table.is_blocked(source.to_canonical(), now)
    }

    /// Drops expired entries now (they already deny; this frees memory).
    pub fn sweep(&self, now: Instant) {
        self.write().table.sweep(now);
    }

    // A panic while holding the lock leaves the table consistent (every
    // mutation is a single map operation), so a poisoned lock is usable.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> Result<RwLockWriteGuard<'_, State>, Error> {
        let state = self.write();
        if state.shut_down {
            Err(Error::ShutDown)
        } else {
            Ok(state)
        }
    }
}

#[async_trait]
impl Pinholes for UserspacePinholes {
    fn backend(&self) -> &'static str {
        "userspace"
    }

    async fn install(&self, protected: &[Protected]) -> Result<(), Error> {
        validate_protected(protected)?;
        self.live()?.table.set_protected(protected);
        Ok(())
    }

    async fn open(&self, batch: &[Pinhole]) -> Result<(), Error> {
        let batch = batch
            .iter()
            .map(Pinhole::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let now = Instant::now();
        let mut state = self.live()?;
        for p in batch {
            state.table.open(p.key, p.ttl, now);
        }
        Ok(())
    }

    async fn close(&self, key: PinholeKey) -> Result<(), Error> {
        let key = key.validate()?;
        self.live()?.table.close(&key, Instant::now());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<OpenPinhole>, Error> {
        Ok(self.read().table.list(Instant::now()))
    }

    async fn count(&self) -> Result<usize, Error> {
        Ok(self.read().table.count(Instant::now()))
    }

    async fn block(&self, source: IpAddr, duration: Duration) -> Result<(), Error> {
        let duration = validate_ttl(duration).map_err(Error::Invalid)?;
        let _ = self
            .live()?
            .table
            .block(source.to_canonical(), duration, Instant::now());
        Ok(())
    }

    async fn unblock(&self, source: IpAddr) -> Result<(), Error> {
        self.live()?
            .table
            .unblock(source.to_canonical(), Instant::now());
        Ok(())
    }

    async fn blocked(&self) -> Result<Vec<BlockedSource>, Error> {
        Ok(self.read().table.blocked(Instant::now()))
    }

    fn allows(&self, source: IpAddr, proto: Protocol, port: u16, now: Instant) -> bool {
        let state = self.read();
        // Fail closed once shut down: nothing vouches for new connections.
        !state.shut_down && state.table.allows(&key(source, proto, port), now)
    }

    async fn shutdown(&self) -> Result<(), Error> {
        let mut state = self.write();
        state.shut_down = true;
        state.table.drain();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    const SSH: Protected = Protected {
        proto: Protocol::Tcp,
        port: 22,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn pinhole_opens_for_its_source_only_and_expires() {
        let fw = UserspacePinholes::new();
        fw.install(&[SSH, Protected::new(Protocol::Udp, 22)])
            .await
            .unwrap();
        let a = ip("10.0.0.1");
        assert!(!fw.allows(a, Protocol::Tcp, 22, Instant::now()));
        // Ports nobody protects are not the firewall's business.
        assert!(fw.allows(a, Protocol::Tcp, 80, Instant::now()));
        fw.open(&[Pinhole::new(a, Protocol::Tcp, 22, Duration::from_secs(5))])
            .await
            .unwrap();
        assert!(fw.allows(a, Protocol::Tcp, 22, Instant::now()));
        assert!(!fw.allows(ip("10.0.0.2"), Protocol::Tcp, 22, Instant::now()));
        assert!(!fw.allows(a, Protocol::Udp, 22, Instant::now()));
        assert_eq!(fw.count().await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!fw.allows(a, Protocol::Tcp, 22, Instant::now()));
        assert_eq!(fw.count().await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn mapped_ipv6_sources_match_ipv4_pinholes() {
        let fw = UserspacePinholes::new();
        fw.install(&[SSH]).await.unwrap();
        fw.open(&[Pinhole::new(
            ip("::ffff:10.0.0.1"),
            Protocol::Tcp,
            22,
            Duration::from_secs(5),
        )])
        .await
        .unwrap();
        assert!(fw.allows(ip("10.0.0.1"), Protocol::Tcp, 22, Instant::now()));
        assert_eq!(fw.list().await.unwrap()[0].key.source, ip("10.0.0.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_batches_open_nothing() {
        let fw = UserspacePinholes::new();
        let good = Pinhole::new(ip("10.0.0.1"), Protocol::Tcp, 22, Duration::from_secs(5));
        let zero_port = Pinhole::new(ip("10.0.0.1"), Protocol::Tcp, 0, Duration::from_secs(5));
        let zero_ttl = Pinhole::new(ip("10.0.0.1"), Protocol::Tcp, 22, Duration::ZERO);
        for bad in [zero_port, zero_ttl] {
            assert!(matches!(
                fw.open(&[good, bad]).await,
                Err(Error::Invalid(_))
            ));
        }
        assert_eq!(fw.count().await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn close_block_and_shutdown() {
        let fw = UserspacePinholes::new();
        fw.install(&[SSH]).await.unwrap();
        let a = ip("fd00::1");
        fw.open(&[Pinhole::new(a, Protocol::Tcp, 22, Duration::from_secs(60))])
            .await
            .unwrap();
        fw.close(PinholeKey::new(a, Protocol::Tcp, 22))
            .await
            .unwrap();
        assert!(!fw.allows(a, Protocol::Tcp, 22, Instant::now()));

        fw.block(a, Duration::from_secs(30)).await.unwrap();
        assert!(fw.is_blocked(a, Instant::now()));
        assert!(!fw.allows(a, Protocol::Tcp, 443, Instant::now()));
        fw.unblock(a).await.unwrap();
        assert!(fw.blocked().await.unwrap().is_empty());

        fw.shutdown().await.unwrap();
        assert!(matches!(fw.open(&[]).await, Err(Error::ShutDown)));
        assert!(!fw.allows(a, Protocol::Tcp, 443, Instant::now()));
    }
}
