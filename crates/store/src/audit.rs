//! The audit log's queries, shared by both backends like `shared`'s:
//! appending onto the hash chain, filtered reads, and checkpoints.
//!
//! An append is one write transaction: move the chain's head (its row
//! lock, or SQLite's write lock, orders concurrent appenders), hash each
//! record onto the previous one, insert them with the ids the head handed
//! out, and store the new head hash. Nothing is acknowledged before the
//! commit, so a record is durable and chained, or absent.

use crate::chain::{self, Fields, Link};
use crate::model::{AuditEvent, AuditFilter};
use crate::{Result, StoreError};

/// The columns of a record with its hash fields; `fields` borrows them.
pub(crate) fn event_fields(id: i64, e: &AuditEvent) -> Fields<'_> {
    Fields {
        id,
        ts: e.ts,
        actor: &e.actor,
        source_ip: &e.source_ip,
        action: &e.action,
        resource: &e.resource,
        outcome: e.outcome.as_str(),
        reason: &e.reason,
        request_id: &e.request_id,
        count: e.count.max(1),
    }
}

pub(crate) fn head_hash(text: &str) -> Result<[u8; 32]> {
    chain::from_hex(text).ok_or_else(|| StoreError::Corrupt("audit chain head hash".into()))
}

/// A stored link. Parts an attacker garbled are kept as found (empty when
/// NULL), so verification names the record instead of the read failing.
pub(crate) fn link(
    version: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
) -> Option<Link> {
    version.map(|version| Link {
        version,
        prev_hash: prev_hash.unwrap_or_default(),
        hash: hash.unwrap_or_default(),
    })
}

/// `SELECT … WHERE` for a filter: fixed fragments with numbered
/// placeholders, bound in this order by the caller: after, actor, action,
/// outcome, since, until, through, limit.
pub(crate) fn filter_sql(f: &AuditFilter) -> String {
    let mut sql = String::from("SELECT * FROM audit_log WHERE id > $1");
    let mut n = 1;
    let mut add = |present: bool, clause: &str| {
        if present {
            n += 1;
            sql.push_str(&clause.replace('#', &format!("${n}")));
        }
    };
    add(f.actor.is_some(), " AND actor = #");
    add(f.action.is_some(), " AND action = #");
    add(f.outcome.is_some(), " AND outcome = #");
    add(f.since.is_some(), " AND ts >= #");
    add(f.until.is_some(), " AND ts < #");
    add(f.through.is_some(), " AND id <= #");
    let limit = n + 1;
    sql.push_str(&format!(" ORDER BY id LIMIT ${limit}"));
    sql
}

/// Expands the audit methods for one backend (inside `store_impl!`).
macro_rules! audit_impl {
    ($store:ident, $db:ty, $row:ty) => {
        impl $store {
            /// Chains and inserts `events` inside `tx`; returns the last id.
            async fn append_chained(
                tx: &mut Transaction<'static, $db>,
                events: &[AuditEvent],
            ) -> Result<i64> {
                let n = i64::try_from(events.len())
                    .map_err(|_| StoreError::Corrupt("audit batch too large".into()))?;
                // Takes the head's lock; SET reads the old values.
                let head = sqlx::query(
                    "UPDATE audit_chain SET last_id = last_id + $1, \
                     genesis_id = CASE WHEN genesis_id = 0 THEN last_id + 1 ELSE genesis_id END \
                     WHERE id = 1 RETURNING last_id, last_hash",
                )
                .bind(n)
                .fetch_one(&mut **tx)
                .await?;
                let last: i64 = head.try_get("last_id")?;
                let mut prev = crate::audit::head_hash(&head.try_get::<String, _>("last_hash")?)?;
                let mut id = last - n;
                for e in events {
                    id += 1;
                    let fields = crate::audit::event_fields(id, e);
                    let hash = crate::chain::record_hash(&prev, &fields);
                    sqlx::query(
                        "INSERT INTO audit_log (id, ts, actor, source_ip, action, resource, \
                         outcome, reason, request_id, count, hash_version, prev_hash, hash) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(id)
                    .bind(e.ts)
                    .bind(&e.actor)
                    .bind(&e.source_ip)
                    .bind(&e.action)
                    .bind(&e.resource)
                    .bind(e.outcome.as_str())
                    .bind(&e.reason)
                    .bind(&e.request_id)
                    .bind(fields.count)
                    .bind(crate::chain::HASH_VERSION)
                    .bind(crate::chain::to_hex(&prev))
                    .bind(crate::chain::to_hex(&hash))
                    .execute(&mut **tx)
                    .await?;
                    prev = hash;
                }
                sqlx::query("UPDATE audit_chain SET last_hash = $1 WHERE id = 1")
                    .bind(crate::chain::to_hex(&prev))
                    .execute(&mut **tx)
                    .await?;
                Ok(id)
            }

            async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
                let sql = crate::audit::filter_sql(f);
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(f.after);
                if let Some(v) = &f.actor {
                    q = q.bind(v.clone());
                }
                if let Some(v) = &f.action {
                    q = q.bind(v.clone());
                }
                if let Some(v) = f.outcome {
                    q = q.bind(v.as_str());
                }
                if let Some(v) = f.since {
                    q = q.bind(v);
                }
                if let Some(v) = f.until {
                    q = q.bind(v);
                }
                if let Some(v) = f.through {
                    q = q.bind(v);
                }
                let rows = q.bind(i64::from(f.limit)).fetch_all(&self.pool).await?;
                rows.iter().map(audit_row).collect()
            }

            async fn read_audit_head(&self) -> Result<AuditHead> {
                let row = sqlx::query(
                    "SELECT c.*, (SELECT COALESCE(MAX(id), 0) FROM audit_checkpoints) \
                     AS checkpoint_high FROM audit_chain c WHERE c.id = 1",
                )
                    .fetch_one(&self.pool)
                    .await?;
                Ok(AuditHead {
                    last_id: row.try_get("last_id")?,
                    last_hash: crate::audit::head_hash(&row.try_get::<String, _>("last_hash")?)?,
                    genesis_id: row.try_get("genesis_id")?,
                    legacy_count: row.try_get("legacy_count")?,
                    checkpoint_high: row.try_get("checkpoint_high")?,
                })
            }

            async fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<i64> {
                let row = sqlx::query(
                    "INSERT INTO audit_checkpoints (ts, genesis_id, legacy_count, last_id, \
                     last_hash, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     RETURNING id",
                )
                .bind(cp.body.ts)
                .bind(cp.body.genesis_id)
                .bind(cp.body.legacy_count)
                .bind(cp.body.last_id)
                .bind(crate::chain::to_hex(&cp.body.last_hash))
                .bind(&cp.key_id)
                .bind(&cp.signature)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get("id")?)
            }

            async fn select_checkpoints(
                &self,
                after: (i64, i64),
                through: i64,
                max_id: i64,
                limit: u32,
            ) -> Result<Vec<Checkpoint>> {
                let rows = sqlx::query(
                    "SELECT * FROM audit_checkpoints \
                     WHERE (last_id > $1 OR (last_id = $1 AND id > $2)) AND last_id <= $3 \
                     AND id <= $4 ORDER BY last_id, id LIMIT $5",
                )
                .bind(after.0)
                .bind(after.1)
                .bind(through)
                .bind(max_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(checkpoint_row).collect()
            }

            async fn select_latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
                let row = sqlx::query(
                    "SELECT * FROM audit_checkpoints ORDER BY last_id DESC, id DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(checkpoint_row).transpose()
            }
        }

        fn checkpoint_row(row: &$row) -> Result<Checkpoint> {
            let last_hash: &str = row.try_get("last_hash")?;
            Ok(Checkpoint {
                id: row.try_get("id")?,
                body: crate::chain::checkpoint::CheckpointBody {
                    ts: row.try_get("ts")?,
                    genesis_id: row.try_get("genesis_id")?,
                    legacy_count: row.try_get("legacy_count")?,
                    last_id: row.try_get("last_id")?,
                    // Garbled reads as zeros: its signature then fails,
                    // which names the checkpoint.
                    last_hash: crate::chain::from_hex(last_hash).unwrap_or([0; 32]),
                },
                key_id: row.try_get("key_id")?,
                signature: row.try_get("signature")?,
            })
        }
    };
}
pub(crate) use audit_impl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_number_their_placeholders_in_binding_order() {
        let all = AuditFilter {
            actor: Some("a".into()),
            action: Some("b".into()),
            outcome: Some(crate::Outcome::Deny),
            since: Some(1),
            until: Some(2),
            through: Some(3),
            ..AuditFilter::default()
        };
        assert_eq!(
            filter_sql(&all),
            "SELECT * FROM audit_log WHERE id > $1 AND actor = $2 AND action = $3 \
             AND outcome = $4 AND ts >= $5 AND ts < $6 AND id <= $7 ORDER BY id LIMIT $8"
        );
        let some = AuditFilter {
            action: Some("b".into()),
            until: Some(2),
            ..AuditFilter::default()
        };
        assert_eq!(
            filter_sql(&some),
            "SELECT * FROM audit_log WHERE id > $1 AND action = $2 AND ts < $3 \
             ORDER BY id LIMIT $4"
        );
    }
}
