//! The tamper-evident audit log end to end: a controller writes records,
//! the real `umbra admin audit` exports and verifies them, and an attacker
//! with write access to the SQLite file (the append-only triggers dropped,
//! as such an attacker would) edits, deletes, inserts or reorders rows:
//! `verify` names the first bad one. Rewriting the chain is caught by a
//! checkpoint kept off the host.

use std::path::PathBuf;

use serde_json::Value;
use sqlx::sqlite::SqlitePoolOptions;

use crate::support::*;

/// `umbra admin audit ARGS` against `tc` (as a child process: the
/// controller runs on this test's runtime).
async fn audit_cli(tc: &TestController, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(umbra_bin())
        .args(["admin", "audit"])
        .args(args)
        .env("UMBRA_CONTROLLER", &tc.url)
        .env("UMBRA_ADMIN_TOKEN", &tc.admin_token)
        .env("UMBRA_CA_CERT", tc.dir.path().join("ca.pem"))
        .output()
        .await
        .expect("umbra admin audit")
}

fn key_file(tc: &TestController) -> String {
    tc.dir
        .path()
        .join("audit-key.pub")
        .to_string_lossy()
        .into_owned()
}

/// A controller with some history, signed by a checkpoint.
async fn with_history() -> TestController {
    let tc = start().await;
    for name in ["ann", "bob", "cyd"] {
        tc.create_user(name, &["staff"]).await;
    }
    tc.enrollment_token("ann").await;
    let out = audit_cli(&tc, &["checkpoint", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tc
}

/// `verify --json` with the pinned key: Ok(report) or Err(report).
async fn verify(tc: &TestController, extra: &[&str]) -> Result<Value, Value> {
    let key = key_file(tc);
    let mut args = vec!["verify", "--json", "--public-key", &key];
    args.extend_from_slice(extra);
    let out = audit_cli(tc, &args).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verify printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if out.status.success() {
        assert_eq!(report["ok"], true);
        Ok(report)
    } else {
        assert_eq!(report["ok"], false);
        assert!(String::from_utf8_lossy(&out.stderr).contains("verification failed"));
        Err(report)
    }
}

/// The attacker: a connection to the database file, triggers dropped.
async fn attacker(tc: &TestController) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", tc.dir.path().join("umbra.db").display());
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("open the database file");
    for trigger in ["audit_log_no_update", "audit_log_no_delete"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
            .execute(&pool)
            .await
            .expect("drop trigger");
    }
    pool
}

async fn exec(pool: &sqlx::SqlitePool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The id of some record in the middle of the chain.
async fn middle(tc: &TestController) -> i64 {
    let body = tc.admin_get("/api/v1/admin/audit?limit=10000").await;
    let items = body["items"].as_array().expect("items");
    assert!(items.len() >= 6, "enough history: {}", items.len());
    items[items.len() / 2]["id"].as_i64().expect("id")
}

fn failure(report: &Value) -> (&str, i64) {
    (
        report["kind"].as_str().expect("kind"),
        report["record_id"].as_i64().expect("record id"),
    )
}

#[tokio::test]
async fn an_intact_log_verifies_online_and_from_an_export() {
    let tc = with_history().await;
    let report = verify(&tc, &[]).await.expect("intact");
    assert!(report["records"].as_u64().expect("records") >= 6);
    assert!(report["checkpoints"].as_u64().expect("checkpoints") >= 1);
    assert_eq!(report["key_pinned"], true);

    let out = audit_cli(&tc, &["export"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], "umbra-audit-export");
    let key = std::fs::read_to_string(key_file(&tc)).expect("key file");
    assert_eq!(
        lines[0]["public_key"],
        key.trim(),
        "the export names the pinned key"
    );
    let records: Vec<&Value> = lines.iter().filter(|l| l["type"] == "record").collect();
    for pair in records.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "each line links to the one before"
        );
    }
    assert!(lines.iter().any(|l| l["type"] == "checkpoint"));
    assert!(records.iter().any(|r| r["action"] == "user.create"));

    // Off the host: the file alone, no controller.
    let file = tc.dir.path().join("export.jsonl");
    std::fs::write(&file, &text).expect("write export");
    let out = std::process::Command::new(umbra_bin())
        .args(["admin", "audit", "verify", "--public-key"])
        .arg(key_file(&tc))
        .arg("--file")
        .arg(&file)
        .env_remove("UMBRA_CA_CERT")
        .env_remove("UMBRA_ADMIN_TOKEN")
        .output()
        .expect("verify a file");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact"));

    // A key that is not the controller's is refused outright.
    let other = "ab".repeat(32);
    let out = audit_cli(&tc, &["verify", "--public-key", &other]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pinned key"));
}

#[tokio::test]
async fn an_edited_row_is_named() {
    let tc = with_history().await;
    let id = middle(&tc).await;
    let db = attacker(&tc).await;
    exec(
        &db,
        &format!("UPDATE audit_log SET outcome = 'deny' WHERE id = {id}"),
    )
    .await;
    assert_eq!(
        failure(&verify(&tc, &[]).await.expect_err("edited")),
        ("modified", id)
    );
}

#[tokio::test]
async fn a_deleted_row_is_named() {
    let tc = with_history().await;
    let id = middle(&tc).await;
    let db = attacker(&tc).await;
    exec(&db, &format!("DELETE FROM audit_log WHERE id = {id}")).await;
    assert_eq!(
        failure(&verify(&tc, &[]).await.expect_err("deleted")),
        ("deleted", id)
    );
}

#[tokio::test]
async fn an_inserted_row_is_named() {
    let tc = with_history().await;
    let id = middle(&tc).await;
    let db = attacker(&tc).await;
    exec(
        &db,
        &format!("UPDATE audit_log SET id = id + 100000 WHERE id >= {id}"),
    )
    .await;
    exec(
        &db,
        "UPDATE audit_log SET id = id - 99999 WHERE id > 100000",
    )
    .await;
    // The head moves too: otherwise the controller's next append collides
    // with the shifted last id and fails closed (503).
    exec(&db, "UPDATE audit_chain SET last_id = last_id + 1").await;
    // Copied from its neighbour, hash fields and all.
    exec(
        &db,
        &format!(
            "INSERT INTO audit_log (id, ts, actor, source_ip, action, resource, outcome, reason, \
             request_id, count, hash_version, prev_hash, hash) \
             SELECT {id}, ts, 'user:eve', source_ip, action, resource, outcome, reason, \
             request_id, count, hash_version, prev_hash, hash FROM audit_log WHERE id = {}",
            id + 1
        ),
    )
    .await;
    assert_eq!(
        failure(&verify(&tc, &[]).await.expect_err("inserted")),
        ("modified", id)
    );
}

#[tokio::test]
async fn a_reordered_row_is_named() {
    let tc = with_history().await;
    let id = middle(&tc).await;
    let db = attacker(&tc).await;
    exec(
        &db,
        &format!("UPDATE audit_log SET id = -1 WHERE id = {id}"),
    )
    .await;
    exec(
        &db,
        &format!("UPDATE audit_log SET id = {id} WHERE id = {}", id + 1),
    )
    .await;
    exec(
        &db,
        &format!("UPDATE audit_log SET id = {} WHERE id = -1", id + 1),
    )
    .await;
    assert_eq!(
        failure(&verify(&tc, &[]).await.expect_err("reordered")),
        ("broken_link", id)
    );
}

#[tokio::test]
async fn a_rewritten_history_is_caught_by_its_checkpoints_or_an_anchor_off_the_host() {
    let tc = with_history().await;
    // Kept off the host before the attack.
    let out = audit_cli(&tc, &["export"]).await;
    assert!(out.status.success());
    let anchor: PathBuf = tc.dir.path().join("anchor.jsonl");
    std::fs::write(&anchor, &out.stdout).expect("write anchor");
    let id = middle(&tc).await;
    let db = attacker(&tc).await;
    rewrite(&db, id).await;
    let report = verify(&tc, &[]).await.expect_err("rewritten");
    assert_eq!(report["kind"], "rewritten", "{report}");

    // Deleting the checkpoints too is the limit of the log on its own…
    exec(&db, "DROP TRIGGER audit_checkpoints_no_delete").await;
    exec(&db, "DELETE FROM audit_checkpoints").await;
    verify(&tc, &[])
        .await
        .expect("undetectable from the host alone");
    // …which is why checkpoints are exported.
    let report = verify(&tc, &["--anchor", &anchor.to_string_lossy()])
        .await
        .expect_err("the anchor disagrees");
    assert_eq!(report["kind"], "rewritten", "{report}");
}

/// Dropping the tail and moving the chain's head back is caught against
/// the last checkpoint. (The controller goes on appending from the moved
/// head, so the checkpoint finds either fewer records than it signed, or
/// different ones.)
#[tokio::test]
async fn a_truncated_tail_is_caught_against_the_last_checkpoint() {
    let tc = with_history().await;
    let db = attacker(&tc).await;
    let signed: i64 = sqlx::query_scalar("SELECT MAX(last_id) FROM audit_checkpoints")
        .fetch_one(&db)
        .await
        .expect("checkpoint");
    let keep = signed - 3;
    let hash: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT hash FROM audit_log WHERE id = {keep}"
    )))
    .fetch_one(&db)
    .await
    .expect("hash");
    exec(&db, &format!("DELETE FROM audit_log WHERE id > {keep}")).await;
    exec(
        &db,
        &format!("UPDATE audit_chain SET last_id = {keep}, last_hash = '{hash}'"),
    )
    .await;
    let report = verify(&tc, &[]).await.expect_err("truncated");
    assert!(
        ["truncated", "rewritten"].contains(&report["kind"].as_str().unwrap_or("")),
        "{report}"
    );
    assert!(report["checkpoint_id"].is_i64(), "{report}");
}

/// The attacker's best effort: edit a record, then recompute every hash
/// after it and the chain's head, so the chain is consistent again.
async fn rewrite(db: &sqlx::SqlitePool, id: i64) {
    use umbra_store::chain::{self, Fields};
    exec(
        db,
        &format!("UPDATE audit_log SET outcome = 'deny' WHERE id = {id}"),
    )
    .await;
    // id, ts, actor, source_ip, action, resource, outcome, reason,
    // request_id, count
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, ts, actor, source_ip, action, resource, outcome, reason, request_id, \
             count FROM audit_log WHERE hash IS NOT NULL ORDER BY id",
    )
    .fetch_all(db)
    .await
    .expect("read");
    let mut prev = chain::GENESIS;
    for r in &rows {
        let hash = chain::record_hash(
            &prev,
            &Fields {
                id: r.0,
                ts: r.1,
                actor: &r.2,
                source_ip: &r.3,
                action: &r.4,
                resource: &r.5,
                outcome: &r.6,
                reason: &r.7,
                request_id: &r.8,
                count: r.9,
            },
        );
        exec(
            db,
            &format!(
                "UPDATE audit_log SET prev_hash = '{}', hash = '{}' WHERE id = {}",
                chain::to_hex(&prev),
                chain::to_hex(&hash),
                r.0
            ),
        )
        .await;
        prev = hash;
    }
    exec(
        db,
        &format!(
            "UPDATE audit_chain SET last_hash = '{}'",
            chain::to_hex(&prev)
        ),
    )
    .await;
}
