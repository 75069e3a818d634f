//! Who is on the other end: the device certificate (admitted at the TLS
//! handshake) and the session token (checked on every request).
//!
//! The handshake refuses certificates that do not chain to the Umbra CA or
//! are outside their validity (rustls, on the injectable clock), that are
//! not device certificates, and that the view lists as revoked (by serial
//! or by device). The token must be an ES256 JWT from the controller's
//! current key set, unexpired, bound to this very certificate, for a
//! session, device and user none of which is revoked.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use umbra_pki::{PeerCertificate, TrustDomain};
use umbra_proto::token::SessionClaims;

use crate::view::{Inner, View};

/// Admits device certificates the view does not list as revoked.
pub struct DeviceAdmission {
    pub view: Arc<View>,
    pub trust_domain: TrustDomain,
    pub refused: Box<dyn Fn(String) + Send + Sync>,
}

impl std::fmt::Debug for DeviceAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceAdmission")
    }
}

impl umbra_pki::tls::ClientCertPolicy for DeviceAdmission {
    fn admit(
        &self,
        leaf: &rustls_pki_types::CertificateDer<'_>,
    ) -> Result<(), rustls::CertificateError> {
        let peer = match PeerCertificate::parse(leaf, &self.trust_domain) {
            Ok(p) => p,
            Err(e) => {
                (self.refused)(format!("certificate_not_a_device: {e}"));
                return Err(rustls::CertificateError::ApplicationVerificationFailure);
            }
        };
        let v = self.view.read();
        if v.certificates.contains(&peer.serial) {
            (self.refused)(format!("certificate_revoked: device {}", peer.device_id));
            return Err(rustls::CertificateError::Revoked);
        }
        if v.devices.contains(&peer.device_id) {
            (self.refused)(format!("device_revoked: device {}", peer.device_id));
            return Err(rustls::CertificateError::Revoked);
        }
        Ok(())
    }
}

const MAX_TOKEN_LEN: usize = 8192;
/// Tolerance for a controller clock slightly ahead of ours (`nbf`).
const SKEW_SECS: i64 = 60;

/// Checks a bearer token against the view, for the device `peer`.
pub fn verify(
    view: &Inner,
    issuer: &str,
    token: &str,
    peer: &PeerCertificate,
    now: i64,
) -> Result<SessionClaims, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token_malformed");
    }
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
    let cached = view
        .verified
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&digest)
        .cloned();
    let claims = match cached {
        Some(c) => c,
        // Cut off from the controller: a session not seen before is refused
        // (a known one is served until the staleness bound).
        None if !view.connected.load(std::sync::atomic::Ordering::Relaxed) => {
            return Err("controller_unreachable_new_session");
        }
        None => {
            let c = verify_signature(view, issuer, token)?;
            let mut cache = view
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= MAX_VERIFIED {
                cache.clear();
            }
            cache.insert(digest, c.clone());
            c
        }
    };
    check_claims(view, claims, peer, now)
}

/// Verified tokens remembered at most (a memory bound; a miss costs one
/// signature check).
const MAX_VERIFIED: usize = 100_000;

fn verify_signature(
    view: &Inner,
    issuer: &str,
    token: &str,
) -> Result<SessionClaims, &'static str> {
    decode_es256(view, issuer, token, TokenKind::Agent)
}

/// Which kind of session token a listener takes: the two are signed with
/// the same keys, so the header's `typ` keeps each out of the other's place.
#[derive(Clone, Copy)]
pub(crate) enum TokenKind<'a> {
    /// An agent's bearer token (any `typ` but the browser's, no audience).
    Agent,
    /// A browser's cookie (`typ` `umbra-browser+jwt`, this audience).
    Browser { audience: &'a str },
}

/// Verifies a session token's signature and issuer with the view's keys,
/// and decodes its claims; expiry and revocation are the caller's.
pub(crate) fn decode_es256<T: serde::de::DeserializeOwned>(
    view: &Inner,
    issuer: &str,
    token: &str,
    kind: TokenKind<'_>,
) -> Result<T, &'static str> {
    let header_b64 = token.split('.').next().ok_or("token_malformed")?;
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| "token_malformed")?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| "token_malformed")?;
    // The algorithm is pinned before any key is touched: no `none`, no
    // HMAC keyed with a public key.
    if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err("token_algorithm_refused");
    }
    // A browser's cookie is no bearer token (it also names an audience and
    // lacks the binding), and an agent token is no cookie.
    let is_browser =
        header.get("typ").and_then(|t| t.as_str()) == Some(umbra_proto::token::BROWSER_TOKEN_TYPE);
    if is_browser != matches!(kind, TokenKind::Browser { .. }) {
        return Err("token_wrong_kind");
    }
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .ok_or("token_unknown_key")?;
    let key = view.keys.get(kid).ok_or("token_unknown_key")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.set_issuer(&[issuer]);
    match kind {
        TokenKind::Agent => validation.set_required_spec_claims(&["exp", "sub", "iss"]),
        TokenKind::Browser { audience } => {
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            validation.set_audience(&[audience]);
        }
    }
    jsonwebtoken::decode::<T>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "token_bad_signature",
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => "token_wrong_issuer",
            jsonwebtoken::errors::ErrorKind::InvalidAudience => "token_wrong_audience",
            _ => "token_malformed",
        })
}

/// What is checked on every request, cached signature or not.
fn check_claims(
    view: &Inner,
    claims: SessionClaims,
    peer: &PeerCertificate,
    now: i64,
) -> Result<SessionClaims, &'static str> {
    if claims.exp <= now {
        return Err("token_expired");
    }
    if claims.nbf > now + SKEW_SECS {
        return Err("token_not_yet_valid");
    }
    let bound =
        subtle::ConstantTimeEq::ct_eq(peer.thumbprint.as_bytes(), claims.cnf.x5t_s256.as_bytes());
    if !bool::from(bound) || claims.device != peer.device_id {
        return Err("token_not_bound_to_certificate");
    }
    if view.sessions.contains(&claims.sid) {
        return Err("session_revoked");
    }
    if view.devices.contains(&claims.device) || view.certificates.contains(&peer.serial) {
        return Err("device_revoked");
    }
    if view.users.contains(&claims.sub) {
        return Err("user_suspended");
    }
    Ok(claims)
}
