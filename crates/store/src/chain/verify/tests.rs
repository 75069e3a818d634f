use super::*;
use crate::chain::checkpoint::{CheckpointBody, SigningKey};
use crate::chain::{Link, to_hex};

fn key() -> SigningKey {
    SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("gen")).expect("key")
}

fn record(id: i64) -> AuditRecord {
    AuditRecord {
        id,
        ts: 1_700_000_000 + id,
        actor: "user:ann".into(),
        source_ip: "10.0.0.1".into(),
        action: "login".into(),
        resource: format!("service:s{id}"),
        outcome: "allow".into(),
        reason: String::new(),
        request_id: format!("r{id}"),
        count: 1,
        link: None,
    }
}

/// `legacy` unchained records, then `n` chained ones.
fn log(legacy: i64, n: i64) -> Vec<AuditRecord> {
    let mut prev = GENESIS;
    (1..=legacy + n)
        .map(|id| {
            let mut r = record(id);
            if id > legacy {
                let hash = record_hash(&prev, &fields(&r));
                r.link = Some(Link {
                    version: HASH_VERSION,
                    prev_hash: to_hex(&prev),
                    hash: to_hex(&hash),
                });
                prev = hash;
            }
            r
        })
        .collect()
}

fn rehash(records: &mut [AuditRecord], from: usize) {
    for i in from..records.len() {
        let prev = if i == 0 {
            GENESIS
        } else {
            from_hex(&records[i - 1].link.as_ref().expect("chained").hash).expect("hex")
        };
        let hash = record_hash(&prev, &fields(&records[i]));
        let link = records[i].link.as_mut().expect("chained");
        link.prev_hash = to_hex(&prev);
        link.hash = to_hex(&hash);
    }
}

fn checkpoint_at(
    key: &SigningKey,
    records: &[AuditRecord],
    legacy: i64,
    id: i64,
    cp_id: i64,
) -> Checkpoint {
    let r = records.iter().find(|r| r.id == id).expect("record");
    let mut cp = key.sign(CheckpointBody {
        ts: r.ts,
        genesis_id: legacy + 1,
        legacy_count: legacy,
        last_id: id,
        last_hash: from_hex(&r.link.as_ref().expect("chained").hash).expect("hex"),
    });
    cp.id = cp_id;
    cp
}

/// Feeds records, with each checkpoint after the record it covers.
fn run(key: &SigningKey, records: &[AuditRecord], cps: &[Checkpoint]) -> Result<Summary, Problem> {
    let mut v = Verifier::new(key.public_key().clone());
    let mut cps = cps.to_vec();
    cps.sort_by_key(|c| (c.body.last_id, c.id));
    let mut next = cps.into_iter().peekable();
    for r in records {
        v.record(r)?;
        while let Some(cp) = next.next_if(|c| c.body.last_id <= r.id) {
            v.checkpoint(cp)?;
        }
    }
    for cp in next {
        v.checkpoint(cp)?;
    }
    v.finish()
}

#[test]
fn an_intact_log_verifies() {
    let k = key();
    let records = log(2, 10);
    let cps = [
        checkpoint_at(&k, &records, 2, 6, 1),
        checkpoint_at(&k, &records, 2, 12, 2),
    ];
    let s = run(&k, &records, &cps).expect("clean");
    assert_eq!(
        s,
        Summary {
            records: 10,
            legacy: 2,
            last_id: 12,
            checkpoints: 2,
            signed_through: 12
        }
    );
    let empty = run(&k, &[], &[]).expect("empty log");
    assert_eq!(empty.last_id, 0);
}

#[test]
fn an_edited_record_is_named() {
    let k = key();
    let mut records = log(0, 10);
    records[4].reason = "nothing to see".into();
    assert_eq!(run(&k, &records, &[]), Err(Problem::Modified { id: 5 }));
    let mut records = log(0, 10);
    records[4].count = 2;
    assert_eq!(run(&k, &records, &[]), Err(Problem::Modified { id: 5 }));
}

#[test]
fn a_deleted_record_is_named() {
    let k = key();
    let mut records = log(0, 10);
    records.remove(4);
    assert_eq!(run(&k, &records, &[]), Err(Problem::Missing { id: 5 }));
    // The first chained record, too (its successor no longer starts the chain).
    let mut records = log(0, 3);
    records.remove(0);
    assert_eq!(run(&k, &records, &[]), Err(Problem::BrokenLink { id: 2 }));
}

#[test]
fn inserted_and_reordered_records_are_named() {
    let k = key();
    // Inserted with the later ids shifted up (ids are unique): a forged
    // row is named; one hashed onto the chain names its successor.
    let mut records = log(0, 10);
    let mut forged = record(5);
    forged.reason = "forged".into();
    forged.link = records[4].link.clone();
    records.insert(4, forged);
    for (i, r) in records.iter_mut().enumerate().skip(5) {
        r.id = i as i64 + 1;
    }
    assert_eq!(run(&k, &records, &[]), Err(Problem::Modified { id: 5 }));
    rehash(&mut records[..5], 4);
    assert_eq!(run(&k, &records, &[]), Err(Problem::BrokenLink { id: 6 }));
    // An unchained record after the chain started.
    let mut records = log(0, 3);
    let mut extra = record(4);
    extra.link = None;
    records.push(extra);
    assert_eq!(run(&k, &records, &[]), Err(Problem::Unchained { id: 4 }));
    // Two records swapped (ids with them, or without).
    let mut records = log(0, 10);
    records.swap(3, 4);
    assert_eq!(run(&k, &records, &[]), Err(Problem::Missing { id: 4 }));
    let (a, b) = (records[3].id, records[4].id);
    records[3].id = b;
    records[4].id = a;
    assert_eq!(run(&k, &records, &[]), Err(Problem::BrokenLink { id: 4 }));
}

#[test]
fn a_rewritten_chain_is_caught_by_the_next_checkpoint() {
    let k = key();
    let original = log(0, 10);
    let cps = [
        checkpoint_at(&k, &original, 0, 3, 1),
        checkpoint_at(&k, &original, 0, 8, 2),
    ];
    let mut records = original.clone();
    records[4].outcome = "deny".into();
    rehash(&mut records, 4);
    assert_eq!(
        run(&k, &records, &cps),
        Err(Problem::Rewritten {
            checkpoint: 2,
            last_id: 8,
            since: 3
        })
    );
    // Deleting the checkpoints after the edit is the limit: the log alone
    // cannot show it; an anchor kept off the host still does.
    assert!(run(&k, &records, &cps[..1]).is_ok());
    let mut v = Verifier::new(k.public_key().clone());
    v.anchor(cps[1].clone()).expect("anchor");
    let mut result = Ok(());
    for r in &records {
        result = result.and_then(|()| v.record(r));
    }
    assert_eq!(
        result,
        Err(Problem::Rewritten {
            checkpoint: 2,
            last_id: 8,
            since: 0
        })
    );
}

#[test]
fn truncation_is_caught_against_the_last_checkpoint() {
    let k = key();
    let records = log(0, 10);
    let cps = [checkpoint_at(&k, &records, 0, 9, 1)];
    assert_eq!(
        run(&k, &records[..7], &cps),
        Err(Problem::Truncated {
            checkpoint: 1,
            last_id: 9,
            end: 7
        })
    );
}

#[test]
fn forged_or_foreign_checkpoints_are_refused() {
    let k = key();
    let records = log(0, 5);
    let mut cp = checkpoint_at(&k, &records, 0, 5, 1);
    cp.body.last_id = 4;
    assert_eq!(
        run(&k, &records, &[cp]),
        Err(Problem::BadSignature { checkpoint: 1 })
    );
    let other = key();
    let theirs = checkpoint_at(&other, &records, 0, 5, 2);
    assert_eq!(
        run(&k, &records, &[theirs]),
        Err(Problem::BadSignature { checkpoint: 2 })
    );
}

#[test]
fn records_from_before_the_chain_are_counted() {
    let k = key();
    let original = log(3, 4);
    let cps = [checkpoint_at(&k, &original, 3, 7, 1)];
    let mut records = original.clone();
    records.remove(1);
    assert_eq!(
        run(&k, &records, &cps),
        Err(Problem::LegacyChanged {
            checkpoint: 1,
            signed: 3,
            found: 2
        })
    );
    // Unprotected content, documented: an edit there goes unnoticed.
    let mut records = original;
    records[1].reason = "edited".into();
    assert!(run(&k, &records, &cps).is_ok());
}
