//! The controller's side of the tamper-evident audit log: its checkpoint
//! key, the periodic checkpoints, and the API views of records and
//! checkpoints (which `umbra admin audit verify` turns back into the
//! store's types to check them). The chain itself is `umbra_store::chain`.
//!
//! The checkpoint key is a dedicated Ed25519 key, sealed by the KEK in the
//! store (as the CA key and the token-signing keys are): someone who can
//! write the database cannot sign a checkpoint for a rewritten history.
//! Its public key is written to `data_dir/audit-key.pub` and heads every
//! export, for verifiers off the host to pin.

use std::sync::Arc;
use std::time::Duration;

use umbra_pki::Kek;
use umbra_proto::api::{AuditCheckpoint, AuditRecord};
use umbra_store::chain::checkpoint::{CheckpointBody, SigningKey};
use umbra_store::chain::{self, Link};
use umbra_store::{Checkpoint, Store};

use crate::Controller;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::error::Failure;
use crate::state::StartError;

/// The sealed key's name in the store's secrets (and its sealing context).
const KEY_SECRET: &str = "audit-checkpoint-key";
/// Where the public key is written inside `data_dir`.
pub const PUBLIC_KEY_FILE: &str = "audit-key.pub";

/// Loads the checkpoint key, creating it on a fresh store (concurrent
/// first starts agree on one).
pub async fn load_or_create_key(
    store: &dyn Store,
    kek: &Kek,
    now: i64,
) -> Result<SigningKey, StartError> {
    let fail = |message: String| StartError::Init {
        what: "audit checkpoint key",
        message,
    };
    let stored = match store.secret(KEY_SECRET).await? {
        Some(s) => s,
        None => {
            let pkcs8 = zeroize::Zeroizing::new(
                SigningKey::generate_pkcs8().map_err(|e| fail(e.to_string()))?,
            );
            let sealed = kek
                .seal(KEY_SECRET, &pkcs8)
                .map_err(|e| fail(e.to_string()))?;
            store
                .insert_secret_if_absent(KEY_SECRET, &sealed, now)
                .await?
        }
    };
    let pkcs8 = kek
        .open(KEY_SECRET, &stored)
        .map_err(|e| fail(e.to_string()))?;
    SigningKey::from_pkcs8(&pkcs8).map_err(|e| fail(e.to_string()))
}

impl Controller {
    /// Signs the chain's head and stores the checkpoint, unless the latest
    /// one already covers it (then that one is returned).
    pub async fn checkpoint_audit(&self) -> Result<Checkpoint, Failure> {
        let head = self.store.audit_head().await?;
        if let Some(latest) = self.store.latest_audit_checkpoint().await?
            && latest.body.last_id == head.last_id
            && latest.body.last_hash == head.last_hash
            && self.audit_key.public_key().verifies(&latest)
        {
            return Ok(latest);
        }
        let mut cp = self.audit_key.sign(CheckpointBody {
            ts: self.now(),
            genesis_id: head.genesis_id,
            legacy_count: head.legacy_count,
            last_id: head.last_id,
            last_hash: head.last_hash,
        });
        cp.id = self.store.append_audit_checkpoint(&cp).await?;
        Ok(cp)
    }
}

/// Checkpoints every `every`, skipping when nothing was appended. The
/// server signs once more after its connections have drained, so a
/// controller's last records are covered too.
pub async fn checkpoints(controller: Arc<Controller>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = controller.checkpoint_audit().await {
            tracing::warn!(
                error = e.message,
                "audit checkpoint failed; retrying next interval"
            );
        }
    }
}

pub fn record_view(r: umbra_store::AuditRecord) -> AuditRecord {
    let (hash_version, prev_hash, hash) = match r.link {
        Some(l) => (Some(l.version), Some(l.prev_hash), Some(l.hash)),
        None => (None, None, None),
    };
    AuditRecord {
        id: r.id,
        timestamp: rfc3339(r.ts),
        actor: r.actor,
        source_ip: r.source_ip,
        action: r.action,
        resource: r.resource,
        outcome: r.outcome,
        reason: r.reason,
        request_id: r.request_id,
        count: r.count,
        hash_version,
        prev_hash,
        hash,
    }
}

pub fn checkpoint_view(cp: Checkpoint) -> AuditCheckpoint {
    AuditCheckpoint {
        id: cp.id,
        timestamp: rfc3339(cp.body.ts),
        genesis_id: cp.body.genesis_id,
        legacy_count: cp.body.legacy_count,
        last_id: cp.body.last_id,
        last_hash: chain::to_hex(&cp.body.last_hash),
        key_id: cp.key_id,
        signature: cp.signature,
    }
}

/// An exported record, back in the store's terms for verification.
pub fn record_from_view(v: AuditRecord) -> Result<umbra_store::AuditRecord, String> {
    let ts = parse_rfc3339(&v.timestamp).ok_or_else(|| {
        format!(
            "record {}: timestamp {:?} is not RFC 3339",
            v.id, v.timestamp
        )
    })?;
    let link = v.hash_version.map(|version| Link {
        version,
        prev_hash: v.prev_hash.unwrap_or_default(),
        hash: v.hash.unwrap_or_default(),
    });
    Ok(umbra_store::AuditRecord {
        id: v.id,
        ts,
        actor: v.actor,
        source_ip: v.source_ip,
        action: v.action,
        resource: v.resource,
        outcome: v.outcome,
        reason: v.reason,
        request_id: v.request_id,
        count: v.count,
        link,
    })
}

/// An exported checkpoint, back in the store's terms. A hash that does
/// not parse reads as zeros, so the signature check names the checkpoint.
pub fn checkpoint_from_view(v: AuditCheckpoint) -> Result<Checkpoint, String> {
    let ts = parse_rfc3339(&v.timestamp).ok_or_else(|| {
        format!(
            "checkpoint {}: timestamp {:?} is not RFC 3339",
            v.id, v.timestamp
        )
    })?;
    Ok(Checkpoint {
        id: v.id,
        body: CheckpointBody {
            ts,
            genesis_id: v.genesis_id,
            legacy_count: v.legacy_count,
            last_id: v.last_id,
            last_hash: chain::from_hex(&v.last_hash).unwrap_or([0; 32]),
        },
        key_id: v.key_id,
        signature: v.signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_round_trip() {
        let record = umbra_store::AuditRecord {
            id: 3,
            ts: 1_800_000_000,
            actor: "user:ann".into(),
            source_ip: "10.0.0.1".into(),
            action: "login".into(),
            resource: "service:web".into(),
            outcome: "deny".into(),
            reason: "risk".into(),
            request_id: "r".into(),
            count: 1,
            link: Some(Link {
                version: 1,
                prev_hash: "00".repeat(32),
                hash: "ab".repeat(32),
            }),
        };
        assert_eq!(record_from_view(record_view(record.clone())), Ok(record));
        let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("gen")).expect("key");
        let mut cp = key.sign(CheckpointBody {
            ts: 1_800_000_000,
            genesis_id: 1,
            legacy_count: 0,
            last_id: 3,
            last_hash: [0xab; 32],
        });
        cp.id = 9;
        let back = checkpoint_from_view(checkpoint_view(cp.clone())).expect("parses");
        assert_eq!(back, cp);
        assert!(key.public_key().verifies(&back));
    }
}
