//! The gateway ↔ controller protocol.
//!
//! A gateway enrolls once (one-time token + CSR → certificate), registers on
//! every start (its URL, routes and assertion key), then holds the control
//! channel: `GET /api/v1/gateway/control?after=SEQ`, a long-lived response of
//! newline-delimited JSON [`ControlFrame`]s. The controller pushes every
//! event the moment it is stored; the gateway remembers the last sequence
//! number and resumes after it on reconnect, or is sent a full
//! [`Snapshot`] when it is too far behind (or new).

use serde::{Deserialize, Serialize};

/// Path of the control channel.
pub const CONTROL_PATH: &str = "/api/v1/gateway/control";

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayEnrollRequest {
    /// The one-time gateway token (`ug1.<CA pin>.<secret>`).
    pub token: String,
    /// PEM PKCS#10 request for the gateway's key.
    pub csr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayEnrollResponse {
    pub name: String,
    pub certificate: String,
    pub ca_certificate: String,
    pub expires_at: String,
}

/// `POST /api/v1/gateway/renew`, over mTLS with the current certificate.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayRenewRequest {
    pub csr: String,
}

/// One route a gateway serves: requests for `host` under `path_prefix`
/// belong to `service`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub service: String,
    pub host: String,
    pub path_prefix: String,
    #[serde(default)]
    pub protocol: Protocol,
}

/// How a service is reached through its gateway.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP requests, routed by host and path, with identity headers.
    #[default]
    Http,
    /// A TCP stream (SSH, PostgreSQL, …) carried in a tunnel.
    Tcp,
}

impl Protocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// The ALPN protocol that marks a TLS connection to a gateway as a TCP
/// tunnel rather than HTTP.
pub const TUNNEL_ALPN: &[u8] = b"umbra-tunnel/1";
/// The longest opening frame (or reply) a tunnel peer may send.
pub const MAX_TUNNEL_FRAME: usize = 16 * 1024;

/// The first line of a tunnel, from the agent: which service, and the
/// session token (bound to the certificate of this very connection).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelOpen {
    pub service: String,
    pub token: String,
}

/// The gateway's one-line answer; after an `ok` one the stream is the
/// service's, both ways.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TunnelReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorCode>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayRegisterRequest {
    /// Where agents reach this gateway (`https://host:port`).
    pub url: String,
    pub routes: Vec<Route>,
    /// The public key the gateway's identity assertions verify with (JWK).
    pub assertion_jwk: serde_json::Value,
    /// The UDP port the gateway listens on for SPA knocks, when it is dark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spa_port: Option<u16>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayRegisterResponse {
    pub name: String,
    pub trust_domain: String,
    /// `iss` of session tokens.
    pub token_issuer: String,
}

/// Who may reach a service: the admin API's per-service allow list. The
/// policy engine reads each as an allow rule (`umbra_policy::access`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    pub service: String,
    pub allow_users: Vec<String>,
    pub allow_groups: Vec<String>,
}

/// The deny lists: revoked sessions and certificates that have not yet
/// expired, revoked devices, suspended users (by name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationLists {
    pub sessions: Vec<String>,
    pub certificates: Vec<String>,
    pub devices: Vec<String>,
    pub users: Vec<String>,
}

/// Everything a gateway needs to decide alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub revocations: RevocationLists,
    pub grants: Vec<Grant>,
    /// The session-token verification keys (a JWK set).
    pub jwks: serde_json::Value,
    /// The approved devices and their SPA keys for this very gateway.
    #[serde(default)]
    pub spa_devices: Vec<SpaDevice>,
    /// The policy the gateway decides with, besides the grants.
    #[serde(default)]
    pub policy: PolicyBundle,
    /// The last posture report of each approved device, for the
    /// compliance checks of the policy.
    #[serde(default)]
    pub postures: Vec<DevicePosture>,
    /// The latest re-evaluation of each live session that has had one.
    #[serde(default)]
    pub verdicts: Vec<SessionVerdict>,
    /// Source addresses blocked now.
    #[serde(default)]
    pub blocked: Vec<BlockedSource>,
}

/// A source address blocked until `until` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockedSource {
    pub address: String,
    pub until: i64,
}

/// The outcome of a live session's re-evaluation that gateways enforce:
/// the risk now (it replaces the token's login-time score in every
/// decision) and whether a fresh MFA is owed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionVerdict {
    pub session: String,
    pub risk: u8,
    /// When set, the session's requests need a token whose `mfa_at` is
    /// after this time (Unix seconds): a step-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up_at: Option<i64>,
}

/// What a gateway needs to build the controller's decision point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyBundle {
    /// The store's policy revision the Rego part reflects.
    pub revision: i64,
    /// The controller's native policy file (TOML); empty when it has none.
    #[serde(default)]
    pub native: String,
    /// The Rego modules by id, when one of them is Umbra's own package
    /// (`umbra.authz`); empty otherwise: the other modules are for the
    /// OPA Data API's clients, not for the gateway.
    #[serde(default)]
    pub modules: std::collections::BTreeMap<String, String>,
    /// The Rego data document (`data`), with the modules.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A device's last posture report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DevicePosture {
    pub device: String,
    pub posture: crate::PostureReport,
}

/// A device that may knock at a gateway: who it belongs to (to check the
/// grants of the services it knocks for) and its native SPA key for that
/// gateway (base64), derived for it alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpaDevice {
    pub device: String,
    pub user: String,
    pub groups: Vec<String>,
    /// Empty in the stored event; filled in for each gateway as it is sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// A change, pushed as it happens. Unknown kinds (from a newer controller)
/// make a gateway resynchronize rather than guess.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    SessionRevoked {
        session: String,
    },
    CertificateRevoked {
        serial: String,
    },
    DeviceRevoked {
        device: String,
    },
    UserSuspended {
        user: String,
    },
    UserResumed {
        user: String,
    },
    /// `grant: None` when the service was deleted.
    GrantChanged {
        service: String,
        grant: Option<Grant>,
    },
    /// Token-signing keys rotated: the new verification set.
    KeysChanged {
        jwks: serde_json::Value,
    },
    /// This gateway (or another) was revoked.
    GatewayRevoked {
        name: String,
    },
    /// The Rego policy in the store changed (the native policy is the
    /// controller's configuration): the gateway fetches a new snapshot.
    PolicyChanged {
        revision: i64,
    },
    /// A device sent a posture report that differs from the last one.
    PostureChanged {
        device: String,
        posture: crate::PostureReport,
    },
    /// The controller re-evaluated a live session and it continues, at
    /// this risk, perhaps once its subject passes a fresh MFA.
    SessionVerdict(SessionVerdict),
    /// Nothing from `address` is served until `until` (Unix seconds):
    /// threat detection's response, or an admin's.
    SourceBlocked {
        address: String,
        until: i64,
    },
    SourceUnblocked {
        address: String,
    },
    /// A device was approved: it may knock (SPA) from now on.
    DeviceApproved {
        device: String,
        user: String,
        groups: Vec<String>,
        /// Empty in the event log; each gateway is sent its own key.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        key: String,
    },
}

impl Event {
    /// The kind as stored in the event log.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionRevoked { .. } => "session_revoked",
            Self::CertificateRevoked { .. } => "certificate_revoked",
            Self::DeviceRevoked { .. } => "device_revoked",
            Self::UserSuspended { .. } => "user_suspended",
            Self::UserResumed { .. } => "user_resumed",
            Self::GrantChanged { .. } => "grant_changed",
            Self::KeysChanged { .. } => "keys_changed",
            Self::GatewayRevoked { .. } => "gateway_revoked",
            Self::DeviceApproved { .. } => "device_approved",
            Self::PolicyChanged { .. } => "policy_changed",
            Self::PostureChanged { .. } => "posture_changed",
            Self::SessionVerdict(_) => "session_verdict",
            Self::SourceBlocked { .. } => "source_blocked",
            Self::SourceUnblocked { .. } => "source_unblocked",
        }
    }
}

/// One line of the control channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlFrame {
    /// Replace all state; later events follow from `seq`.
    Snapshot {
        seq: i64,
        state: Snapshot,
    },
    Event {
        seq: i64,
        event: Event,
    },
    /// Sent every few seconds, so a silent channel is known to be dead.
    Heartbeat {
        seq: i64,
    },
}

/// Seconds between heartbeats on the control channel.
pub const HEARTBEAT_SECS: u64 = 5;

/// A batch of gateway access decisions for the audit trail.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditBatch {
    pub records: Vec<GatewayAuditRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayAuditRecord {
    pub ts: i64,
    pub actor: String,
    pub source_ip: String,
    pub action: String,
    pub resource: String,
    /// `allow` or `deny`.
    pub outcome: String,
    pub reason: String,
    /// One request ID, or `first..last` for a summary (`count` > 1).
    pub request_id: String,
    /// How many identical decisions this record stands for.
    #[serde(default = "one")]
    pub count: u64,
    /// For `gateway.transfer` and a closing tunnel: the bytes the session
    /// has moved over this connection, for threat detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// Bytes one session moved over one connection, both ways, since that
/// connection's previous report: the controller adds them up per session,
/// across connections and gateways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transfer {
    pub session: String,
    pub bytes: u64,
}

fn one() -> u64 {
    1
}

/// A service the session may reach, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceAccess {
    pub name: String,
    pub gateway_url: String,
    /// The `Host` the gateway routes the service by.
    pub host: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// The gateway's name: the agent derives its SPA key for the gateway
    /// from it (`spiffe://<trust domain>/gateway/<name>`).
    #[serde(default)]
    pub gateway: String,
    /// The gateway's SPA port (UDP, on the host of `gateway_url`) when it is
    /// dark: knock there before connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spa_port: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_as_tagged_json() {
        let frame = ControlFrame::Event {
            seq: 7,
            event: Event::SessionRevoked {
                session: "s1".into(),
            },
        };
        let line = serde_json::to_string(&frame).expect("encode");
        assert_eq!(
            line,
            r#"{"type":"event","seq":7,"event":{"kind":"session_revoked","session":"s1"}}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlFrame>(&line).expect("decode"),
            frame
        );
        let unknown = r#"{"type":"event","seq":8,"event":{"kind":"from_the_future"}}"#;
        assert!(serde_json::from_str::<ControlFrame>(unknown).is_err());
    }
}
