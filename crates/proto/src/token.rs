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

/// The `typ` header of a browser session token: an agent token (`JWT`)
/// is not one, and the agent-token verifiers refuse this type.
pub const BROWSER_TOKEN_TYPE: &str = "umbra-browser+jwt";

/// The browser session cookie. `__Host-`: set only by the host itself,
/// over HTTPS, for every path, never for a parent domain.
pub const SESSION_COOKIE: &str = "__Host-umbra_session";

/// The audience of a browser session token: browsers of this trust
/// domain. A cookie of another deployment names another audience.
pub fn browser_audience(trust_domain: &str) -> String {
    format!("umbra-browser:{trust_domain}")
}

/// The claims of a browser session token (the cookie's value). No device
/// and no certificate binding: what limits a stolen cookie is its short
/// life, its revocation with the session, and policy (a browser session
/// has no device posture, so services that ask for one refuse it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserClaims {
    pub iss: String,
    /// [`browser_audience`] of the issuing controller's trust domain.
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub groups: Vec<String>,
    pub risk: u8,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// When the subject last passed MFA (login or step-up), Unix seconds.
    pub mfa_at: i64,
}

/// The value of `name` in a `Cookie` header (`a=1; b=2`), if it is there
/// exactly once: two (a cookie planted by a sibling host beside the real
/// one) are refused rather than picked from.
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    let mut found = header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_once_and_by_exact_name() {
        let h = "a=1; __Host-umbra_session=tok; b=\"2\"";
        assert_eq!(cookie(h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(h, "b"), Some("2"));
        assert_eq!(cookie(h, "umbra_session"), None);
        assert_eq!(cookie("x=1; x=2", "x"), None, "ambiguous");
        assert_eq!(cookie("", "x"), None);
    }
}
