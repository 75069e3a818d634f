//! The embedded SQLite backend.
//!
//! WAL journal, `synchronous=FULL` on every connection: a write acknowledged
//! to a caller (an audit record, a revocation) survives power loss. Writes
//! that span statements run in `BEGIN IMMEDIATE` transactions, which take the
//! write lock up front: a deferred transaction that reads first and writes
//! later can fail with SQLITE_BUSY half way instead of waiting its turn.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use umbra_proto::api::{DeviceStatus, UserStatus};

use crate::chain::checkpoint::Checkpoint;
use crate::model::*;
use crate::shared::*;
use crate::{Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.status, u.password_hash, u.totp_secret, \
    u.totp_last_step, u.failed_logins, u.locked_until, u.created_at, u.updated_at, \
    (SELECT group_concat(grp, char(31)) FROM (SELECT grp FROM user_groups g \
     WHERE g.user_id = u.id ORDER BY grp)) AS groups";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(backend)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { pool })
    }
}

store_impl!(SqliteStore, Sqlite, SqliteRow);

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("umbra.db"))
            .await
            .expect("open");
        (store, dir)
    }

    async fn fresh_some() -> Option<(SqliteStore, tempfile::TempDir)> {
        Some(fresh().await)
    }

    crate::conformance::suite!(fresh_some());
    crate::chain_tests::chain_suite!(fresh_some(), attacker);

    /// Someone with write access to the database file: the append-only
    /// triggers only stop mistakes, so they go first.
    async fn attacker(store: &SqliteStore) -> Box<crate::chain_tests::Exec> {
        let pool = store.pool.clone();
        for trigger in ["audit_log_no_update", "audit_log_no_delete"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
                .execute(&pool)
                .await
                .expect("drop trigger");
        }
        Box::new(move |sql: String| {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect("the attacker's SQL");
            })
        })
    }

    #[tokio::test]
    async fn audit_log_refuses_edits_and_survives_reopen() {
        let (store, dir) = fresh().await;
        crate::conformance::audit_appends_in_order(&store).await;
        let edit = sqlx::query("UPDATE audit_log SET outcome = 'allow' WHERE id = 1")
            .execute(&store.pool)
            .await;
        assert!(edit.is_err(), "update must be refused");
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(&store.pool)
            .await;
        assert!(delete.is_err(), "delete must be refused");
        store.pool.close().await;
        let again = SqliteStore::open(&dir.path().join("umbra.db"))
            .await
            .expect("reopen");
        assert_eq!(again.audit_after(0, 10).await.expect("read").len(), 3);
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&again.pool)
            .await
            .expect("pragma")
            .try_get(0)
            .expect("col");
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&again.pool)
            .await
            .expect("pragma")
            .try_get(0)
            .expect("col");
        assert_eq!(sync, 2, "synchronous=FULL");
    }
}
