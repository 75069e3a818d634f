//! The PostgreSQL backend, for several controllers sharing one state.
//!
//! The same queries as SQLite (see `shared`), on a connection pool. Every
//! cross-controller rule (single-use TOTP steps, lockout counters, token
//! use, revocation) is a single conditional statement or a transaction, so
//! it holds whichever controller a request reaches. Transactions use
//! PostgreSQL's default READ COMMITTED: the compare-and-set updates take row
//! locks, which is what their correctness rests on.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use umbra_proto::api::{DeviceStatus, UserStatus};

use crate::chain::checkpoint::Checkpoint;
use crate::model::*;
use crate::shared::*;
use crate::{Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const BEGIN_WRITE: &str = "BEGIN";

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.status, u.password_hash, u.totp_secret, \
    u.totp_last_step, u.failed_logins, u.locked_until, u.created_at, u.updated_at, \
    (SELECT string_agg(grp, chr(31) ORDER BY grp) FROM user_groups g \
     WHERE g.user_id = u.id) AS groups";

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and migrates the database. The
    /// migrations take an advisory lock, so controllers starting together
    /// do not race.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
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

store_impl!(PgStore, Postgres, PgRow);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgtest::{TempDatabase, temp_database};

    async fn fresh() -> Option<(PgStore, TempDatabase)> {
        let db = temp_database().await?;
        let store = PgStore::open(&db.url, 4).await.expect("open");
        Some((store, db))
    }

    crate::conformance::suite!(fresh());
    crate::chain_tests::chain_suite!(fresh(), attacker);

    /// Someone with write access to the database (the table's owner): the
    /// append-only triggers only stop mistakes, so they go first.
    async fn attacker(store: &PgStore) -> Box<crate::chain_tests::Exec> {
        let pool = store.pool.clone();
        sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
            .execute(&pool)
            .await
            .expect("disable triggers");
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
    async fn audit_log_refuses_edits() {
        let Some((store, _db)) = fresh().await else {
            return;
        };
        crate::conformance::audit_appends_in_order(&store).await;
        for sql in [
            "UPDATE audit_log SET outcome = 'allow'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ] {
            let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&store.pool)
                .await;
            assert!(r.is_err(), "{sql} must be refused");
        }
        assert_eq!(store.audit_after(0, 10).await.expect("read").len(), 3);
    }
}
