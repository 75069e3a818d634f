//! The task that turns concurrent element changes into few `nft` calls.
//!
//! Spawning nft costs ~4 ms whatever the batch size, so one call per knock
//! would cap us near 250 pinholes/s. Instead every change is queued here;
//! while one nft call runs, the next requests pile up and go out together
//! in the next call, one kernel transaction. The queue is FIFO and a batch
//! is applied atomically, so a close issued after an open always wins.
//!
//! Re-opening: older kernels ignore a new timeout on `add element` of an
//! existing element, and `delete` of a missing element fails the whole
//! transaction. So for an element we believe exists we emit add (no-op
//! or create) → delete → add with the new timeout, all in one transaction;
//! a close is add (tiny timeout) → delete. Our belief comes from `hints`
//! (deadlines of what we added) and errs on the safe side: a wrong "absent"
//! costs at most a timeout not extended on an old kernel.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nftables::expr::Expression;
use nftables::schema::Nftables;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ruleset::{self, BLOCKED4, BLOCKED6, PINHOLES4, PINHOLES6};
use super::runner::Runner;
use crate::command::template::whole_seconds;
use crate::{Error, PinholeKey};

/// Most element changes in one nft call: bounds the time a call takes and
/// the size of the JSON it reads.
const MAX_BATCH: usize = 20_000;
/// How often believed-expired hints are dropped to bound memory.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What an element change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Entry {
    Pinhole(PinholeKey),
    Block(IpAddr),
}

/// One element change.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Change {
    Open(Entry, Duration),
    Close(Entry),
}

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<(), Error>>;

pub(crate) enum Msg {
    Apply(Vec<Change>, Reply),
    /// Stop after everything queued before it; answered when stopped.
    Stop(oneshot::Sender<()>),
}

/// Deadlines of elements we added and believe are still in the kernel.
pub(crate) type Hints = Arc<Mutex<HashMap<Entry, Instant>>>;

pub(crate) struct Batcher {
    pub(crate) runner: Arc<Runner>,
    pub(crate) hints: Hints,
}

/// The state a batch leaves an element in; only that matters because the
/// whole batch is one transaction.
#[derive(Clone, Copy)]
enum Final {
    /// `exact`: set this timeout even if shorter (a close came before).
    Open {
        secs: u32,
        exact: bool,
    },
    Close,
}

impl Batcher {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut last_sweep = Instant::now();
        while let Some(msg) = rx.recv().await {
            let mut batch = Vec::new();
            let mut size = 0;
            let mut stop = None;
            let mut next = Some(msg);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Apply(changes, reply) => {
                        size += changes.len();
                        batch.push((changes, reply));
                    }
                    Msg::Stop(done) => {
                        stop = Some(done);
                        break;
                    }
                }
                if size < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.apply(batch).await;
            if let Some(done) = stop {
                let _ = done.send(());
                return;
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                let now = Instant::now();
                self.hints().retain(|_, d| *d > now);
                last_sweep = now;
            }
        }
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, HashMap<Entry, Instant>> {
        self.hints.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn apply(&self, batch: Vec<(Vec<Change>, Reply)>) {
        if batch.is_empty() {
            return;
        }
        let all: Vec<Change> = batch.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        match self.apply_changes(&all).await {
            Ok(()) => batch
                .into_iter()
                .for_each(|(_, reply)| drop(reply.send(Ok(())))),
            Err(e) if batch.len() == 1 => {
                if let Some((_, reply)) = batch.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            // One request's failure must not fail its neighbours: retry each
            // on its own so every caller gets its own answer.
            Err(e) => {
                tracing::warn!(error = %e, requests = batch.len(), "nftables: batch failed, retrying one by one");
                for (changes, reply) in batch {
                    let _ = reply.send(self.apply_changes(&changes).await);
                }
            }
        }
    }

    async fn apply_changes(&self, changes: &[Change]) -> Result<(), Error> {
        let now = Instant::now();
        let (doc, updates) = plan(&self.runner.table, changes, &self.hints(), now);
        if let Some(doc) = doc {
            self.runner.apply(&doc).await?;
        }
        let mut hints = self.hints();
        for (entry, deadline) in updates {
            match deadline {
                Some(d) => hints.insert(entry, d),
                None => hints.remove(&entry),
            };
        }
        Ok(())
    }
}

/// Folds `changes` into one transaction. Returns it (None if there is
/// nothing to do) and the hint updates to make once it succeeded.
fn plan(
    table: &str,
    changes: &[Change],
    hints: &HashMap<Entry, Instant>,
    now: Instant,
) -> (Option<Nftables<'static>>, Vec<(Entry, Option<Instant>)>) {
    let mut finals: HashMap<Entry, Final> = HashMap::with_capacity(changes.len());
    for change in changes {
        match *change {
            Change::Open(entry, ttl) => {
                let secs = u32::try_from(whole_seconds(ttl)).unwrap_or(u32::MAX);
                let next = match finals.get(&entry) {
                    Some(Final::Open { secs: old, exact }) => Final::Open {
                        secs: secs.max(*old),
                        exact: *exact,
                    },
                    Some(Final::Close) => Final::Open { secs, exact: true },
                    None => Final::Open { secs, exact: false },
                };
                finals.insert(entry, next);
            }
            Change::Close(entry) => drop(finals.insert(entry, Final::Close)),
        }
    }
    // Per set: first adds, then deletes, then re-adds (see module docs).
    let mut steps: [HashMap<&'static str, Vec<Expression<'static>>>; 3] = Default::default();
    let mut updates = Vec::with_capacity(finals.len());
    for (entry, fin) in finals {
        let (set, val) = value(entry);
        let believed = hints.get(&entry).copied().filter(|d| *d > now);
        match (fin, believed) {
            (Final::Close, _) => {
                steps[0]
                    .entry(set)
                    .or_default()
                    .push(ruleset::with_timeout(val.clone(), 1));
                steps[1].entry(set).or_default().push(val);
                updates.push((entry, None));
            }
            (Final::Open { secs, exact }, Some(old)) => {
                let deadline = now + Duration::from_secs(u64::from(secs));
                if exact || deadline > old {
                    steps[0]
                        .entry(set)
                        .or_default()
                        .push(ruleset::with_timeout(val.clone(), secs));
                    steps[1].entry(set).or_default().push(val.clone());
                    steps[2]
                        .entry(set)
                        .or_default()
                        .push(ruleset::with_timeout(val, secs));
                    updates.push((entry, Some(deadline)));
                }
            }
            (Final::Open { secs, .. }, None) => {
                steps[0]
                    .entry(set)
                    .or_default()
                    .push(ruleset::with_timeout(val, secs));
                updates.push((entry, Some(now + Duration::from_secs(u64::from(secs)))));
            }
        }
    }
    let mut objects = Vec::new();
    for (i, mut step) in steps.into_iter().enumerate() {
        for set in [PINHOLES4, PINHOLES6, BLOCKED4, BLOCKED6] {
            if let Some(elems) = step.remove(set) {
                let obj = ruleset::element(table, set, elems);
                objects.push(if i == 1 {
                    ruleset::delete(obj)
                } else {
                    ruleset::add(obj)
                });
            }
        }
    }
    let doc = (!objects.is_empty()).then(|| ruleset::document(objects));
    (doc, updates)
}

fn value(entry: Entry) -> (&'static str, Expression<'static>) {
    match entry {
        Entry::Pinhole(k) => {
            let set = if k.source.is_ipv4() {
                PINHOLES4
            } else {
                PINHOLES6
            };
            (
                set,
                ruleset::pinhole_value(k.source.to_string(), k.proto.as_str(), k.port),
            )
        }
        Entry::Block(a) => {
            let set = if a.is_ipv4() { BLOCKED4 } else { BLOCKED6 };
            (set, Expression::String(a.to_string().into()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests;
