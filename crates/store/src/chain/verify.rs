//! Verification: a state machine fed the records in id order, with each
//! checkpoint right after the record it covers (the order `umbra admin
//! audit export` writes), keeping only the chain's head in memory. It stops
//! at the first problem and names it.

use std::collections::BTreeMap;

use super::checkpoint::{Checkpoint, PublicKey};
use super::{Fields, GENESIS, HASH_VERSION, from_hex, record_hash};
use crate::model::AuditRecord;

/// The first thing wrong with a log, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("record {id}: its content does not match its hash (modified)")]
    Modified { id: i64 },
    #[error("record {id} is missing (deleted)")]
    Missing { id: i64 },
    #[error(
        "record {id} does not link to the record before it (a record was deleted, inserted or \
         reordered there, or the one before it was modified and its hash recomputed)"
    )]
    BrokenLink { id: i64 },
    #[error("record {id} comes after record {after} (reordered or duplicated)")]
    OutOfOrder { id: i64, after: i64 },
    #[error("record {id} has no hash although the chain started before it (inserted or edited)")]
    Unchained { id: i64 },
    #[error("record {id} uses hash version {version}, which this version cannot check")]
    UnknownVersion { id: i64, version: i64 },
    #[error("checkpoint {checkpoint}: the signature does not verify with the trusted key")]
    BadSignature { checkpoint: i64 },
    #[error(
        "checkpoint {checkpoint} (signed) disagrees with record {last_id}: a record after \
         {since} up to {last_id} was modified, inserted or deleted and the chain recomputed"
    )]
    Rewritten {
        checkpoint: i64,
        last_id: i64,
        /// The last record a checkpoint vouched for before it (0: none).
        since: i64,
    },
    #[error(
        "checkpoint {checkpoint} (signed) covers records up to {last_id} but the log ends at \
         {end} (truncated)"
    )]
    Truncated {
        checkpoint: i64,
        last_id: i64,
        end: i64,
    },
    #[error(
        "checkpoint {checkpoint} (signed) counts {signed} records from before the chain, the \
         log has {found} (added or deleted)"
    )]
    LegacyChanged {
        checkpoint: i64,
        signed: i64,
        found: i64,
    },
    #[error(
        "checkpoint {checkpoint} (signed) says the chain starts at record {signed}, the log at \
         {found} (rewritten)"
    )]
    GenesisChanged {
        checkpoint: i64,
        signed: i64,
        found: i64,
    },
    #[error("checkpoint {checkpoint} comes after a later record (the export is out of order)")]
    CheckpointOutOfPlace { checkpoint: i64 },
}

impl Problem {
    /// A stable name for scripts (`--json`).
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Modified { .. } => "modified",
            Self::Missing { .. } => "deleted",
            Self::BrokenLink { .. } => "broken_link",
            Self::OutOfOrder { .. } => "reordered",
            Self::Unchained { .. } => "unchained",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::BadSignature { .. } => "bad_signature",
            Self::Rewritten { .. } => "rewritten",
            Self::Truncated { .. } => "truncated",
            Self::LegacyChanged { .. } => "legacy_changed",
            Self::GenesisChanged { .. } => "genesis_changed",
            Self::CheckpointOutOfPlace { .. } => "checkpoint_out_of_place",
        }
    }

    /// The record named, if the problem is at one.
    pub const fn record_id(&self) -> Option<i64> {
        match *self {
            Self::Modified { id }
            | Self::Missing { id }
            | Self::BrokenLink { id }
            | Self::OutOfOrder { id, .. }
            | Self::Unchained { id }
            | Self::UnknownVersion { id, .. } => Some(id),
            Self::Rewritten { last_id, .. } => Some(last_id),
            Self::Truncated { end, .. } => Some(end + 1),
            _ => None,
        }
    }

    /// The checkpoint named, if the problem is at one.
    pub const fn checkpoint_id(&self) -> Option<i64> {
        match *self {
            Self::BadSignature { checkpoint }
            | Self::Rewritten { checkpoint, .. }
            | Self::Truncated { checkpoint, .. }
            | Self::LegacyChanged { checkpoint, .. }
            | Self::GenesisChanged { checkpoint, .. }
            | Self::CheckpointOutOfPlace { checkpoint } => Some(checkpoint),
            _ => None,
        }
    }
}

/// What a clean verification saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Chained records checked.
    pub records: u64,
    /// Records from before the chain (counted, not hash-protected).
    pub legacy: i64,
    /// The last record (0: none).
    pub last_id: i64,
    pub checkpoints: u64,
    /// The last record a signed checkpoint vouches for (0: none). Records
    /// after it are chained but not yet signed.
    pub signed_through: i64,
}

/// Feed records and checkpoints in export order, then [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    key: PublicKey,
    last_id: i64,
    last_hash: [u8; 32],
    genesis: Option<i64>,
    summary: Summary,
    /// Checkpoints (and anchors) for records not seen yet, by their
    /// last record and id.
    pending: BTreeMap<(i64, i64), Checkpoint>,
}

impl Verifier {
    /// A verifier trusting checkpoints signed by `key`, for a log read
    /// from its first record.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            last_id: 0,
            last_hash: GENESIS,
            genesis: None,
            summary: Summary::default(),
            pending: BTreeMap::new(),
        }
    }

    /// A checkpoint kept off the host (from an earlier export): the log
    /// must still agree with it, even if its copy in the store is gone.
    pub fn anchor(&mut self, cp: Checkpoint) -> Result<(), Problem> {
        if !self.key.verifies(&cp) {
            return Err(Problem::BadSignature { checkpoint: cp.id });
        }
        self.pending.insert((cp.body.last_id, cp.id), cp);
        Ok(())
    }

    pub fn record(&mut self, r: &AuditRecord) -> Result<(), Problem> {
        if self.summary.last_id != 0 && r.id <= self.last_id {
            return Err(Problem::OutOfOrder {
                id: r.id,
                after: self.last_id,
            });
        }
        match &r.link {
            None if self.genesis.is_some() => return Err(Problem::Unchained { id: r.id }),
            None => self.summary.legacy += 1,
            Some(link) => {
                if link.version != HASH_VERSION {
                    return Err(Problem::UnknownVersion {
                        id: r.id,
                        version: link.version,
                    });
                }
                if self.genesis.is_some() && r.id != self.last_id + 1 {
                    return Err(Problem::Missing {
                        id: self.last_id + 1,
                    });
                }
                let prev = from_hex(&link.prev_hash).ok_or(Problem::Modified { id: r.id })?;
                if prev != self.last_hash {
                    return Err(Problem::BrokenLink { id: r.id });
                }
                let hash = record_hash(&prev, &fields(r));
                if from_hex(&link.hash) != Some(hash) {
                    return Err(Problem::Modified { id: r.id });
                }
                self.genesis.get_or_insert(r.id);
                self.last_hash = hash;
                self.summary.records += 1;
            }
        }
        self.last_id = r.id;
        self.summary.last_id = r.id;
        self.settle()
    }

    pub fn checkpoint(&mut self, cp: Checkpoint) -> Result<(), Problem> {
        if !self.key.verifies(&cp) {
            return Err(Problem::BadSignature { checkpoint: cp.id });
        }
        if cp.body.last_id < self.last_id {
            return Err(Problem::CheckpointOutOfPlace { checkpoint: cp.id });
        }
        self.pending.insert((cp.body.last_id, cp.id), cp);
        self.settle()
    }

    pub fn finish(mut self) -> Result<Summary, Problem> {
        self.settle()?;
        if let Some(cp) = self.pending.into_values().next() {
            return Err(Problem::Truncated {
                checkpoint: cp.id,
                last_id: cp.body.last_id,
                end: self.last_id,
            });
        }
        Ok(self.summary)
    }

    /// Checks every pending checkpoint the records have reached.
    fn settle(&mut self) -> Result<(), Problem> {
        while let Some(entry) = self.pending.first_entry() {
            let last_id = entry.key().0;
            if last_id > self.last_id {
                break;
            }
            let cp = entry.remove();
            if last_id < self.last_id {
                // Passed over: the record it covers is not in the log.
                return Err(Problem::Missing { id: last_id });
            }
            self.check_head(&cp)?;
        }
        Ok(())
    }

    fn check_head(&mut self, cp: &Checkpoint) -> Result<(), Problem> {
        if cp.body.last_hash != self.last_hash {
            return Err(Problem::Rewritten {
                checkpoint: cp.id,
                last_id: cp.body.last_id,
                since: self.summary.signed_through,
            });
        }
        let genesis = self.genesis.unwrap_or(0);
        if cp.body.genesis_id != genesis {
            return Err(Problem::GenesisChanged {
                checkpoint: cp.id,
                signed: cp.body.genesis_id,
                found: genesis,
            });
        }
        if cp.body.legacy_count != self.summary.legacy {
            return Err(Problem::LegacyChanged {
                checkpoint: cp.id,
                signed: cp.body.legacy_count,
                found: self.summary.legacy,
            });
        }
        self.summary.checkpoints += 1;
        self.summary.signed_through = cp.body.last_id;
        Ok(())
    }
}

fn fields(r: &AuditRecord) -> Fields<'_> {
    Fields {
        id: r.id,
        ts: r.ts,
        actor: &r.actor,
        source_ip: &r.source_ip,
        action: &r.action,
        resource: &r.resource,
        outcome: &r.outcome,
        reason: &r.reason,
        request_id: &r.request_id,
        count: r.count,
    }
}

#[cfg(test)]
mod tests;
