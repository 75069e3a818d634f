//! `X-Umbra-Jwt-Assertion`: a short-lived ES256 JWT in which the gateway
//! vouches for the identity it forwards. Its audience is the service, so a
//! leaked assertion is useless at any other upstream; it is verified with
//! the gateway's key from the controller's JWKS.
//!
//! Signing costs an ECDSA operation, so an assertion is reused for the same
//! session and service until half its lifetime has passed; it never
//! outlives the session.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use umbra_proto::token::{AssertionClaims, SessionClaims};

use crate::identity::AssertionKey;

/// Cached assertions beyond this are dropped wholesale (a memory bound, not
/// a correctness one: a miss only costs a signature).
const CACHE_MAX: usize = 10_000;

pub struct AssertionSigner {
    gateway: String,
    kid: String,
    key: EncodingKey,
    ttl: i64,
    cache: Mutex<HashMap<(String, String), (String, i64)>>,
}

impl AssertionSigner {
    pub fn new(gateway: &str, key: &AssertionKey, ttl: i64) -> Self {
        Self {
            gateway: gateway.to_owned(),
            kid: key.kid.clone(),
            key: key.encoding.clone(),
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    pub fn issuer(&self) -> String {
        format!("umbra-gateway:{}", self.gateway)
    }

    /// An assertion of `session` for `service`, valid at `now`.
    pub fn assert(
        &self,
        session: &SessionClaims,
        service: &str,
        now: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let key = (session.sid.clone(), service.to_owned());
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((jwt, exp)) = cache.get(&key)
            && exp - now > self.ttl / 2
        {
            return Ok(jwt.clone());
        }
        let exp = (now + self.ttl).min(session.exp);
        let claims = AssertionClaims {
            iss: self.issuer(),
            sub: session.sub.clone(),
            aud: service.to_owned(),
            sid: session.sid.clone(),
            device: session.device.clone(),
            groups: session.groups.clone(),
            risk: session.risk,
            iat: now,
            exp,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)?;
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (jwt.clone(), exp));
        Ok(jwt)
    }

    /// Forgets a session's assertions (it was revoked).
    pub fn forget(&self, sid: &str) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(s, _), _| s != sid);
    }
}
