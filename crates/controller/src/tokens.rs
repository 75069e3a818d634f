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
use sha2::{Digest, Sha256};

use umbra_proto::token::BROWSER_TOKEN_TYPE;
pub use umbra_proto::token::{BrowserClaims, Confirmation, SessionClaims};

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
    #[error("token_key_retired")]
    RetiredKey,
    #[error("token_bad_signature")]
    BadSignature,
    #[error("token_expired")]
    Expired,
    #[error("token_not_yet_valid")]
    NotYetValid,
    #[error("token_wrong_issuer")]
    WrongIssuer,
    #[error("token_wrong_kind")]
    WrongKind,
}

/// One signing key as loaded from the store.
pub struct KeyMaterial {
    pub pkcs8: zeroize::Zeroizing<Vec<u8>>,
    /// `None` for the key that signs; otherwise when it stops verifying.
    pub retire_at: Option<i64>,
}

struct PublicKey {
    decoding: DecodingKey,
    jwk: Jwk,
    retire_at: Option<i64>,
}

struct KeySet {
    kid: String,
    encoding: EncodingKey,
    public: HashMap<String, PublicKey>,
}

/// Signs with the current key; verifies with every key not yet retired.
/// The key set is swapped whole when keys rotate (here or, read back from
/// the store, on another controller).
impl TokenError {
    /// The audit-trail reason.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::AlgNone => "token_alg_none",
            Self::AlgorithmRefused => "token_algorithm_refused",
            Self::UnknownKey => "token_unknown_key",
            Self::RetiredKey => "token_key_retired",
            Self::BadSignature => "token_bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::WrongKind => "token_wrong_kind",
        }
    }
}

pub struct TokenSigner {
    issuer: String,
    /// When the keys were last re-read from the store (Unix seconds).
    reloaded_at: std::sync::atomic::AtomicI64,
    keys: std::sync::RwLock<std::sync::Arc<KeySet>>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.current().kid)
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

/// The key id: a hash of the public key, so every controller derives the same.
pub fn kid_of(pkcs8: &[u8]) -> Result<String, String> {
    let key = rcgen::KeyPair::try_from(pkcs8).map_err(|e| e.to_string())?;
    Ok(hex::encode(&Sha256::digest(key.public_key_raw())[..8]))
}

fn key_set(keys: &[KeyMaterial]) -> Result<KeySet, String> {
    let mut current = None;
    let mut public = HashMap::new();
    for k in keys {
        let kid = kid_of(&k.pkcs8)?;
        let encoding = EncodingKey::from_ec_der(&k.pkcs8);
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| e.to_string())?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        if k.retire_at.is_none() && current.is_none() {
            current = Some((kid.clone(), encoding));
        }
        public.insert(
            kid,
            PublicKey {
                decoding,
                jwk,
                retire_at: k.retire_at,
            },
        );
    }
    let (kid, encoding) = current.ok_or("no current signing key")?;
    Ok(KeySet {
        kid,
        encoding,
        public,
    })
}

impl TokenSigner {
    /// `keys` newest first; the first unretired one signs.
    pub fn new(issuer: &str, keys: &[KeyMaterial]) -> Result<Self, String> {
        let set = key_set(keys)?;
        Ok(Self {
            issuer: issuer.to_owned(),
            reloaded_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            keys: std::sync::RwLock::new(std::sync::Arc::new(set)),
        })
    }

    pub fn from_pkcs8(issuer: &str, pkcs8: &[u8]) -> Result<Self, String> {
        Self::new(
            issuer,
            &[KeyMaterial {
                pkcs8: zeroize::Zeroizing::new(pkcs8.to_vec()),
                retire_at: None,
            }],
        )
    }

    /// Swaps in a new key set (after a rotation).
    pub fn replace(&self, keys: &[KeyMaterial]) -> Result<(), String> {
        let set = std::sync::Arc::new(key_set(keys)?);
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
        Ok(())
    }

    /// True at most once per second: bounds the store reads that unknown
    /// key ids (which anyone can put in a token) can cause.
    pub fn claim_reload(&self, now: i64) -> bool {
        let last = self.reloaded_at.load(std::sync::atomic::Ordering::Relaxed);
        now > last
            && self
                .reloaded_at
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
    }

    fn current(&self) -> std::sync::Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn current_kid(&self) -> String {
        self.current().kid.clone()
    }

    /// The public keys a verifier should accept at `now`.
    pub fn jwks(&self, now: i64) -> JwkSet {
        let set = self.current();
        let mut keys: Vec<&PublicKey> = set
            .public
            .values()
            .filter(|k| k.retire_at.is_none_or(|t| t > now))
            .collect();
        // The signing key first, then the others in a stable order.
        keys.sort_by_key(|k| (k.retire_at.is_some(), k.jwk.common.key_id.clone()));
        JwkSet {
            keys: keys.into_iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn sign(&self, claims: &SessionClaims) -> Result<String, String> {
        let set = self.current();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(set.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &set.encoding).map_err(|e| e.to_string())
    }

    /// Signs a browser session token (the cookie's value): its own `typ`
    /// and an audience, so it is never taken for an agent token.
    pub fn sign_browser(&self, claims: &BrowserClaims) -> Result<String, String> {
        let set = self.current();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(set.kid.clone());
        header.typ = Some(BROWSER_TOKEN_TYPE.into());
        jsonwebtoken::encode(&header, claims, &set.encoding).map_err(|e| e.to_string())
    }

    /// Verifies an agent's session token. A browser token is refused
    /// (its `typ`, and its audience, which agent tokens never carry).
    pub fn verify(&self, token: &str, now: i64) -> Result<SessionClaims, TokenError> {
        let claims: SessionClaims = self.decode(token, now, false, None)?;
        check_times(claims.exp, claims.nbf, now)?;
        Ok(claims)
    }

    /// Verifies a browser session token for `audience`
    /// ([`umbra_proto::token::browser_audience`]).
    pub fn verify_browser(
        &self,
        token: &str,
        audience: &str,
        now: i64,
    ) -> Result<BrowserClaims, TokenError> {
        let claims: BrowserClaims = self.decode(token, now, true, Some(audience))?;
        check_times(claims.exp, claims.nbf, now)?;
        Ok(claims)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        now: i64,
        browser: bool,
        audience: Option<&str>,
    ) -> Result<T, TokenError> {
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
        let is_browser = header.get("typ").and_then(|t| t.as_str()) == Some(BROWSER_TOKEN_TYPE);
        if is_browser != browser {
            return Err(TokenError::WrongKind);
        }
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .ok_or(TokenError::UnknownKey)?;
        let set = self.current();
        let key = set.public.get(kid).ok_or(TokenError::UnknownKey)?;
        if key.retire_at.is_some_and(|t| t <= now) {
            return Err(TokenError::RetiredKey);
        }
        let mut validation = Validation::new(Algorithm::ES256);
        // Expiry is checked by the caller against the injectable clock,
        // not the library's reading of the system time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_issuer(&[self.issuer.as_str()]);
        // Without an expected audience, a token that names one is refused:
        // an agent token never does.
        match audience {
            Some(aud) => {
                validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
                validation.set_audience(&[aud]);
            }
            None => validation.set_required_spec_claims(&["exp", "sub", "iss"]),
        }
        let data = jsonwebtoken::decode::<T>(token, &key.decoding, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmRefused,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongKind,
                _ => TokenError::Malformed,
            }
        })?;
        Ok(data.claims)
    }
}

fn check_times(exp: i64, nbf: i64, now: i64) -> Result<(), TokenError> {
    if exp <= now {
        return Err(TokenError::Expired);
    }
    if nbf > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> SessionClaims {
        SessionClaims {
            mfa_at: None,
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
        let jwks = serde_json::to_value(s.jwks(0)).expect("jwks");
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
        let kid = s.jwks(0).keys[0].common.key_id.clone();
        let pubkey = serde_json::to_vec(&s.jwks(0).keys[0]).expect("jwk");
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid;
        let hs = jsonwebtoken::encode(&h, &claims(2000), &EncodingKey::from_secret(&pubkey))
            .expect("hs");
        assert_eq!(s.verify(&hs, 1500), Err(TokenError::AlgorithmRefused));
        // Garbage.
        assert_eq!(s.verify("not.a.jwt", 1500), Err(TokenError::Malformed));
        // An agent token signed as a browser one, and the other way round.
        assert_eq!(
            s.verify_browser(&t, "umbra-browser:td", 1500),
            Err(TokenError::WrongKind)
        );
        assert_eq!(s.verify("", 1500), Err(TokenError::Malformed));
    }

    fn browser(aud: &str) -> BrowserClaims {
        BrowserClaims {
            iss: "umbra".into(),
            aud: aud.into(),
            sub: "alice".into(),
            sid: "b1".into(),
            groups: vec![],
            risk: 5,
            iat: 1000,
            nbf: 1000,
            exp: 2000,
            mfa_at: 1000,
        }
    }

    #[test]
    fn browser_tokens_are_their_own_kind_and_audience() {
        let s = signer();
        let aud = umbra_proto::token::browser_audience("a.example");
        let t = s.sign_browser(&browser(&aud)).expect("sign");
        assert_eq!(
            s.verify_browser(&t, &aud, 1500).expect("valid"),
            browser(&aud)
        );
        assert_eq!(
            s.verify(&t, 1500),
            Err(TokenError::WrongKind),
            "not an agent token"
        );
        let other = umbra_proto::token::browser_audience("b.example");
        assert_eq!(
            s.verify_browser(&t, &other, 1500),
            Err(TokenError::WrongKind)
        );
        assert_eq!(s.verify_browser(&t, &aud, 2000), Err(TokenError::Expired));
        // An agent-typed header over browser claims is no cookie either.
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(s.current_kid());
        let set = s.current();
        let plain = jsonwebtoken::encode(&h, &browser(&aud), &set.encoding).expect("sign");
        assert_eq!(
            s.verify_browser(&plain, &aud, 1500),
            Err(TokenError::WrongKind)
        );
        // Refused as an agent token too: no device binding, and an audience.
        assert!(s.verify(&plain, 1500).is_err());
    }
}
