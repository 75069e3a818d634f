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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub device_id: String,
    pub cert_serial: String,
    pub source_ip: String,
    pub risk: u8,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
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
}
