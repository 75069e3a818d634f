//! What the SQL backends share: one body of queries, written once with
//! `$N` placeholders (which SQLite and PostgreSQL both accept) and expanded
//! for each backend by [`store_impl!`]. The dialects differ only in the
//! few constants each backend module defines: `USER_COLUMNS` (group
//! aggregation) and `BEGIN_WRITE` (how a write transaction starts).

use umbra_proto::api::{DeviceStatus, Role, UserStatus};

use crate::model::AdminTokenKind;
use crate::{Result, StoreError};

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict(db.message().to_owned());
    }
    StoreError::Backend(Box::new(e))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        backend(e)
    }
}

pub(crate) fn role(s: &str) -> Result<Role> {
    match s {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        other => Err(StoreError::Corrupt(format!("user role {other:?}"))),
    }
}

pub(crate) fn user_status(s: &str) -> Result<UserStatus> {
    match s {
        "active" => Ok(UserStatus::Active),
        "suspended" => Ok(UserStatus::Suspended),
        other => Err(StoreError::Corrupt(format!("user status {other:?}"))),
    }
}

pub(crate) const fn user_status_str(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Suspended => "suspended",
    }
}

pub(crate) fn device_status(s: &str) -> Result<DeviceStatus> {
    match s {
        "pending" => Ok(DeviceStatus::Pending),
        "approved" => Ok(DeviceStatus::Approved),
        "revoked" => Ok(DeviceStatus::Revoked),
        other => Err(StoreError::Corrupt(format!("device status {other:?}"))),
    }
}

pub(crate) const fn device_status_str(s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Pending => "pending",
        DeviceStatus::Approved => "approved",
        DeviceStatus::Revoked => "revoked",
    }
}

pub(crate) fn admin_kind(s: &str) -> Result<AdminTokenKind> {
    match s {
        "bootstrap" => Ok(AdminTokenKind::Bootstrap),
        "api" => Ok(AdminTokenKind::Api),
        other => Err(StoreError::Corrupt(format!("admin token kind {other:?}"))),
    }
}

pub(crate) fn gateway_status(s: &str) -> Result<crate::model::GatewayStatus> {
    use crate::model::GatewayStatus;
    match s {
        "pending" => Ok(GatewayStatus::Pending),
        "active" => Ok(GatewayStatus::Active),
        "revoked" => Ok(GatewayStatus::Revoked),
        other => Err(StoreError::Corrupt(format!("gateway status {other:?}"))),
    }
}

pub(crate) fn to_json(names: &[String]) -> String {
    serde_json::Value::from(names.to_vec()).to_string()
}

pub(crate) fn from_json(text: String) -> Result<Vec<String>> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("name list: {e}")))
}

pub(crate) const SESSION_SELECT: &str =
    "SELECT s.*, u.name AS user_name FROM sessions s JOIN users u ON u.id = s.user_id";
pub(crate) const BROWSER_SESSION_SELECT: &str = "SELECT s.id, s.user_id, s.source_ip, s.risk, \
     s.created_at, s.expires_at, s.revoked_at, s.revoked_reason, s.mfa_at, u.name AS user_name \
     FROM browser_sessions s JOIN users u ON u.id = s.user_id";
pub(crate) const DEVICE_SELECT: &str =
    "SELECT d.*, u.name AS user_name FROM devices d JOIN users u ON u.id = d.user_id";

#[derive(Clone, Copy)]
pub(crate) enum SessionsBy {
    User,
    Device,
    Certificate,
}

/// Expands the [`Store`](crate::Store) implementation for one backend:
/// `store_impl!(StoreType, DatabaseType, RowType)`. The invoking module
/// provides `USER_COLUMNS` and `BEGIN_WRITE`.
macro_rules! store_impl {
    ($store:ident, $db:ty, $row:ty) => {
        impl $store {
            async fn write_tx(&self) -> Result<Transaction<'static, $db>> {
                Ok(self.pool.begin_with(BEGIN_WRITE).await?)
            }
        }

fn user_row(row: &$row) -> Result<UserRecord> {
    let groups: Option<String> = row.try_get("groups")?;
    let failed: i64 = row.try_get("failed_logins")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role(row.try_get("role")?)?,
        status: user_status(row.try_get("status")?)?,
        groups: groups
            .map(|g| g.split('\u{1f}').map(str::to_owned).collect())
            .unwrap_or_default(),
        password_hash: row.try_get("password_hash")?,
        sealed_totp_secret: row.try_get("totp_secret")?,
        totp_last_step: row.try_get("totp_last_step")?,
        failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
        locked_until: row.try_get("locked_until")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn device_row(row: &$row) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        status: device_status(row.try_get("status")?)?,
        hostname: row.try_get("hostname")?,
        posture: row.try_get("posture")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn cert_row(row: &$row) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        serial: row.try_get("serial")?,
        device_id: row.try_get("device_id")?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
    })
}

fn session_row(row: &$row) -> Result<SessionRecord> {
    let risk: i64 = row.try_get("risk")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        kind: SessionKind::Device,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        device_id: row.try_get("device_id")?,
        cert_serial: row.try_get("cert_serial")?,
        source_ip: row.try_get("source_ip")?,
        risk: u8::try_from(risk).map_err(|_| StoreError::Corrupt(format!("risk {risk}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
        mfa_at: row.try_get("mfa_at")?,
        verdict: {
            let at: Option<i64> = row.try_get("evaluated_at")?;
            let current: Option<i64> = row.try_get("current_risk")?;
            match (at, current) {
                (Some(at), Some(r)) => Some(StoredVerdict {
                    risk: u8::try_from(r)
                        .ok()
                        .filter(|r| *r <= 100)
                        .ok_or_else(|| StoreError::Corrupt(format!("current_risk {r}")))?,
                    at,
                    step_up_at: row.try_get("step_up_at")?,
                }),
                _ => None,
            }
        },
    })
}

/// Device and browser sessions (two tables) as one list, oldest first.
fn both_kinds(devices: &[$row], browsers: &[$row]) -> Result<Vec<SessionRecord>> {
    let mut out = devices
        .iter()
        .map(session_row)
        .chain(browsers.iter().map(browser_session_row))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

fn browser_session_row(row: &$row) -> Result<SessionRecord> {
    let risk: i64 = row.try_get("risk")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        kind: SessionKind::Browser,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        device_id: String::new(),
        cert_serial: String::new(),
        source_ip: row.try_get("source_ip")?,
        risk: u8::try_from(risk).map_err(|_| StoreError::Corrupt(format!("risk {risk}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
        mfa_at: row.try_get("mfa_at")?,
        // Browser sessions are not re-evaluated (no device to judge).
        verdict: None,
    })
}

fn admin_row(row: &$row) -> Result<AdminTokenRecord> {
    Ok(AdminTokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: admin_kind(row.try_get("kind")?)?,
        secret_hash: row.try_get("secret_hash")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn audit_row(row: &$row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        ts: row.try_get("ts")?,
        actor: row.try_get("actor")?,
        source_ip: row.try_get("source_ip")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        request_id: row.try_get("request_id")?,
        count: row.try_get("count")?,
        link: crate::audit::link(
            row.try_get("hash_version")?,
            row.try_get("prev_hash")?,
            row.try_get("hash")?,
        ),
    })
}

crate::audit::audit_impl!($store, $db, $row);


/// Revokes every live session matching `column = value` inside `tx`.
async fn revoke_sessions_where(
    tx: &mut Transaction<'static, $db>,
    by: SessionsBy,
    value: &str,
    now: i64,
    reason: &str,
) -> Result<u64> {
    let sql = match by {
        SessionsBy::User => {
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL"
        }
        SessionsBy::Device => {
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE device_id = $3 AND revoked_at IS NULL"
        }
        SessionsBy::Certificate => {
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE cert_serial = $3 AND revoked_at IS NULL"
        }
    };
    let done = sqlx::query(sql)
        .bind(now)
        .bind(reason)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}


#[async_trait]
impl Store for $store {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn secret(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn insert_secret_if_absent(&self, name: &str, value: &str, now: i64) -> Result<String> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let stored: String = sqlx::query("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get("value")?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    kid: r.try_get("kid")?,
                    sealed_key: r.try_get("sealed_key")?,
                    created_at: r.try_get("created_at")?,
                    retire_at: r.try_get("retire_at")?,
                })
            })
            .collect()
    }

    async fn insert_first_signing_key(&self, k: &SigningKeyRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, sealed_key, created_at, retire_at) \
             SELECT $1, $2, $3, NULL WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(&k.kid)
        .bind(&k.sealed_key)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_signing_key(&self, k: &SigningKeyRecord, retire_at: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE signing_keys SET retire_at = $1 WHERE retire_at IS NULL")
            .bind(retire_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, sealed_key, created_at, retire_at) VALUES ($1, $2, $3, NULL)")
            .bind(&k.kid)
            .bind(&k.sealed_key)
            .bind(k.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO users (id, name, role, status, password_hash, totp_secret, created_at, updated_at) \
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $7)",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(&user.sealed_totp_secret)
        .bind(user.now)
        .bind(user.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match backend(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("user {:?}", user.name)),
            other => other,
        })?;
        for group in &user.groups {
            sqlx::query(
                "INSERT INTO user_groups (user_id, grp) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&user.id)
            .bind(group)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let sql = const_format(USER_COLUMNS, "WHERE u.name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        let sql = const_format(USER_COLUMNS, "WHERE u.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let sql = const_format(USER_COLUMNS, "ORDER BY u.name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_row).collect()
    }

    async fn set_user_status(&self, id: &str, status: UserStatus, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE users SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(user_status_str(status))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if status == UserStatus::Suspended {
            revoke_sessions_where(&mut tx, SessionsBy::User, id, now, "user suspended").await?;
            sqlx::query(
                "UPDATE browser_sessions SET revoked_at = $1, revoked_reason = $2 \
                 WHERE user_id = $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind("user suspended")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_login_failure(
        &self,
        id: &str,
        now: i64,
        threshold: u32,
        lock_secs: i64,
    ) -> Result<LockState> {
        // One statement: concurrent failures (even on several controllers)
        // each count, and the lock is set by whichever reaches the threshold.
        let row = sqlx::query(
            "UPDATE users SET \
               failed_logins = CASE WHEN locked_until IS NOT NULL AND locked_until <= $1 \
                                    THEN 1 ELSE failed_logins + 1 END, \
               locked_until = CASE \
                 WHEN locked_until IS NOT NULL AND locked_until <= $1 THEN \
                   CASE WHEN 1 >= $2 THEN $1 + $3 ELSE NULL END \
                 WHEN locked_until IS NOT NULL THEN locked_until \
                 WHEN failed_logins + 1 >= $2 THEN $1 + $3 \
                 ELSE NULL END, \
               updated_at = $1 \
             WHERE id = $4 RETURNING failed_logins, locked_until",
        )
        .bind(now)
        .bind(i64::from(threshold))
        .bind(lock_secs)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let failed: i64 = row.try_get("failed_logins")?;
        Ok(LockState {
            failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
            locked_until: row.try_get("locked_until")?,
        })
    }

    async fn unlock_user(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 \
             AND (totp_last_step IS NULL OR totp_last_step < $3)",
        )
        .bind(step)
        .bind(id)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reset_totp(&self, id: &str, sealed_secret: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_last_step = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(sealed_secret)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_recovery_codes(&self, user_id: &str, hashes: &[String], now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for hash in hashes {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn consume_recovery_code(&self, user_id: &str, hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recovery_codes_left(&self, user_id: &str) -> Result<u32> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_hash, user_id, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.token_hash)
        .bind(&t.user_id)
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enrollment_token(&self, token_hash: &str) -> Result<Option<EnrollmentTokenRecord>> {
        let row = sqlx::query(
            "SELECT id, user_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(EnrollmentTokenRecord {
                id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                expires_at: r.try_get("expires_at")?,
                used_at: r.try_get("used_at")?,
            })
        })
        .transpose()
    }

    async fn enroll_device(
        &self,
        token_hash: &str,
        now: i64,
        device: &NewDevice,
        cert: &CertificateRecord,
    ) -> Result<EnrollOutcome> {
        let mut tx = self.write_tx().await?;
        // The compare-and-set comes first: it is what makes the token single
        // use, even with two controllers racing on one database.
        let used = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = $1, device_id = $2 \
             WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $4 AND user_id = $5",
        )
        .bind(now)
        .bind(&device.id)
        .bind(token_hash)
        .bind(now)
        .bind(&device.user_id)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            let row = sqlx::query(
                "SELECT expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            tx.rollback().await?;
            return Ok(match row {
                None => EnrollOutcome::TokenUnknown,
                Some(r) => {
                    let used_at: Option<i64> = r.try_get("used_at")?;
                    if used_at.is_some() {
                        EnrollOutcome::TokenUsed
                    } else {
                        EnrollOutcome::TokenExpired
                    }
                }
            });
        }
        sqlx::query(
            "INSERT INTO devices (id, user_id, status, hostname, posture, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&device.id)
        .bind(&device.user_id)
        .bind(device_status_str(device.status))
        .bind(&device.hostname)
        .bind(&device.posture)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_certificate(&mut tx, cert).await?;
        tx.commit().await?;
        Ok(EnrollOutcome::Enrolled)
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        let sql = format!("{DEVICE_SELECT} WHERE d.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_row).transpose()
    }

    async fn list_devices(&self) -> Result<Vec<DeviceRecord>> {
        let sql = format!("{DEVICE_SELECT} ORDER BY d.created_at, d.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_row).collect()
    }

    async fn update_device_posture(&self, id: &str, posture: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE devices SET posture = $2, updated_at = $3 WHERE id = $1 AND status <> 'revoked'",
        )
        .bind(id)
        .bind(posture)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_device_status(&self, id: &str, status: DeviceStatus, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // A revoked device stays revoked: re-approval needs a new enrollment.
        let done = sqlx::query(
            "UPDATE devices SET status = $1, updated_at = $2 WHERE id = $3 AND status <> 'revoked'",
        )
        .bind(device_status_str(status))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 && status == DeviceStatus::Revoked {
            sqlx::query(
                "UPDATE certificates SET revoked_at = $1, revoked_reason = 'device revoked' \
                 WHERE device_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            revoke_sessions_where(&mut tx, SessionsBy::Device, id, now, "device revoked").await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>> {
        let row = sqlx::query("SELECT * FROM certificates WHERE serial = $1")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cert_row).transpose()
    }

    async fn add_renewed_certificate(&self, old_serial: &str, c: &CertificateRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO certificates (serial, device_id, not_before, not_after, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS ( \
               SELECT 1 FROM certificates o JOIN devices d ON d.id = o.device_id \
               WHERE o.serial = $6 AND o.device_id = $2 AND o.revoked_at IS NULL \
               AND d.status <> 'revoked')",
        )
        .bind(&c.serial)
        .bind(&c.device_id)
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(c.created_at)
        .bind(old_serial)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_certificate(&self, serial: &str, now: i64, reason: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE certificates SET revoked_at = $1, revoked_reason = $2 WHERE serial = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        revoke_sessions_where(
            &mut tx,
            SessionsBy::Certificate,
            serial,
            now,
            "certificate revoked",
        )
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn open_session(&self, s: &SessionRecord) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // First, so it takes the user row's lock: a concurrent suspension
        // either committed before (no row matches) or waits for this one
        // (and then revokes the session it finds).
        let active = sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL \
             WHERE id = $1 AND status = 'active'",
        )
        .bind(&s.user_id)
        .execute(&mut *tx)
        .await?;
        if active.rows_affected() != 1 {
            return Ok(false);
        }
        if s.kind == SessionKind::Browser {
            sqlx::query(
                "INSERT INTO browser_sessions (id, user_id, source_ip, risk, created_at, expires_at, mfa_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.source_ip)
            .bind(i64::from(s.risk))
            .bind(s.created_at)
            .bind(s.expires_at)
            .bind(s.mfa_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        sqlx::query(
            "INSERT INTO sessions (id, user_id, device_id, cert_serial, source_ip, risk, created_at, expires_at, mfa_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(&s.device_id)
        .bind(&s.cert_serial)
        .bind(&s.source_ip)
        .bind(i64::from(s.risk))
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.mfa_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_session_mfa(&self, id: &str, at: i64) -> Result<bool> {
        // Only a live session, and never backwards (a slow step-up that
        // lands after a newer one must not age the session's MFA). The id
        // is in one of the two tables; the other matches no row.
        for table in ["sessions", "browser_sessions"] {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET mfa_at = $1 \
                 WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1 \
                 AND (mfa_at IS NULL OR mfa_at < $1)"
            )))
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(true);
            }
            // Unchanged because it already says `at` or later: still live?
            let live = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM {table} WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2"
            )))
            .bind(id)
            .bind(at)
            .fetch_optional(&self.pool)
            .await?;
            if live.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn record_session_verdict(&self, id: &str, v: &StoredVerdict) -> Result<bool> {
        // Only a live session, and never over a newer verdict (two
        // controllers may evaluate the same session).
        let done = sqlx::query(
            "UPDATE sessions SET current_risk = $1, evaluated_at = $2, step_up_at = $3 \
             WHERE id = $4 AND revoked_at IS NULL AND expires_at > $2 \
             AND (evaluated_at IS NULL OR evaluated_at <= $2)",
        )
        .bind(i64::from(v.risk))
        .bind(v.at)
        .bind(v.step_up_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn block_source(&self, b: &BlockedSourceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO blocked_sources (address, until, reason, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (address) DO UPDATE SET \
             until = CASE WHEN excluded.until > blocked_sources.until THEN excluded.until ELSE blocked_sources.until END, \
             reason = excluded.reason",
        )
        .bind(&b.address)
        .bind(b.until)
        .bind(&b.reason)
        .bind(b.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unblock_source(&self, address: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM blocked_sources WHERE address = $1")
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn blocked_sources(&self, now: i64) -> Result<Vec<BlockedSourceRecord>> {
        sqlx::query("DELETE FROM blocked_sources WHERE until <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT address, until, reason, created_at FROM blocked_sources \
             ORDER BY created_at, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BlockedSourceRecord {
                    address: r.try_get("address")?,
                    until: r.try_get("until")?,
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let sql = format!("{SESSION_SELECT} WHERE s.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return session_row(&row).map(Some);
        }
        let sql = format!("{BROWSER_SESSION_SELECT} WHERE s.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(browser_session_row).transpose()
    }

    async fn list_sessions(&self, live_at: Option<i64>) -> Result<Vec<SessionRecord>> {
        let filter = if live_at.is_some() {
            " WHERE s.revoked_at IS NULL AND s.expires_at > $1"
        } else {
            ""
        };
        let query = |select: &str| {
            let q = sqlx::query(sqlx::AssertSqlSafe(format!("{select}{filter}")));
            match live_at {
                Some(now) => q.bind(now),
                None => q,
            }
        };
        let devices = query(SESSION_SELECT).fetch_all(&self.pool).await?;
        let browsers = query(BROWSER_SESSION_SELECT).fetch_all(&self.pool).await?;
        both_kinds(&devices, &browsers)
    }

    async fn unexpired_sessions_of(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>> {
        const FILTER: &str = " WHERE s.user_id = $1 AND s.expires_at > $2";
        let query = |select: &str| {
            sqlx::query(sqlx::AssertSqlSafe(format!("{select}{FILTER}")))
                .bind(user_id.to_owned())
                .bind(now)
        };
        let devices = query(SESSION_SELECT).fetch_all(&self.pool).await?;
        let browsers = query(BROWSER_SESSION_SELECT).fetch_all(&self.pool).await?;
        both_kinds(&devices, &browsers)
    }

    async fn revoke_session(&self, id: &str, now: i64, reason: &str) -> Result<bool> {
        let mut changed = 0;
        for table in ["sessions", "browser_sessions"] {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET revoked_at = $1, revoked_reason = $2 \
                 WHERE id = $3 AND revoked_at IS NULL"
            )))
            .bind(now)
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
            changed += done.rows_affected();
        }
        Ok(changed == 1)
    }

    async fn create_admin_token(&self, t: &AdminTokenRecord) -> Result<()> {
        insert_admin_token(&self.pool, t).await
    }

    async fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>> {
        let row = sqlx::query("SELECT * FROM admin_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(admin_row).transpose()
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>> {
        let rows = sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(admin_row).collect()
    }

    async fn exchange_bootstrap_token(
        &self,
        bootstrap_id: &str,
        now: i64,
        replacement: &AdminTokenRecord,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE admin_tokens SET used_at = $1 WHERE id = $2 AND kind = 'bootstrap' \
             AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(now)
        .bind(bootstrap_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_admin_token(&mut *tx, replacement).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_admin_token(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_service(&self, svc: &ServiceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO services (name, allow_users, allow_groups, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET \
             allow_users = excluded.allow_users, allow_groups = excluded.allow_groups, \
             updated_at = excluded.updated_at",
        )
        .bind(&svc.name)
        .bind(to_json(&svc.allow_users))
        .bind(to_json(&svc.allow_groups))
        .bind(svc.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_service(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM services WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_services(&self) -> Result<Vec<ServiceRecord>> {
        let rows = sqlx::query("SELECT * FROM services ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ServiceRecord {
                    name: row.try_get("name")?,
                    allow_users: from_json(row.try_get("allow_users")?)?,
                    allow_groups: from_json(row.try_get("allow_groups")?)?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn put_gateway_token(&self, g: &NewGateway) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO gateways (name, status, sans, token_hash, token_expires_at, created_by, \
             created_at, updated_at) VALUES ($1, 'pending', $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (name) DO UPDATE SET sans = excluded.sans, \
             token_hash = excluded.token_hash, token_expires_at = excluded.token_expires_at, \
             updated_at = excluded.updated_at WHERE gateways.status <> 'revoked'",
        )
        .bind(&g.name)
        .bind(to_json(&g.sans))
        .bind(&g.token_hash)
        .bind(g.token_expires_at)
        .bind(&g.created_by)
        .bind(g.now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn gateway_by_token(&self, token_hash: &str) -> Result<Option<GatewayRecord>> {
        sqlx::query("SELECT * FROM gateways WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(gateway_row)
            .transpose()
    }

    async fn enroll_gateway(
        &self,
        token_hash: &str,
        now: i64,
        cert_serial: &str,
        cert_not_after: i64,
    ) -> Result<EnrollOutcome> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT status, token_expires_at FROM gateways WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(EnrollOutcome::TokenUnknown);
        };
        let status: String = row.try_get("status")?;
        let expires: Option<i64> = row.try_get("token_expires_at")?;
        if status == "revoked" {
            return Ok(EnrollOutcome::TokenUsed);
        }
        if expires.is_none_or(|e| e <= now) {
            return Ok(EnrollOutcome::TokenExpired);
        }
        // Conditional on the very state just read: of two concurrent uses
        // of one token (PostgreSQL reads do not lock), one updates a row.
        let done = sqlx::query(
            "UPDATE gateways SET status = 'active', token_hash = NULL, token_expires_at = NULL, \
             cert_serial = $2, cert_not_after = $3, updated_at = $4 \
             WHERE token_hash = $1 AND status <> 'revoked' AND token_expires_at > $4",
        )
        .bind(token_hash)
        .bind(cert_serial)
        .bind(cert_not_after)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(EnrollOutcome::TokenUsed);
        }
        tx.commit().await?;
        Ok(EnrollOutcome::Enrolled)
    }

    async fn gateway(&self, name: &str) -> Result<Option<GatewayRecord>> {
        sqlx::query("SELECT * FROM gateways WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(gateway_row)
            .transpose()
    }

    async fn list_gateways(&self) -> Result<Vec<GatewayRecord>> {
        let rows = sqlx::query("SELECT * FROM gateways ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(gateway_row).collect()
    }

    async fn register_gateway(&self, name: &str, reg: &GatewayRegistration) -> Result<bool> {
        let routes = serde_json::to_string(&reg.routes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE gateways SET url = $2, services = $3, assertion_jwk = $4, updated_at = $5, \
             spa_port = $6 WHERE name = $1 AND status = 'active'",
        )
        .bind(name)
        .bind(&reg.url)
        .bind(routes)
        .bind(&reg.assertion_jwk)
        .bind(reg.now)
        .bind(reg.spa_port.map(i64::from))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_gateway(&self, name: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE gateways SET status = 'revoked', token_hash = NULL, updated_at = $2 \
             WHERE name = $1 AND status <> 'revoked'",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew_gateway_certificate(
        &self,
        name: &str,
        old_serial: &str,
        new_serial: &str,
        not_after: i64,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE gateways SET cert_serial = $3, cert_not_after = $4, updated_at = $5 \
             WHERE name = $1 AND cert_serial = $2 AND status = 'active'",
        )
        .bind(name)
        .bind(old_serial)
        .bind(new_serial)
        .bind(not_after)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_event(&self, ts: i64, kind: &str, payload: &str) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("UPDATE event_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut *tx)
            .await?;
        let seq: i64 = row.try_get("seq")?;
        sqlx::query("INSERT INTO events (seq, ts, kind, payload) VALUES ($1, $2, $3, $4)")
            .bind(seq)
            .bind(ts)
            .bind(kind)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    seq: row.try_get("seq")?,
                    ts: row.try_get("ts")?,
                    kind: row.try_get("kind")?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect()
    }

    async fn event_window(&self) -> Result<EventWindow> {
        let row = sqlx::query(
            "SELECT (SELECT seq FROM event_counter WHERE id = 1) AS last, \
             (SELECT MIN(seq) FROM events) AS first",
        )
        .fetch_one(&self.pool)
        .await?;
        let last: i64 = row.try_get("last")?;
        let first: Option<i64> = row.try_get("first")?;
        Ok(EventWindow {
            first: first.unwrap_or(last + 1),
            last,
        })
    }

    async fn prune_events(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM events WHERE ts < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn revocations(&self, now: i64) -> Result<Revocations> {
        let column = |rows: Vec<$row>| -> Result<Vec<String>> {
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        };
        let sessions = sqlx::query(
            "SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > $1 \
             UNION ALL SELECT id FROM browser_sessions \
             WHERE revoked_at IS NOT NULL AND expires_at > $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let certificates = sqlx::query(
            "SELECT serial FROM certificates WHERE revoked_at IS NOT NULL AND not_after > $1 \
             ORDER BY serial",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let devices = sqlx::query("SELECT id FROM devices WHERE status = 'revoked' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let users = sqlx::query("SELECT name FROM users WHERE status = 'suspended' ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(Revocations {
            sessions: column(sessions)?,
            certificates: column(certificates)?,
            devices: column(devices)?,
            users: column(users)?,
        })
    }

    async fn put_policy(&self, id: &str, raw: &str, now: i64) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let revision = bump_policy_revision(&mut tx).await?;
        sqlx::query(
            "INSERT INTO policies (id, raw, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET raw = excluded.raw, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(raw)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revision)
    }

    async fn delete_policy(&self, id: &str) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let revision = bump_policy_revision(&mut tx).await?;
        let done = sqlx::query("DELETE FROM policies WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(revision))
    }

    async fn put_policy_data(&self, path: &str, document: &str, now: i64) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let revision = bump_policy_revision(&mut tx).await?;
        delete_data_below(&mut tx, path).await?;
        sqlx::query(
            "INSERT INTO policy_data (path, document, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (path) DO UPDATE SET document = excluded.document, \
             updated_at = excluded.updated_at",
        )
        .bind(path)
        .bind(document)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revision)
    }

    async fn delete_policy_data(&self, path: &str) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let revision = bump_policy_revision(&mut tx).await?;
        if delete_data_below(&mut tx, path).await? == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(revision))
    }

    async fn policy_revision(&self) -> Result<i64> {
        let row = sqlx::query("SELECT revision FROM policy_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("revision")?)
    }

    async fn policy_snapshot(&self) -> Result<PolicySnapshot> {
        // The revision first: rows read after it are at least that new, so
        // a poller that sees a later revision rebuilds again.
        let revision = self.policy_revision().await?;
        let policies = sqlx::query("SELECT * FROM policies ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(PolicyRecord {
                    id: row.try_get("id")?,
                    raw: row.try_get("raw")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let data = sqlx::query("SELECT * FROM policy_data ORDER BY path")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(PolicyDataRecord {
                    path: row.try_get("path")?,
                    document: row.try_get("document")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PolicySnapshot {
            revision,
            policies,
            data,
        })
    }

    async fn take_rate_token(
        &self,
        key: &str,
        now: i64,
        per_minute: u32,
        burst: u32,
    ) -> Result<bool> {
        // One statement: refill, test and take, so concurrent attempts on
        // several controllers cannot both take the last token.
        // A controller whose clock is behind refills nothing and does not
        // move the bucket's time back (no negative elapsed time).
        let elapsed =
            "CASE WHEN $2 > rate_limits.updated THEN $2 - rate_limits.updated ELSE 0 END";
        let refilled = format!(
            "CASE WHEN rate_limits.tokens + ({elapsed}) * $3 / 60.0 > $4 \
             THEN $4 ELSE rate_limits.tokens + ({elapsed}) * $3 / 60.0 END"
        );
        let sql = format!(
            "INSERT INTO rate_limits (key, tokens, updated) VALUES ($1, $4 - 1.0, $2) \
             ON CONFLICT (key) DO UPDATE SET tokens = {refilled} - 1.0, \
             updated = CASE WHEN $2 > rate_limits.updated THEN $2 ELSE rate_limits.updated END \
             WHERE {refilled} >= 1.0"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .bind(now)
            .bind(f64::from(per_minute))
            .bind(f64::from(burst))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune_rate_limits(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM rate_limits WHERE updated < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let id = Self::append_chained(&mut tx, std::slice::from_ref(e)).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        Self::append_chained(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_after(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        self.query_audit(&AuditFilter { after, limit, ..AuditFilter::default() }).await
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.query_audit(filter).await
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        self.read_audit_head().await
    }

    async fn append_audit_checkpoint(&self, cp: &Checkpoint) -> Result<i64> {
        self.insert_checkpoint(cp).await
    }

    async fn audit_checkpoints(
        &self,
        after: (i64, i64),
        through: i64,
        max_id: i64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>> {
        self.select_checkpoints(after, through, max_id, limit).await
    }

    async fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.select_latest_checkpoint().await
    }

    async fn audit_by_actor(
        &self,
        actor: &str,
        since: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE actor = $1 AND ts >= $2 \
             ORDER BY ts DESC, id DESC LIMIT $3",
        )
        .bind(actor)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn audit_tally(
        &self,
        since: i64,
        until: i64,
        bucket_secs: i64,
    ) -> Result<Vec<AuditTally>> {
        let bucket_secs = bucket_secs.max(1);
        let rows = sqlx::query(
            "SELECT action, outcome, (ts - $1) / $3 AS bucket, \
             CAST(SUM(count) AS BIGINT) AS n FROM audit_log \
             WHERE ts >= $1 AND ts < $2 GROUP BY action, outcome, bucket",
        )
        .bind(since)
        .bind(until)
        .bind(bucket_secs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditTally {
                    action: row.try_get("action")?,
                    outcome: row.try_get("outcome")?,
                    bucket: row.try_get("bucket")?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }
}

fn gateway_row(row: &$row) -> Result<GatewayRecord> {
    let status: String = row.try_get("status")?;
    let routes: String = row.try_get("services")?;
    Ok(GatewayRecord {
        name: row.try_get("name")?,
        status: gateway_status(&status)?,
        sans: from_json(row.try_get("sans")?)?,
        token_expires_at: row.try_get("token_expires_at")?,
        cert_serial: row.try_get("cert_serial")?,
        cert_not_after: row.try_get("cert_not_after")?,
        url: row.try_get("url")?,
        routes: serde_json::from_str(&routes)
            .map_err(|e| StoreError::Corrupt(format!("gateway routes: {e}")))?,
        assertion_jwk: row.try_get("assertion_jwk")?,
        spa_port: row
            .try_get::<Option<i64>, _>("spa_port")?
            .and_then(|p| u16::try_from(p).ok()),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Takes the policy revision's row lock (ordering concurrent policy
/// writes) and returns the new revision.
async fn bump_policy_revision(tx: &mut Transaction<'static, $db>) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE policy_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("revision")?)
}

/// Deletes the data document at `path` and every one below it
/// (`path/…`, compared as a whole segment: `a` does not take `ab`).
async fn delete_data_below(tx: &mut Transaction<'static, $db>, path: &str) -> Result<u64> {
    let prefix = format!("{path}/");
    // substr counts characters in both SQLite and PostgreSQL; LIKE would
    // need escaping and is case-insensitive in SQLite.
    let len = i32::try_from(prefix.chars().count())
        .map_err(|_| StoreError::Corrupt("data path too long".into()))?;
    let done = sqlx::query("DELETE FROM policy_data WHERE path = $1 OR substr(path, 1, $2) = $3")
        .bind(path)
        .bind(len)
        .bind(&prefix)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

fn const_format(columns: &str, tail: &str) -> String {
    format!("SELECT {columns} FROM users u {tail}")
}

async fn insert_certificate(
    tx: &mut Transaction<'static, $db>,
    c: &CertificateRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO certificates (serial, device_id, not_before, not_after, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&c.serial)
    .bind(&c.device_id)
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(c.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_admin_token<'e, E>(executor: E, t: &AdminTokenRecord) -> Result<()>
where
    E: sqlx::Executor<'e, Database = $db>,
{
    sqlx::query(
        "INSERT INTO admin_tokens (id, name, kind, secret_hash, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(t.kind.as_str())
    .bind(&t.secret_hash)
    .bind(&t.created_by)
    .bind(t.created_at)
    .bind(t.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}
    };
}
pub(crate) use store_impl;
