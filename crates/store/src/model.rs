//! Records as the store holds them. Secrets are sealed strings here: the
//! store never sees a TOTP seed or a private key in the clear.

use umbra_proto::api::{DeviceStatus, Role, UserStatus};

/// A new user with everything needed to log in, written in one transaction
/// with its group memberships.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
    pub password_hash: String,
    pub sealed_totp_secret: String,
    pub now: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub status: UserStatus,
    pub groups: Vec<String>,
    pub password_hash: String,
    pub sealed_totp_secret: String,
    pub totp_last_step: Option<i64>,
    pub failed_logins: u32,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRecord {
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// The lockout state after a failure was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockState {
    pub failed_logins: u32,
    pub locked_until: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct NewEnrollmentToken {
    pub id: String,
    /// SHA-256 of the token secret, hex: the secret itself is never stored.
    pub token_hash: String,
    pub user_id: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentTokenRecord {
    pub id: String,
    pub user_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// Why `enroll_device` did or did not enroll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollOutcome {
    Enrolled,
    TokenUnknown,
    TokenUsed,
    TokenExpired,
}

#[derive(Clone, Debug)]
pub struct NewDevice {
    pub id: String,
    pub user_id: String,
    pub status: DeviceStatus,
    pub hostname: String,
    /// The posture report as JSON.
    pub posture: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub status: DeviceStatus,
    pub hostname: String,
    pub posture: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    pub serial: String,
    pub device_id: String,
    pub not_before: i64,
    pub not_after: i64,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// What a session was opened from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionKind {
    /// An agent's login over mTLS: bound to a device certificate.
    #[default]
    Device,
    /// The controller's login page: a cookie, no device (`device_id` and
    /// `cert_serial` are empty).
    Browser,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Browser => "browser",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub kind: SessionKind,
    pub user_id: String,
    pub user_name: String,
    /// Empty for a browser session.
    pub device_id: String,
    /// Empty for a browser session.
    pub cert_serial: String,
    pub source_ip: String,
    pub risk: u8,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    /// When the subject last passed MFA (login or step-up), Unix seconds.
    pub mfa_at: Option<i64>,
    /// The latest re-evaluation, if any.
    pub verdict: Option<StoredVerdict>,
}

/// A live session's latest re-evaluation (see migration 0011).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredVerdict {
    /// The risk now; the session's `risk` stays the login-time score.
    pub risk: u8,
    pub at: i64,
    /// A step-up owed since then: an MFA after it satisfies it.
    pub step_up_at: Option<i64>,
}

impl SessionRecord {
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// A token-signing key; `sealed_key` is its PKCS#8 sealed by the KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub sealed_key: String,
    pub created_at: i64,
    /// `None` for the key that signs now.
    pub retire_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminTokenKind {
    /// Written to a 0600 file on first start; only exchangeable, once.
    Bootstrap,
    Api,
}

impl AdminTokenKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Api => "api",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    pub kind: AdminTokenKind,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    Error,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
        }
    }
}

/// An audit event to append (seed 001's fields).
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub ts: i64,
    pub actor: String,
    pub source_ip: String,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    pub reason: String,
    pub request_id: String,
    /// How many identical decisions this record stands for (at least 1):
    /// gateways sum up a session's allowed requests to one resource.
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub source_ip: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub reason: String,
    pub request_id: String,
    /// How many identical decisions this record stands for (at least 1):
    /// gateways sum up a session's allowed requests to one resource.
    pub count: i64,
    /// The record's place in the hash chain; `None` for records written
    /// before the chain existed (see [`crate::chain`]).
    pub link: Option<crate::chain::Link>,
}

/// How many audit records of one action and outcome fell in one time
/// bucket ([`crate::Store::audit_tally`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditTally {
    pub action: String,
    pub outcome: String,
    /// The bucket's number, 0 for the one starting at `since`.
    pub bucket: i64,
    /// Decisions counted (a summarized record counts for its `count`).
    pub count: i64,
}

/// Which audit records to read: every filter given must match. Records
/// come oldest first (by id), at most `limit`, after id `after` (paging).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub after: i64,
    pub limit: u32,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Only records with id at most this (an export's fixed end).
    pub through: Option<i64>,
}

/// The chain's head: what a checkpoint signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// The last record's id (0 for an empty log).
    pub last_id: i64,
    /// Its hash ([`crate::chain::GENESIS`] before the first chained record).
    pub last_hash: [u8; 32],
    /// The first chained record (0: none yet).
    pub genesis_id: i64,
    /// Records from before the chain.
    pub legacy_count: i64,
    /// The highest checkpoint id when the head was read (0: none), read in
    /// the same statement: a reader that stops there sees no checkpoint
    /// made after the head it read.
    pub checkpoint_high: i64,
}

/// A service and who may reach it (the allow list that stands in for the
/// policy engine until it lands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub allow_users: Vec<String>,
    pub allow_groups: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayStatus {
    /// Created with an enrollment token, not yet enrolled.
    Pending,
    Active,
    Revoked,
}

impl GatewayStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }
}

/// A new gateway, or a new enrollment token for an existing one.
#[derive(Clone, Debug)]
pub struct NewGateway {
    pub name: String,
    /// DNS names and IP addresses its certificate may carry (chosen by the
    /// admin, not by the gateway: a gateway must not claim the controller's
    /// name).
    pub sans: Vec<String>,
    pub token_hash: String,
    pub token_expires_at: i64,
    pub created_by: String,
    pub now: i64,
}

/// One service route a gateway announces at registration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteRecord {
    pub service: String,
    pub host: String,
    pub path_prefix: String,
    /// `http` or `tcp`; absent in records from before TCP tunnels (http).
    #[serde(default = "http")]
    pub protocol: String,
}

fn http() -> String {
    "http".into()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRecord {
    pub name: String,
    pub status: GatewayStatus,
    pub sans: Vec<String>,
    pub token_expires_at: Option<i64>,
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<i64>,
    pub url: Option<String>,
    pub routes: Vec<RouteRecord>,
    /// The assertion-signing public key, a JWK as JSON.
    pub assertion_jwk: Option<String>,
    /// The UDP port for SPA knocks, when the gateway is dark.
    pub spa_port: Option<u16>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a gateway announces each time it starts.
#[derive(Clone, Debug)]
pub struct GatewayRegistration {
    pub url: String,
    pub routes: Vec<RouteRecord>,
    pub assertion_jwk: String,
    pub spa_port: Option<u16>,
    pub now: i64,
}

/// An event for the gateways, in the order the store numbered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: i64,
    pub ts: i64,
    pub kind: String,
    pub payload: String,
}

/// The retained window of the event log: events after `first - 1` up to
/// `last` can be replayed; a gateway further behind needs a full snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWindow {
    /// The oldest retained event, or `last + 1` when none is retained.
    pub first: i64,
    /// The newest sequence number handed out.
    pub last: i64,
}

/// A source address blocked at every gateway until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedSourceRecord {
    /// An IP address, canonical text form.
    pub address: String,
    pub until: i64,
    pub reason: String,
    pub created_at: i64,
}

/// What is revoked and still matters at `now`: the gateways' deny lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Revoked sessions that have not yet expired.
    pub sessions: Vec<String>,
    /// Revoked certificates that have not yet expired (serials, hex).
    pub certificates: Vec<String>,
    pub devices: Vec<String>,
    /// Names of suspended users.
    pub users: Vec<String>,
}

/// A Rego module stored through the policy API, as it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRecord {
    pub id: String,
    pub raw: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A data document stored at a slash-separated path (`a/b` is `data.a.b`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDataRecord {
    pub path: String,
    /// JSON text.
    pub document: String,
    pub updated_at: i64,
}

/// Everything a policy set is built from, and the revision it is at (read
/// before the rows, so rows are never older than the revision says).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySnapshot {
    pub revision: i64,
    /// Ordered by id.
    pub policies: Vec<PolicyRecord>,
    /// Ordered by path.
    pub data: Vec<PolicyDataRecord>,
}
