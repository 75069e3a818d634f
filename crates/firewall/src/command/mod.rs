//! The command backend: pinholes opened and closed by external programs,
//! fwknop's `CMD_CYCLE_OPEN` / `CMD_CYCLE_CLOSE` idea, for firewalls this
//! host cannot program itself (cloud security groups, an appliance API).
//!
//! Expiry runs here: a timer task per pinhole runs the close command when
//! the ttl ends, and `shutdown` runs it for every pinhole still open.
//! Commands run as argv, never through a shell (see [`template`]). A
//! pinhole whose close command fails stays open in the external firewall;
//! the failure is logged with the command's stderr, because nothing here
//! can retry it safely.

pub mod template;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::template::{Template, Values};
use crate::table::{Opened, Table};
use crate::types::{validate_protected, validate_ttl};
use crate::{BlockedSource, Error, OpenPinhole, Pinhole, PinholeKey, Pinholes, Protected};

/// Validated settings of the command backend.
#[derive(Clone, Debug)]
pub struct CommandSettings {
    /// Run when a pinhole opens.
    pub open: Template,
    /// Run when a pinhole expires, is closed, or at shutdown.
    pub close: Template,
    /// Run when a source is blocked; `None` makes `block` unsupported.
    pub block: Option<Template>,
    /// Run when a block ends or is lifted; required with `block`.
    pub unblock: Option<Template>,
    /// A command still running after this is killed and counts as failed.
    pub timeout: Duration,
}

/// Pinholes in an external firewall driven by commands. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CommandPinholes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: CommandSettings,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    table: Table,
    timers: HashMap<Entry, AbortHandle>,
    shut_down: bool,
}

/// What a timer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Pinhole(PinholeKey),
    Block(IpAddr),
}

impl CommandPinholes {
    pub fn new(settings: CommandSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::default(),
            }),
        }
    }
}

impl Inner {
    // Every mutation is one map operation, so a poisoned lock is consistent.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> Result<MutexGuard<'_, State>, Error> {
        let state = self.state();
        if state.shut_down {
            Err(Error::ShutDown)
        } else {
            Ok(state)
        }
    }

    fn template(&self, entry: Entry, opening: bool) -> Option<&Template> {
        let s = &self.settings;
        match (entry, opening) {
            (Entry::Pinhole(_), true) => Some(&s.open),
            (Entry::Pinhole(_), false) => Some(&s.close),
            (Entry::Block(_), true) => s.block.as_ref(),
            (Entry::Block(_), false) => s.unblock.as_ref(),
        }
    }

    /// Runs the open (or close) command of `entry`; `{timeout}` is `ttl`.
    async fn run(&self, entry: Entry, opening: bool, ttl: Duration) -> Result<(), Error> {
        let Some(template) = self.template(entry, opening) else {
            return Err(Error::Unsupported {
                backend: "command",
                what: "block without block_command",
            });
        };
        let values = match entry {
            Entry::Pinhole(key) => Values::pinhole(&key, ttl),
            Entry::Block(source) => Values::block(source, ttl),
        };
        crate::exec::run(&template.render(&values), None, self.settings.timeout)
            .await
            .map(drop)
    }

    /// (Re)arms the timer that ends `entry` at `deadline`.
    fn arm(self: &Arc<Self>, state: &mut State, entry: Entry, deadline: Instant) {
        let inner = Arc::clone(self);
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            inner.expire(entry, deadline).await;
        });
        if let Some(old) = state.timers.insert(entry, task.abort_handle()) {
            old.abort();
        }
    }

    async fn expire(&self, entry: Entry, deadline: Instant) {
        {
            let mut state = self.state();
            // A re-open moved the deadline and armed a newer timer.
            let current = match entry {
                Entry::Pinhole(key) => state.table.expire(&key, deadline),
                Entry::Block(source) => state.table.expire_block(source, deadline),
            };
            if !current {
                return;
            }
            state.timers.remove(&entry);
        }
        if let Err(error) = self.run(entry, false, Duration::ZERO).await {
            tracing::warn!(?entry, %error, "command backend: closing on expiry failed");
        }
    }

    /// Opens or extends one entry and runs its open command if it is new.
    async fn open_one(self: &Arc<Self>, entry: Entry, ttl: Duration) -> Result<(), Error> {
        let now = Instant::now();
        let opened = {
            let mut state = self.live()?;
            let opened = match entry {
                Entry::Pinhole(key) => state.table.open(key, ttl, now),
                Entry::Block(source) => state.table.block(source, ttl, now),
            };
            if opened == Opened::Extended {
                self.arm(&mut state, entry, now + ttl);
            }
            opened
        };
        if opened != Opened::New {
            return Ok(());
        }
        let result = self.run(entry, true, ttl).await;
        let undo = {
            let mut state = self.state();
            // Read the deadline again: a concurrent knock may have extended
            // it (or a close/shutdown removed the entry) while the command ran.
            let current = match entry {
                Entry::Pinhole(key) => state.table.deadline(&key),
                Entry::Block(source) => state.table.block_deadline(source),
            };
            match (&result, current) {
                // The close timer starts only once the open command succeeded.
                (Ok(()), Some(due)) => {
                    self.arm(&mut state, entry, due);
                    false
                }
                // Closed or shut down meanwhile: undo what the command opened.
                (Ok(()), None) => true,
                (Err(_), _) => {
                    if let Some(timer) = state.timers.remove(&entry) {
                        timer.abort();
                    }
                    let now = Instant::now();
                    match entry {
                        Entry::Pinhole(key) => drop(state.table.close(&key, now)),
                        Entry::Block(source) => drop(state.table.unblock(source, now)),
                    }
                    false
                }
            }
        };
        if undo {
            return self.run(entry, false, Duration::ZERO).await;
        }
        result
    }

    /// Forgets `entry` and runs its close command if it was open.
    async fn close_one(&self, entry: Entry) -> Result<(), Error> {
        let was_open = {
            let mut state = self.live()?;
            if let Some(timer) = state.timers.remove(&entry) {
                timer.abort();
            }
            let now = Instant::now();
            match entry {
                Entry::Pinhole(key) => state.table.close(&key, now),
                Entry::Block(source) => state.table.unblock(source, now),
            }
        };
        if was_open {
            self.run(entry, false, Duration::ZERO).await
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Pinholes for CommandPinholes {
    fn backend(&self) -> &'static str {
        "command"
    }

    async fn install(&self, protected: &[Protected]) -> Result<(), Error> {
        // The external firewall owns its own default-deny rules; the ports
        // are kept only for `allows`-style bookkeeping.
        validate_protected(protected)?;
        self.inner.live()?.table.set_protected(protected);
        Ok(())
    }

    /// Runs the open command for each new pinhole in turn; on failure the
    /// earlier ones stay open and the first error is returned.
    async fn open(&self, batch: &[Pinhole]) -> Result<(), Error> {
        let batch = batch
            .iter()
            .map(Pinhole::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let mut first_error = None;
        for p in batch {
            if let Err(e) = self.inner.open_one(Entry::Pinhole(p.key), p.ttl).await {
                tracing::warn!(pinhole = %p.key, error = %e, "command backend: open failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn close(&self, key: PinholeKey) -> Result<(), Error> {
        self.inner.close_one(Entry::Pinhole(key.validate()?)).await
    }

    async fn list(&self) -> Result<Vec<OpenPinhole>, Error> {
        Ok(self.inner.state().table.list(Instant::now()))
    }

    async fn block(&self, source: IpAddr, duration: Duration) -> Result<(), Error> {
        let duration = validate_ttl(duration).map_err(Error::Invalid)?;
        if self.inner.settings.block.is_none() {
            return Err(Error::Unsupported {
                backend: "command",
                what: "block without block_command",
            });
        }
        self.inner
            .open_one(Entry::Block(source.to_canonical()), duration)
            .await
    }

    async fn unblock(&self, source: IpAddr) -> Result<(), Error> {
        self.inner
            .close_one(Entry::Block(source.to_canonical()))
            .await
    }

    async fn blocked(&self) -> Result<Vec<BlockedSource>, Error> {
        Ok(self.inner.state().table.blocked(Instant::now()))
    }

    /// Runs the close command for every open pinhole (and unblock for
    /// every block), even if some fail; returns the first failure.
    async fn shutdown(&self) -> Result<(), Error> {
        let (pinholes, blocks) = {
            let mut state = self.inner.state();
            state.shut_down = true;
            state.timers.drain().for_each(|(_, t)| t.abort());
            state.table.drain()
        };
        let entries = pinholes
            .into_iter()
            .map(Entry::Pinhole)
            .chain(blocks.into_iter().map(Entry::Block));
        let mut first_error = None;
        for entry in entries {
            if let Err(e) = self.inner.run(entry, false, Duration::ZERO).await {
                tracing::warn!(?entry, error = %e, "command backend: close at shutdown failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests;
