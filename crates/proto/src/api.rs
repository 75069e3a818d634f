//! Request and response bodies of `/api/v1/…`.
//!
//! Requests use `deny_unknown_fields`: a typo in a field name is an error, not
//! a silently ignored setting. Times are RFC 3339 strings in UTC.

use serde::{Deserialize, Serialize};

use crate::PostureReport;

/// A user's role. Admins may call `/api/v1/admin/…` from a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Suspended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Pending,
    Approved,
    Revoked,
}

// ---- users -----------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub name: String,
    /// When absent the controller generates one and returns it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::User
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
    pub status: UserStatus,
    /// Set while the account is locked out after repeated failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    pub failed_logins: u32,
    pub created_at: String,
}

/// TOTP provisioning material, shown once at creation or reset.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TotpProvisioning {
    /// Base32, no padding.
    pub secret: String,
    /// `otpauth://totp/…`
    pub uri: String,
    /// The URI as a QR code, SVG.
    pub qr_svg: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateUserResponse {
    pub user: User,
    /// Present only when the controller generated the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub totp: TotpProvisioning,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResetTotpResponse {
    pub user: User,
    pub totp: TotpProvisioning,
}

// ---- enrollment ------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    pub user: String,
    /// Lifetime in seconds; the controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentToken {
    /// `ue1.<ca-pin>.<secret>`: single use; the pin lets the agent trust the
    /// controller's CA before it has a certificate of its own.
    pub token: String,
    pub user: String,
    pub expires_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// PKCS#10 CSR, PEM. Its subject and extensions are ignored: the
    /// controller decides what the certificate says.
    pub csr_pem: String,
    pub posture: PostureReport,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollResponse {
    pub device_id: String,
    pub spiffe_id: String,
    pub status: DeviceStatus,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub serial: String,
    pub not_after: String,
    /// The device's SPA secret (32 bytes, base64): its keys for knocking at
    /// each gateway are derived from it. Keep it like the private key.
    #[serde(default)]
    pub spa_secret: String,
    /// Set when the controller is dark: its login surface (login, renewal,
    /// posture) answers only after a knock, on another port of the same
    /// host than the one enrollment used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dark: Option<DarkController>,
}

/// Where a dark controller's login surface is, relative to the host the
/// device enrolled at (`DESIGN.md`, Contracts: "When the controller is dark
/// (SPA), the public endpoints move to a separate listener").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DarkController {
    /// The HTTPS port of login, renewal and posture reports.
    pub login_port: u16,
    /// The UDP port to knock at first (native SPA, keys derived for the
    /// controller's SPIFFE ID `spiffe://<trust domain>/controller`).
    pub spa_port: u16,
}

/// `POST /api/v1/devices/renew`, over mTLS with the current certificate.
/// The answer is an [`EnrollResponse`] for the same device.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// A CSR for the new certificate: a fresh key is recommended.
    pub csr_pem: String,
}

/// `POST /api/v1/devices/posture`: a fresh posture report from the device,
/// over mTLS with its certificate.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureUpdate {
    pub posture: PostureReport,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostureReceipt {
    pub device_id: String,
    pub received_at: String,
    /// When the controller expects the next report at the latest.
    pub next_report_secs: u64,
}

// ---- devices and certificates ---------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    pub id: String,
    pub user: String,
    pub spiffe_id: String,
    pub hostname: String,
    pub status: DeviceStatus,
    pub posture: PostureReport,
    pub created_at: String,
    pub updated_at: String,
}

// ---- sessions --------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// The second factor: a TOTP code, or else one recovery code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_code: Option<String>,
}

/// `POST /api/v1/auth/step-up`, over mTLS with the session's token: a
/// fresh TOTP code moves the session's MFA time to now and returns a new
/// token saying so (same session, same expiry).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    pub totp: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepUpResponse {
    pub session_id: String,
    pub token: String,
    pub expires_at: String,
    /// RFC 3339: the MFA time the new token carries.
    pub mfa_at: String,
}

/// New one-time recovery codes, shown once; the previous set stops working.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    pub user: String,
    pub codes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub session_id: String,
    /// The access token (JWT, ES256); verify it with `/.well-known/jwks.json`.
    pub token: String,
    pub expires_at: String,
    pub risk: u8,
    pub user: String,
    pub groups: Vec<String>,
    pub device_id: String,
    /// The services this session may reach, with their gateways.
    #[serde(default)]
    pub services: Vec<crate::control::ServiceAccess>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub device_id: String,
    pub source_ip: String,
    /// The risk at login (what the session's tokens carry).
    pub risk: u8,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    /// The risk at the latest re-evaluation, which gateways decide with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_risk: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<String>,
    /// Set while the re-evaluation asks for a step-up: an MFA after
    /// this time satisfies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up_since: Option<String>,
}

// ---- admin credentials -----------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminTokenRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdminTokenResponse {
    pub id: String,
    pub name: String,
    /// The credential itself: shown once, stored only as a hash.
    pub token: String,
    pub expires_at: String,
}

// ---- audit -----------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub timestamp: String,
    pub actor: String,
    pub source_ip: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub reason: String,
    pub request_id: String,
    /// How many identical decisions the record stands for: a gateway sums
    /// up one session's allowed requests to one resource over about half a
    /// second (`request_id` is then `first..last`). 1 for everything else.
    pub count: i64,
    /// The record's place in the hash chain (absent for records written
    /// before the chain existed): the encoding version, the previous
    /// record's hash and this one's (SHA-256, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The controller's signature over the audit chain's head: every record up
/// to `last_id` is as it was when this was signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditCheckpoint {
    pub id: i64,
    pub timestamp: String,
    /// The chain's first record (0: none yet).
    pub genesis_id: i64,
    /// How many records predate the chain (counted, not hashed).
    pub legacy_count: i64,
    pub last_id: i64,
    pub last_hash: String,
    /// The signing key's id: the first 16 hex digits of SHA-256 of it.
    pub key_id: String,
    /// Ed25519, hex.
    pub signature: String,
}

/// The first line of an export: what it holds and the key that signed
/// its checkpoints (check it against a copy kept off the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditExportHeader {
    /// `umbra-audit-export`.
    pub format: String,
    pub version: u32,
    pub exported_at: String,
    /// The Ed25519 public key checking the checkpoints, hex.
    pub public_key: String,
    pub key_id: String,
    /// The last record when the export began: it ends there.
    pub last_id: i64,
    /// Whether filters left records out (then the chain cannot be checked
    /// end to end, only record by record).
    pub filtered: bool,
}

/// One line of `GET /api/v1/admin/audit/export` (JSON lines), tagged by
/// `type`: a header, then records, each followed by the checkpoints that
/// cover it, and last the checkpoints covering records past the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditLine {
    Header(AuditExportHeader),
    Record(AuditRecord),
    Checkpoint(AuditCheckpoint),
}

// ---- misc ------------------------------------------------------------------

/// `{"items": [...]}`: listings are wrapped so they can grow paging fields.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// `PUT /api/v1/admin/services/{name}`: who may reach the service.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutServiceRequest {
    #[serde(default)]
    pub allow_users: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Service {
    pub name: String,
    pub allow_users: Vec<String>,
    pub allow_groups: Vec<String>,
    /// Where the service is routed, from the gateways' registrations.
    pub gateways: Vec<String>,
    pub updated_at: String,
}

/// `POST /api/v1/admin/gateways`: a gateway and its one-time enrollment token.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGatewayRequest {
    pub name: String,
    /// DNS names and IP addresses agents reach the gateway by.
    pub sans: Vec<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayToken {
    pub name: String,
    pub token: String,
    pub expires_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gateway {
    pub name: String,
    pub status: String,
    pub sans: Vec<String>,
    pub url: Option<String>,
    pub routes: Vec<crate::control::Route>,
    pub certificate_serial: Option<String>,
    pub certificate_expires_at: Option<String>,
    pub updated_at: String,
}
