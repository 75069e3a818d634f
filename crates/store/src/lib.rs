//! Storage for the controller: one async trait, [`Store`], and its backends.
//!
//! The trait speaks in domain operations, not SQL: every method is one
//! transaction, so "writes that belong together" (consume an enrollment token
//! *and* record the device *and* its certificate; revoke a device *and* its
//! certificates *and* its sessions) cannot be half-applied by a caller that
//! forgets a rollback. Conditional updates (`consume_totp_step`, token use)
//! are single compare-and-set statements, so they stay correct when several
//! controllers share one database.
//!
//! Times are Unix seconds; ids are opaque strings chosen by the caller.
//!
//! Layout:
//! - [`model`]: the records the store reads and writes.
//! - [`chain`]: the audit log's hash chain, signed checkpoints and their
//!   verification (no I/O); `audit`: the queries that append onto it.
//! - [`sqlite`]: the embedded default backend (WAL, `synchronous=FULL`).
//! - [`postgres`]: the backend for several controllers sharing one state.
//! - `shared`: the queries both backends run, written once.

mod audit;
pub mod chain;
pub mod export;
pub mod model;
#[cfg(any(test, feature = "test-support"))]
pub mod pgtest;
pub mod postgres;
mod shared;
pub mod sqlite;

use async_trait::async_trait;

pub use chain::checkpoint::Checkpoint;
pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
use umbra_proto::api::{DeviceStatus, UserStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated; the message names the field.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database holds a value this version cannot interpret.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<()>;

    // ---- controller secrets --------------------------------------------
    async fn secret(&self, name: &str) -> Result<Option<String>>;
    /// Stores `value` unless `name` exists; returns the value that is stored
    /// afterwards, so concurrent first starts agree on one CA.
    async fn insert_secret_if_absent(&self, name: &str, value: &str, now: i64) -> Result<String>;

    /// Token-signing keys, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Stores the first signing key unless one exists (concurrent first
    /// starts agree on one). Returns whether this one was stored.
    async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<bool>;
    /// Makes `key` the signing key and schedules every other unretired key
    /// to retire at `retire_at`, together.
    async fn rotate_signing_key(&self, key: &SigningKeyRecord, retire_at: i64) -> Result<()>;

    // ---- users ----------------------------------------------------------
    async fn create_user(&self, user: &NewUser) -> Result<()>;
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Suspending also revokes the user's live sessions, in one transaction.
    async fn set_user_status(&self, id: &str, status: UserStatus, now: i64) -> Result<bool>;
    /// Counts a failed login; locks the account for `lock_secs` when the
    /// count reaches `threshold`. A lock that has expired starts a new count.
    async fn record_login_failure(
        &self,
        id: &str,
        now: i64,
        threshold: u32,
        lock_secs: i64,
    ) -> Result<LockState>;
    /// Clears failures and any lock (admin unlock).
    async fn unlock_user(&self, id: &str, now: i64) -> Result<bool>;
    /// Accepts TOTP step `step` for the user if no step at or after it was
    /// accepted before. Returns false for a replay.
    async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool>;
    async fn reset_totp(&self, id: &str, sealed_secret: &str, now: i64) -> Result<bool>;
    /// Replaces the user's recovery codes (by their keyed hashes), together.
    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: i64,
    ) -> Result<()>;
    /// Uses one recovery code, once. Returns false if unknown or used.
    async fn consume_recovery_code(&self, user_id: &str, hash: &str, now: i64) -> Result<bool>;
    /// How many unused recovery codes the user has left.
    async fn recovery_codes_left(&self, user_id: &str) -> Result<u32>;

    // ---- enrollment -------------------------------------------------------
    async fn create_enrollment_token(&self, token: &NewEnrollmentToken) -> Result<()>;
    /// Consumes the token and records the device and its first certificate,
    /// all or nothing.
    async fn enroll_device(
        &self,
        token_hash: &str,
        now: i64,
        device: &NewDevice,
        cert: &CertificateRecord,
    ) -> Result<EnrollOutcome>;
    /// Looks up a token without consuming it (to check its user first).
    async fn enrollment_token(&self, token_hash: &str) -> Result<Option<EnrollmentTokenRecord>>;

    // ---- devices and certificates -----------------------------------------
    async fn device(&self, id: &str) -> Result<Option<DeviceRecord>>;
    async fn list_devices(&self) -> Result<Vec<DeviceRecord>>;
    /// Replaces an unrevoked device's posture report (JSON). False when the
    /// device is unknown or revoked.
    async fn update_device_posture(&self, id: &str, posture: &str, now: i64) -> Result<bool>;
    /// Revoking also revokes the device's certificates and sessions.
    async fn set_device_status(&self, id: &str, status: DeviceStatus, now: i64) -> Result<bool>;
    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>>;
    /// Records a renewed certificate for the device that holds `old_serial`,
    /// if that certificate is unrevoked and the device not revoked (checked
    /// in the same statement). Returns false when refused.
    async fn add_renewed_certificate(
        &self,
        old_serial: &str,
        cert: &CertificateRecord,
    ) -> Result<bool>;
    /// Revokes one certificate and the sessions bound to it.
    async fn revoke_certificate(&self, serial: &str, now: i64, reason: &str) -> Result<bool>;

    // ---- sessions -----------------------------------------------------------
    /// Records a session and clears the user's failure count, together,
    /// if the user is still active (checked under the user row's lock, so a
    /// suspension cannot slip between the login's checks and its session).
    /// Returns false when the user is no longer active.
    async fn open_session(&self, session: &SessionRecord) -> Result<bool>;
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// Sessions not revoked and not expired at `now`, or all when `now` is None.
    async fn list_sessions(&self, live_at: Option<i64>) -> Result<Vec<SessionRecord>>;
    /// One user's sessions not expired at `now`, revoked or not, oldest
    /// first (what a suspension must tell the gateways about; by index,
    /// not by reading every session ever opened).
    async fn unexpired_sessions_of(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>>;
    async fn revoke_session(&self, id: &str, now: i64, reason: &str) -> Result<bool>;
    /// Records that the session's subject passed MFA at `at` (a step-up).
    /// False when the session is revoked or expired. Never moves the time
    /// backwards.
    async fn record_session_mfa(&self, id: &str, at: i64) -> Result<bool>;
    /// Records a live session's re-evaluation. False when the session is
    /// revoked or expired, or a later verdict is already recorded.
    async fn record_session_verdict(&self, id: &str, verdict: &StoredVerdict) -> Result<bool>;

    // ---- blocked sources ------------------------------------------------------
    /// Blocks an address until `until` (a later block of the same address
    /// extends it, never shortens it).
    async fn block_source(&self, block: &BlockedSourceRecord) -> Result<()>;
    /// Lifts a block. False when there was none.
    async fn unblock_source(&self, address: &str) -> Result<bool>;
    /// Blocks in force at `now`, oldest first; drops expired ones.
    async fn blocked_sources(&self, now: i64) -> Result<Vec<BlockedSourceRecord>>;

    // ---- admin credentials --------------------------------------------------
    async fn create_admin_token(&self, token: &AdminTokenRecord) -> Result<()>;
    async fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>>;
    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>>;
    /// Marks a bootstrap token used and stores its replacement, together.
    /// Returns false if it was already used, revoked or expired.
    async fn exchange_bootstrap_token(
        &self,
        bootstrap_id: &str,
        now: i64,
        replacement: &AdminTokenRecord,
    ) -> Result<bool>;
    async fn revoke_admin_token(&self, id: &str, now: i64) -> Result<bool>;

    // ---- services and gateways --------------------------------------------
    /// Creates or replaces a service's allow list.
    async fn put_service(&self, service: &ServiceRecord) -> Result<()>;
    async fn delete_service(&self, name: &str) -> Result<bool>;
    async fn list_services(&self) -> Result<Vec<ServiceRecord>>;
    /// Creates a pending gateway, or gives an existing unrevoked one a new
    /// enrollment token (and SANs). Returns false if the gateway is revoked.
    async fn put_gateway_token(&self, gateway: &NewGateway) -> Result<bool>;
    async fn gateway_by_token(&self, token_hash: &str) -> Result<Option<GatewayRecord>>;
    /// Consumes the gateway's token and records its certificate, if the
    /// token is still the gateway's, unexpired and the gateway unrevoked.
    async fn enroll_gateway(
        &self,
        token_hash: &str,
        now: i64,
        cert_serial: &str,
        cert_not_after: i64,
    ) -> Result<EnrollOutcome>;
    async fn gateway(&self, name: &str) -> Result<Option<GatewayRecord>>;
    async fn list_gateways(&self) -> Result<Vec<GatewayRecord>>;
    /// Records what an active gateway announces. False if not active.
    async fn register_gateway(&self, name: &str, reg: &GatewayRegistration) -> Result<bool>;
    async fn revoke_gateway(&self, name: &str, now: i64) -> Result<bool>;
    /// Replaces an active gateway's certificate, if `old_serial` is still
    /// its certificate (compare-and-set). Returns false when refused.
    async fn renew_gateway_certificate(
        &self,
        name: &str,
        old_serial: &str,
        new_serial: &str,
        not_after: i64,
        now: i64,
    ) -> Result<bool>;

    // ---- events for the gateways ------------------------------------------
    /// Appends an event and returns its sequence number. Numbers are
    /// handed out in commit order (see the migration), without gaps.
    async fn append_event(&self, ts: i64, kind: &str, payload: &str) -> Result<i64>;
    /// Events with seq > `after`, oldest first, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>>;
    async fn event_window(&self) -> Result<EventWindow>;
    /// Drops events older than `before` (Unix seconds); returns how many.
    async fn prune_events(&self, before: i64) -> Result<u64>;
    /// The deny lists that matter at `now`.
    async fn revocations(&self, now: i64) -> Result<Revocations>;

    // ---- policies (the OPA-compatible API) ------------------------------------
    /// Creates or replaces a Rego module; returns the new policy revision.
    async fn put_policy(&self, id: &str, raw: &str, now: i64) -> Result<i64>;
    /// Deletes a module; the new revision, or `None` when there was none.
    async fn delete_policy(&self, id: &str) -> Result<Option<i64>>;
    /// Stores a data document at `path`, replacing whatever was stored at
    /// or below it, together; returns the new revision.
    async fn put_policy_data(&self, path: &str, document: &str, now: i64) -> Result<i64>;
    /// Deletes the documents at and below `path`; the new revision, or
    /// `None` when nothing was there.
    async fn delete_policy_data(&self, path: &str) -> Result<Option<i64>>;
    /// The revision, bumped by every change above: cheap to poll.
    async fn policy_revision(&self) -> Result<i64>;
    /// Every module and data document, with the revision they are at least at.
    async fn policy_snapshot(&self) -> Result<PolicySnapshot>;

    // ---- rate limits ------------------------------------------------------------
    /// Takes one token from `key`'s bucket (refilled at `per_minute`, at
    /// most `burst`), atomically. False when the bucket is empty.
    async fn take_rate_token(
        &self,
        key: &str,
        now: i64,
        per_minute: u32,
        burst: u32,
    ) -> Result<bool>;
    /// Forgets buckets untouched since `before` (they are full again).
    async fn prune_rate_limits(&self, before: i64) -> Result<u64>;

    // ---- audit ----------------------------------------------------------------
    /// Appends a record; durable when this returns.
    async fn append_audit(&self, event: &AuditEvent) -> Result<i64>;
    /// Appends records in one transaction (a group commit: one sync for the
    /// batch); all durable when this returns.
    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<()>;
    /// Records with id > `after`, oldest first, at most `limit`.
    async fn audit_after(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>>;
    /// Records matching every filter given, oldest first (see [`AuditFilter`]).
    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// The chain's head: the last record, its hash, where the chain started.
    async fn audit_head(&self) -> Result<AuditHead>;
    /// Stores a signed checkpoint; returns its id.
    async fn append_audit_checkpoint(&self, cp: &Checkpoint) -> Result<i64>;
    /// Checkpoints after `after` (last record id, checkpoint id) covering
    /// records up to `through`, with id at most `max_id`, ordered by (last
    /// record, id), at most `limit`.
    async fn audit_checkpoints(
        &self,
        after: (i64, i64),
        through: i64,
        max_id: i64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>>;
    /// The checkpoint covering the most records.
    async fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>>;
    /// `actor`'s records at or after `since`, newest first, at most `limit`
    /// (the risk engine's history of one user).
    async fn audit_by_actor(&self, actor: &str, since: i64, limit: u32)
    -> Result<Vec<AuditRecord>>;
    /// Records in `[since, until)` counted (summaries by their count) per
    /// action, outcome and `bucket_secs`-long bucket from `since` (the
    /// dashboard's success rates and trends).
    async fn audit_tally(
        &self,
        since: i64,
        until: i64,
        bucket_secs: i64,
    ) -> Result<Vec<AuditTally>>;
}

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod conformance;
