//! The nftables backend (Linux): pinholes as kernel set elements with a
//! timeout, so the kernel itself expires them and hides protected ports
//! from scans (new connections are dropped, not refused).
//!
//! - [`ruleset`]: the table, sets and chain Umbra owns (the ruleset is
//!   pasted in its docs).
//! - [`batcher`]: coalesces concurrent changes into one `nft` call.
//! - [`listing`]: reads the kernel's view back for `list` and restarts.
//! - [`runner`]: runs the configured nft command.
//!
//! Restart: `install` on an existing table re-asserts the rules and keeps
//! the set elements, so pinholes opened before a restart stay open until
//! their kernel timeout. Dropping an `NftPinholes` without `shutdown`
//! leaves the table in place on purpose (a crash must not open the
//! protected ports); `shutdown` deletes the table.

mod batcher;
mod listing;
pub mod ruleset;
mod runner;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::batcher::{Batcher, Change, Entry, Hints, Msg};
use self::runner::Runner;
use crate::types::{validate_protected, validate_ttl};
use crate::{BlockedSource, Error, OpenPinhole, Pinhole, PinholeKey, Pinholes, Protected};

/// Queued requests before `open` waits (backpressure, not a limit on
/// pinholes: each request may carry a whole batch).
const QUEUE: usize = 4096;

/// Validated settings of the nftables backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftSettings {
    /// The nft program and any prefix, e.g. `["ip", "netns", "exec", "NS", "nft"]`.
    pub command: Vec<String>,
    /// Name of Umbra's table in the `inet` family.
    pub table: String,
    /// An nft call still running after this is killed and fails.
    pub timeout: Duration,
}

impl Default for NftSettings {
    fn default() -> Self {
        Self {
            command: vec!["nft".into()],
            table: "umbra".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Whether `name` is a table name nft accepts without quoting.
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Pinholes in the kernel via nftables.
#[derive(Debug)]
pub struct NftPinholes {
    runner: Arc<Runner>,
    tx: mpsc::Sender<Msg>,
    hints: Hints,
    shut_down: AtomicBool,
}

impl NftPinholes {
    /// Starts the batching task, so it must be called from inside a Tokio
    /// runtime (an error otherwise). Nothing touches the kernel until
    /// [`Pinholes::install`].
    pub fn new(settings: NftSettings) -> Result<Self, Error> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Error::Invalid(
                "NftPinholes::new needs a Tokio runtime".into(),
            ));
        };
        if !valid_table_name(&settings.table) {
            return Err(Error::Invalid(format!(
                "nftables table name {:?}",
                settings.table
            )));
        }
        if settings.command.first().is_none_or(String::is_empty) {
            return Err(Error::Invalid("empty nft command".into()));
        }
        let runner = Arc::new(Runner {
            command: settings.command,
            table: settings.table,
            timeout: settings.timeout,
        });
        let hints = Hints::default();
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(
            Batcher {
                runner: Arc::clone(&runner),
                hints: Arc::clone(&hints),
            }
            .run(rx),
        );
        Ok(Self {
            runner,
            tx,
            hints,
            shut_down: AtomicBool::new(false),
        })
    }

    pub fn table(&self) -> &str {
        &self.runner.table
    }

    fn check_live(&self) -> Result<(), Error> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    async fn send(&self, changes: Vec<Change>) -> Result<(), Error> {
        self.check_live()?;
        if changes.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        // The batcher is gone only after shutdown.
        self.tx
            .send(Msg::Apply(changes, reply))
            .await
            .map_err(|_| Error::ShutDown)?;
        answer.await.map_err(|_| Error::ShutDown)?
    }
}

#[async_trait]
impl Pinholes for NftPinholes {
    fn backend(&self) -> &'static str {
        "nftables"
    }

    async fn install(&self, protected: &[Protected]) -> Result<(), Error> {
        self.check_live()?;
        validate_protected(protected)?;
        let existed = self.runner.table_exists().await?;
        self.runner
            .apply(&ruleset::install(&self.runner.table, protected))
            .await?;
        if existed {
            // Seed what survived the restart so re-opens refresh correctly.
            let listing = self.runner.list().await?;
            let now = Instant::now();
            let mut hints = self
                .hints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for p in &listing.pinholes {
                hints.insert(Entry::Pinhole(p.key), now + p.expires_in);
            }
            for b in &listing.blocked {
                hints.insert(Entry::Block(b.source), now + b.expires_in);
            }
            tracing::info!(
                table = %self.runner.table,
                pinholes = listing.pinholes.len(),
                blocked = listing.blocked.len(),
                "nftables: table existed; rules re-asserted, elements kept"
            );
        }
        Ok(())
    }

    async fn open(&self, batch: &[Pinhole]) -> Result<(), Error> {
        let changes = batch
            .iter()
            .map(|p| {
                p.validate()
                    .map(|p| Change::Open(Entry::Pinhole(p.key), p.ttl))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.send(changes).await
    }

    async fn close(&self, key: PinholeKey) -> Result<(), Error> {
        self.send(vec![Change::Close(Entry::Pinhole(key.validate()?))])
            .await
    }

    async fn list(&self) -> Result<Vec<OpenPinhole>, Error> {
        Ok(self.runner.list().await?.pinholes)
    }

    async fn block(&self, source: IpAddr, duration: Duration) -> Result<(), Error> {
        let duration = validate_ttl(duration).map_err(Error::Invalid)?;
        self.send(vec![Change::Open(
            Entry::Block(source.to_canonical()),
            duration,
        )])
        .await
    }

    async fn unblock(&self, source: IpAddr) -> Result<(), Error> {
        self.send(vec![Change::Close(Entry::Block(source.to_canonical()))])
            .await
    }

    async fn blocked(&self) -> Result<Vec<BlockedSource>, Error> {
        Ok(self.runner.list().await?.blocked)
    }

    /// Applies everything queued, stops the batcher, deletes the table.
    /// A second call is a no-op.
    async fn shutdown(&self) -> Result<(), Error> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
        self.runner
            .apply(&ruleset::remove(&self.runner.table))
            .await
    }
}
