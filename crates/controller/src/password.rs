//! Password hashing with argon2id (PHC strings), off the async runtime.
//!
//! Verification always costs one full hash, also for unknown users (against
//! a dummy hash), so response time does not reveal which user names exist.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::config::Argon2Cost;

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    dummy: std::sync::Arc<String>,
}

/// Longest password accepted: argon2 hashes any length, but an attacker's
/// megabyte password should not cost us more than a user's.
pub const MAX_PASSWORD_LEN: usize = 1024;

impl Passwords {
    pub fn new(cost: &Argon2Cost) -> Result<Self, argon2::Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)?;
        let dummy = hash_with(&params, b"umbra-dummy-password")
            .map_err(|_| argon2::Error::OutputTooShort)?;
        Ok(Self {
            params,
            dummy: std::sync::Arc::new(dummy),
        })
    }

    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, String> {
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, password.as_bytes()))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Checks `password` against `stored` (or against a dummy when `None`).
    pub async fn verify(&self, password: Zeroizing<String>, stored: Option<String>) -> bool {
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let ok = tokio::task::spawn_blocking(move || {
            let Ok(hash) = PasswordHash::new(&stored) else {
                return false;
            };
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        ok && real
    }
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let p = Passwords::new(&Argon2Cost {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
        })
        .expect("params");
        let h = p
            .hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{h}");
        assert!(
            p.verify(Zeroizing::new("correct horse".into()), Some(h.clone()))
                .await
        );
        assert!(!p.verify(Zeroizing::new("wrong".into()), Some(h)).await);
        assert!(
            !p.verify(Zeroizing::new("umbra-dummy-password".into()), None)
                .await
        );
    }
}
