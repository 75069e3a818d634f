//! The hash chain against both backends: appends chain, concurrent
//! appenders do not fork it, filters read it, and an attacker with write
//! access to the database (the tests drop or disable the append-only
//! triggers, as such an attacker would) is named by verification.

use std::future::Future;
use std::pin::Pin;

use crate::Store;
use crate::chain::checkpoint::{CheckpointBody, SigningKey};
use crate::chain::verify::{Problem, Summary};
use crate::chain::{self, Fields};
use crate::export::verify_store;
use crate::model::*;

/// Runs one SQL statement as the attacker (panics on failure).
pub type Exec = dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Sync;

const NOW: i64 = 1_800_000_000;

fn event(i: i64, actor: &str, outcome: Outcome) -> AuditEvent {
    AuditEvent {
        ts: NOW + i,
        actor: actor.into(),
        source_ip: "10.0.0.1".into(),
        action: if i % 2 == 0 {
            "login"
        } else {
            "gateway.access"
        }
        .into(),
        resource: format!("service:s{i}"),
        outcome,
        reason: String::new(),
        request_id: format!("r{i}"),
        count: 1,
    }
}

fn key() -> SigningKey {
    SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("gen")).expect("key")
}

/// Signs and stores a checkpoint of the current head.
async fn checkpoint(store: &dyn Store, key: &SigningKey) -> i64 {
    let head = store.audit_head().await.expect("head");
    let cp = key.sign(CheckpointBody {
        ts: NOW,
        genesis_id: head.genesis_id,
        legacy_count: head.legacy_count,
        last_id: head.last_id,
        last_hash: head.last_hash,
    });
    store
        .append_audit_checkpoint(&cp)
        .await
        .expect("checkpoint")
}

async fn verify(store: &dyn Store, key: &SigningKey) -> Result<Summary, Problem> {
    verify_store(store, key.public_key().clone())
        .await
        .expect("store readable")
}

pub async fn appends_are_chained_and_checkpointed(store: &dyn Store) {
    let k = key();
    assert_eq!(verify(store, &k).await.expect("empty").last_id, 0);
    let empty = store.audit_head().await.expect("head");
    assert_eq!(
        (empty.last_id, empty.genesis_id, empty.last_hash),
        (0, 0, chain::GENESIS)
    );
    let id = store
        .append_audit(&event(0, "user:ann", Outcome::Allow))
        .await
        .expect("append");
    assert_eq!(id, 1);
    let batch: Vec<AuditEvent> = (1..6)
        .map(|i| event(i, "user:bob", Outcome::Deny))
        .collect();
    store.append_audit_batch(&batch).await.expect("batch");
    let first = checkpoint(store, &k).await;
    store
        .append_audit(&event(6, "user:ann", Outcome::Error))
        .await
        .expect("append");
    let head = store.audit_head().await.expect("head");
    assert_eq!(
        (head.last_id, head.genesis_id, head.legacy_count),
        (7, 1, 0)
    );
    assert_eq!(head.checkpoint_high, first);
    let records = store.audit_after(0, 100).await.expect("read");
    let links: Vec<_> = records
        .iter()
        .map(|r| r.link.clone().expect("chained"))
        .collect();
    assert_eq!(links[0].prev_hash, chain::to_hex(&chain::GENESIS));
    for pair in links.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each links to the one before"
        );
    }
    assert_eq!(links[6].hash, chain::to_hex(&head.last_hash));
    let latest = store
        .latest_audit_checkpoint()
        .await
        .expect("read")
        .expect("one");
    assert_eq!((latest.id, latest.body.last_id), (first, 6));
    assert!(k.public_key().verifies(&latest), "stored as signed");
    assert_eq!(
        verify(store, &k).await,
        Ok(Summary {
            records: 7,
            legacy: 0,
            last_id: 7,
            checkpoints: 1,
            signed_through: 6
        })
    );
    let other = key();
    assert_eq!(
        verify(store, &other).await,
        Err(Problem::BadSignature { checkpoint: first })
    );
}

pub async fn concurrent_appenders_do_not_fork_the_chain(store: &dyn Store) {
    let singles = |w: i64| async move {
        for i in 0..10 {
            store
                .append_audit(&event(w * 100 + i, "user:ann", Outcome::Allow))
                .await
                .expect("append");
        }
    };
    let batches = |w: i64| async move {
        for i in 0..5 {
            let batch: Vec<_> = (0..4)
                .map(|j| event(w * 100 + i * 10 + j, "gateway:gw", Outcome::Allow))
                .collect();
            store.append_audit_batch(&batch).await.expect("batch");
        }
    };
    tokio::join!(singles(1), singles(2), singles(3), batches(4), batches(5));
    let s = verify(store, &key()).await.expect("one unbroken chain");
    assert_eq!((s.records, s.last_id), (70, 70));
}

pub async fn filters_select_records(store: &dyn Store) {
    let events: Vec<_> = (0..20)
        .map(|i| {
            let outcome = if i % 3 == 0 {
                Outcome::Deny
            } else {
                Outcome::Allow
            };
            event(i, if i < 10 { "user:ann" } else { "user:bob" }, outcome)
        })
        .collect();
    store.append_audit_batch(&events).await.expect("batch");
    let ids = |f: AuditFilter| async move {
        let limit = if f.limit == 0 { 100 } else { f.limit };
        store
            .audit_query(&AuditFilter { limit, ..f })
            .await
            .expect("query")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let ann_denied = AuditFilter {
        actor: Some("user:ann".into()),
        outcome: Some(Outcome::Deny),
        ..AuditFilter::default()
    };
    assert_eq!(ids(ann_denied).await, [1, 4, 7, 10]);
    let logins_in_window = AuditFilter {
        action: Some("login".into()),
        since: Some(NOW + 4),
        until: Some(NOW + 10),
        ..AuditFilter::default()
    };
    assert_eq!(
        ids(logins_in_window).await,
        [5, 7, 9],
        "since inclusive, until exclusive"
    );
    let paged = AuditFilter {
        after: 15,
        limit: 3,
        ..AuditFilter::default()
    };
    assert_eq!(ids(paged).await, [16, 17, 18]);
    let through = AuditFilter {
        after: 15,
        through: Some(17),
        ..AuditFilter::default()
    };
    assert_eq!(ids(through).await, [16, 17]);
    let nobody = AuditFilter {
        actor: Some("user:%".into()),
        ..AuditFilter::default()
    };
    assert!(ids(nobody).await.is_empty(), "no patterns");
}

/// What the attacker does once the triggers are out of the way.
#[derive(Clone, Copy, Debug)]
pub enum Tamper {
    Edit,
    Delete,
    Insert,
    Reorder,
    /// Edit record 5 and recompute every hash after it, and the head.
    Rewrite,
    /// Delete the last two records and move the head back.
    Truncate,
}

/// Ten records and a checkpoint of them, then `how`: verification names
/// the first bad record.
pub async fn tampering_is_named(store: &dyn Store, exec: &Exec, how: Tamper) {
    let k = key();
    let events: Vec<_> = (0..10)
        .map(|i| event(i, "user:ann", Outcome::Allow))
        .collect();
    store.append_audit_batch(&events).await.expect("batch");
    let cp = checkpoint(store, &k).await;
    assert!(verify(store, &k).await.is_ok(), "clean before");
    let expected = match how {
        Tamper::Edit => {
            exec("UPDATE audit_log SET outcome = 'deny' WHERE id = 5".into()).await;
            Problem::Modified { id: 5 }
        }
        Tamper::Delete => {
            exec("DELETE FROM audit_log WHERE id = 5".into()).await;
            Problem::Missing { id: 5 }
        }
        Tamper::Insert => {
            exec("UPDATE audit_log SET id = id + 1000 WHERE id >= 5".into()).await;
            exec("UPDATE audit_log SET id = id - 999 WHERE id > 1000".into()).await;
            exec(
                "INSERT INTO audit_log (id, ts, actor, source_ip, action, resource, outcome, \
                 reason, request_id, count) VALUES (5, 0, 'user:eve', '', 'login', 'x', \
                 'allow', '', '', 1)"
                    .into(),
            )
            .await;
            Problem::Unchained { id: 5 }
        }
        Tamper::Reorder => {
            exec("UPDATE audit_log SET id = -4 WHERE id = 4".into()).await;
            exec("UPDATE audit_log SET id = 4 WHERE id = 5".into()).await;
            exec("UPDATE audit_log SET id = 5 WHERE id = -4".into()).await;
            Problem::BrokenLink { id: 4 }
        }
        Tamper::Rewrite => {
            rewrite_from(store, exec, 5).await;
            Problem::Rewritten {
                checkpoint: cp,
                last_id: 10,
                since: 0,
            }
        }
        Tamper::Truncate => {
            exec("DELETE FROM audit_log WHERE id > 8".into()).await;
            let h8 = store.audit_after(7, 1).await.expect("read")[0]
                .link
                .clone()
                .expect("link");
            exec(format!(
                "UPDATE audit_chain SET last_id = 8, last_hash = '{}'",
                h8.hash
            ))
            .await;
            Problem::Truncated {
                checkpoint: cp,
                last_id: 10,
                end: 8,
            }
        }
    };
    assert_eq!(verify(store, &k).await, Err(expected), "{how:?}");
}

/// The attacker's best effort: change record `from` and recompute the
/// chain after it, so that every link and hash is consistent again.
async fn rewrite_from(store: &dyn Store, exec: &Exec, from: i64) {
    exec(format!(
        "UPDATE audit_log SET outcome = 'deny' WHERE id = {from}"
    ))
    .await;
    let records = store.audit_after(0, 100).await.expect("read");
    let mut prev = chain::GENESIS;
    for r in &records {
        let hash = chain::record_hash(
            &prev,
            &Fields {
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
            },
        );
        exec(format!(
            "UPDATE audit_log SET prev_hash = '{}', hash = '{}' WHERE id = {}",
            chain::to_hex(&prev),
            chain::to_hex(&hash),
            r.id
        ))
        .await;
        prev = hash;
    }
    exec(format!(
        "UPDATE audit_chain SET last_hash = '{}'",
        chain::to_hex(&prev)
    ))
    .await;
}

macro_rules! chain_suite {
    ($make:expr, $exec:expr) => {
        mod chain {
            use super::*;
            use $crate::chain_tests::Tamper;

            #[tokio::test]
            async fn appends_are_chained_and_checkpointed() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::chain_tests::appends_are_chained_and_checkpointed(&store).await;
            }

            #[tokio::test]
            async fn concurrent_appenders_do_not_fork_the_chain() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::chain_tests::concurrent_appenders_do_not_fork_the_chain(&store).await;
            }

            #[tokio::test]
            async fn filters_select_records() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::chain_tests::filters_select_records(&store).await;
            }

            $crate::chain_tests::chain_suite!(@tamper $make, $exec;
                edited: Edit, deleted: Delete, inserted: Insert, reordered: Reorder,
                rewritten: Rewrite, truncated: Truncate);
        }
    };
    (@tamper $make:expr, $exec:expr; $($name:ident: $how:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                let exec = $exec(&store).await;
                $crate::chain_tests::tampering_is_named(&store, &*exec, Tamper::$how).await;
            }
        )*
    };
}
pub(crate) use chain_suite;
