//! JWT claims: the session token the controller issues (verified by the
//! controller and the gateways) and the identity assertion a gateway
//! passes to an upstream (`X-Umbra-Jwt-Assertion`).

use serde::{Deserialize, Serialize};

/// RFC 8705 confirmation: the token is bound to this certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The claims of a session token (`DESIGN.md`: sub, sid, device, groups,
/// risk, exp) plus the standard ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub sub: String,
    pub sid: String,
    pub device: String,
    pub groups: Vec<String>,
    pub risk: u8,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub cnf: Confirmation,
    /// When the subject last passed MFA (login or step-up), Unix seconds:
    /// policies compare its age with what a service asks. Absent in tokens
    /// of older controllers, which counts as no MFA known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_at: Option<i64>,
}

/// What a gateway asserts to an upstream about the request it forwards.
/// `aud` is the service, so an assertion for one service is useless at
/// another; it lives for seconds and is signed with the gateway's key,
/// published in the controller's JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// `umbra-gateway:<name>`.
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub sid: String,
    pub device: String,
    pub groups: Vec<String>,
    pub risk: u8,
    pub iat: i64,
    pub exp: i64,
}
