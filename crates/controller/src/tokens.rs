//! Session access tokens: ES256 JWTs, published through a JWKS.
//!
//! Verification accepts exactly ES256 with a known `kid`. The header's `alg`
//! is checked before anything else, so `alg: none` and the HS256/public-key
//! confusion (an HMAC "signed" with the public key) fail with a precise
//! reason instead of reaching a verifier. Tokens are bound to the device
//! certificate they were issued to (`cnf.x5t#S256`, RFC 8705).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
}

/// Why a token was refused; the string goes to the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token_malformed")]
    Malformed,
    #[error("token_alg_none")]
    AlgNone,
    #[error("token_algorithm_refused")]
    AlgorithmRefused,
    #[error("token_unknown_key")]
    UnknownKey,
    #[error("token_bad_signature")]
    BadSignature,
    #[error("token_expired")]
    Expired,
    #[error("token_not_yet_valid")]
    NotYetValid,
    #[error("token_wrong_issuer")]
    WrongIssuer,
}

pub struct TokenSigner {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    jwks: JwkSet,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("key", &"***")
            .finish()
    }
}

/// A fresh P-256 key, PKCS#8 DER.
pub fn generate_key() -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    Ok(zeroize::Zeroizing::new(key.serialize_der()))
}

impl TokenSigner {
    pub fn from_pkcs8(issuer: &str, pkcs8: &[u8]) -> Result<Self, String> {
        let key = rcgen::KeyPair::try_from(pkcs8).map_err(|e| e.to_string())?;
        let kid = hex::encode(&Sha256::digest(key.public_key_raw())[..8]);
        let encoding = EncodingKey::from_ec_der(pkcs8);
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| e.to_string())?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        Ok(Self {
            issuer: issuer.to_owned(),
            decoding: HashMap::from([(kid.clone(), decoding)]),
            kid,
            encoding,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn sign(&self, claims: &SessionClaims) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<SessionClaims, TokenError> {
        if token.len() > 8192 {
            return Err(TokenError::Malformed);
        }
        let header_b64 = token.split('.').next().ok_or(TokenError::Malformed)?;
        let header = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        match header.get("alg").and_then(|a| a.as_str()) {
            Some("ES256") => {}
            Some(a) if a.eq_ignore_ascii_case("none") => return Err(TokenError::AlgNone),
            Some(_) => return Err(TokenError::AlgorithmRefused),
            None => return Err(TokenError::Malformed),
        }
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .ok_or(TokenError::UnknownKey)?;
        let key = self.decoding.get(kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        // Expiry is checked below against the injectable clock, not the
        // library's reading of the system time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[self.issuer.as_str()]);
        let data = jsonwebtoken::decode::<SessionClaims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmRefused,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + 60 {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> SessionClaims {
        SessionClaims {
            iss: "umbra".into(),
            sub: "alice".into(),
            sid: "s1".into(),
            device: "d1".into(),
            groups: vec!["eng".into()],
            risk: 5,
            iat: 1000,
            nbf: 1000,
            exp,
            cnf: Confirmation {
                x5t_s256: "abc".into(),
            },
        }
    }

    fn signer() -> TokenSigner {
        TokenSigner::from_pkcs8("umbra", &generate_key().expect("key")).expect("signer")
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

    #[test]
    fn round_trip_and_expiry() {
        let s = signer();
        let t = s.sign(&claims(2000)).expect("sign");
        assert_eq!(s.verify(&t, 1500).expect("valid"), claims(2000));
        assert_eq!(s.verify(&t, 2000), Err(TokenError::Expired));
        let jwks = serde_json::to_value(s.jwks()).expect("jwks");
        assert_eq!(jwks["keys"][0]["kty"], "EC");
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert!(
            jwks["keys"][0].get("d").is_none(),
            "no private part in the JWKS"
        );
    }

    #[test]
    fn forgeries_are_refused_precisely() {
        let s = signer();
        let t = s.sign(&claims(2000)).expect("sign");
        let parts: Vec<&str> = t.split('.').collect();
        // Bad signature: claims changed under the old signature.
        let mut c = claims(2000);
        c.sub = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&c).expect("c")),
            parts[2]
        );
        assert_eq!(s.verify(&forged, 1500), Err(TokenError::BadSignature));
        // Signed by another key that claims our kid.
        let other =
            TokenSigner::from_pkcs8("umbra", &generate_key().expect("key")).expect("signer");
        let foreign = other.sign(&claims(2000)).expect("sign");
        let fp: Vec<&str> = foreign.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], fp[1], fp[2]);
        assert_eq!(s.verify(&spliced, 1500), Err(TokenError::BadSignature));
        assert_eq!(s.verify(&foreign, 1500), Err(TokenError::UnknownKey));
        // alg: none.
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            parts[1]
        );
        assert_eq!(s.verify(&none, 1500), Err(TokenError::AlgNone));
        // HS256 keyed with the public JWK (algorithm confusion).
        let kid = s.jwks().keys[0].common.key_id.clone();
        let pubkey = serde_json::to_vec(&s.jwks().keys[0]).expect("jwk");
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid;
        let hs = jsonwebtoken::encode(&h, &claims(2000), &EncodingKey::from_secret(&pubkey))
            .expect("hs");
        assert_eq!(s.verify(&hs, 1500), Err(TokenError::AlgorithmRefused));
        // Garbage.
        assert_eq!(s.verify("not.a.jwt", 1500), Err(TokenError::Malformed));
        assert_eq!(s.verify("", 1500), Err(TokenError::Malformed));
    }
}
