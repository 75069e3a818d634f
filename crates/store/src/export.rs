//! Reading the audit log in export order, a page at a time: each record,
//! and after it the checkpoints that cover it, so a verifier (or a SIEM)
//! can stream millions of records while holding one page.
//!
//! The walk ends at the head read when it starts (records appended while
//! it runs belong to the next export) and sees only checkpoints that
//! existed then, so a checkpoint made meanwhile cannot look like evidence
//! of truncation. Checkpoints covering records past the end come last:
//! they are that evidence.

use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::verify::{Problem, Summary, Verifier};
use crate::model::{AuditFilter, AuditHead, AuditRecord};
use crate::{Result, Store};

/// One line of an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Record(AuditRecord),
    Checkpoint(Checkpoint),
}

/// A walk through the log; see the module docs.
#[derive(Debug)]
pub struct Walk {
    head: AuditHead,
    filter: AuditFilter,
    checkpoints_after: (i64, i64),
    done: bool,
}

impl Walk {
    /// Starts at `filter.after`, `filter.limit` records per page (at least
    /// one), keeping the filter's conditions.
    pub async fn start(store: &dyn Store, mut filter: AuditFilter) -> Result<Self> {
        let head = store.audit_head().await?;
        filter.limit = filter.limit.max(1);
        filter.through = Some(filter.through.map_or(head.last_id, |t| t.min(head.last_id)));
        Ok(Self {
            head,
            checkpoints_after: (filter.after, 0),
            filter,
            done: false,
        })
    }

    /// The head the walk stops at.
    pub fn head(&self) -> &AuditHead {
        &self.head
    }

    /// The next page, or `None` at the end.
    pub async fn next(&mut self, store: &dyn Store) -> Result<Option<Vec<Entry>>> {
        if self.done {
            return Ok(None);
        }
        let records = store.audit_query(&self.filter).await?;
        let Some(last) = records.last().map(|r| r.id) else {
            // Past the last record: whatever checkpoints remain.
            let rest = self.checkpoints(store, i64::MAX).await?;
            self.done = rest.len() < self.page();
            return Ok(
                (!rest.is_empty()).then(|| rest.into_iter().map(Entry::Checkpoint).collect())
            );
        };
        self.filter.after = last;
        let mut covering = Vec::new();
        loop {
            let batch = self.checkpoints(store, last).await?;
            let more = batch.len() == self.page();
            covering.extend(batch);
            if !more {
                break;
            }
        }
        let mut covering = covering.into_iter().peekable();
        let mut page = Vec::with_capacity(records.len() + covering.len());
        for r in records {
            let id = r.id;
            while let Some(cp) = covering.next_if(|c| c.body.last_id < id) {
                page.push(Entry::Checkpoint(cp));
            }
            page.push(Entry::Record(r));
            while let Some(cp) = covering.next_if(|c| c.body.last_id == id) {
                page.push(Entry::Checkpoint(cp));
            }
        }
        Ok(Some(page))
    }

    fn page(&self) -> usize {
        self.filter.limit as usize
    }

    /// The next page of checkpoints covering records up to `through`.
    async fn checkpoints(&mut self, store: &dyn Store, through: i64) -> Result<Vec<Checkpoint>> {
        let batch = store
            .audit_checkpoints(
                self.checkpoints_after,
                through,
                self.head.checkpoint_high,
                self.filter.limit,
            )
            .await?;
        if let Some(cp) = batch.last() {
            self.checkpoints_after = (cp.body.last_id, cp.id);
        }
        Ok(batch)
    }
}

/// Verifies the whole log in `store` against `key`: the outer error is
/// the store's, the inner the log's first problem.
pub async fn verify_store(
    store: &dyn Store,
    key: PublicKey,
) -> Result<std::result::Result<Summary, Problem>> {
    let mut verifier = Verifier::new(key);
    let filter = AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    };
    let mut walk = Walk::start(store, filter).await?;
    while let Some(page) = walk.next(store).await? {
        for entry in page {
            let step = match entry {
                Entry::Record(r) => verifier.record(&r),
                Entry::Checkpoint(cp) => verifier.checkpoint(cp),
            };
            if let Err(problem) = step {
                return Ok(Err(problem));
            }
        }
    }
    Ok(verifier.finish())
}
