//! Throw-away PostgreSQL databases for tests (feature `test-support`).
//!
//! Connects to the server named by `UMBRA_TEST_POSTGRES_URL` (default: the
//! local socket as the current OS user), creates a uniquely named database
//! and drops it when the guard goes. Without a server, tests skip with a
//! message, except with `CI=true`, where they fail: CI must have PostgreSQL.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

/// A database that exists for as long as this guard does.
#[derive(Debug)]
pub struct TempDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

/// `UMBRA_TEST_POSTGRES_URL`, or the local socket as the login user (`USER`,
/// else `root`, the role `.ci/run` creates).
fn admin_url() -> String {
    std::env::var("UMBRA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "root".into());
        format!("postgres:///postgres?host=/var/run/postgresql&user={user}")
    })
}

/// Creates a fresh database, or `None` (after saying why) when no server is
/// reachable outside CI. Panics under `CI=true` when it cannot.
pub async fn temp_database() -> Option<TempDatabase> {
    let admin_url = admin_url();
    let mut conn = match PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required in CI but {admin_url} is unreachable: {e}");
            }
            eprintln!("skipping: PostgreSQL unreachable at {admin_url}: {e}");
            return None;
        }
    };
    let name = format!("umbra_test_{}", uuid_like());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("CREATE DATABASE");
    PgConnectOptions::from_str(&admin_url).expect("UMBRA_TEST_POSTGRES_URL is a postgres:// URL");
    let url = options_to_url(&admin_url, &name);
    Some(TempDatabase {
        admin_url,
        name,
        url,
    })
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos, std::process::id())
}

/// The admin URL with its database replaced by `name`.
fn options_to_url(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_swapped_into_the_url() {
        assert_eq!(
            super::options_to_url("postgres:///postgres?host=/var/run/postgresql", "x"),
            "postgres:///x?host=/var/run/postgresql"
        );
        assert_eq!(
            super::options_to_url("postgres://u:p@h:5432/db", "x"),
            "postgres://u:p@h:5432/x"
        );
    }
}
