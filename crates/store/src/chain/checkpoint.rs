//! Signed checkpoints: the controller's Ed25519 signature over the chain's
//! head at a moment. Each commits to every record up to its `last_id`
//! (through the hash chain), so the latest one that verifies is what a
//! rewritten history must match.
//!
//! The private key is sealed with the KEK and never stored in clear; the
//! public key is exported beside the checkpoints so that a verifier off the
//! host can check them, preferably against a copy pinned earlier.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::put_bytes;

const CHECKPOINT_TAG: &[u8] = b"umbra.audit.checkpoint.v1";

/// What a checkpoint states about the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    pub ts: i64,
    /// The chain's first record, 0 while no record is chained.
    pub genesis_id: i64,
    /// How many records predate the chain (unhashed).
    pub legacy_count: i64,
    pub last_id: i64,
    pub last_hash: [u8; 32],
}

impl CheckpointBody {
    /// The signed message: tag, the key's id, then the fields (integers 8
    /// bytes big-endian, the key id length-prefixed).
    pub fn message(&self, key_id: &str) -> Vec<u8> {
        let mut h = Sha256::new();
        put_bytes(&mut h, CHECKPOINT_TAG);
        put_bytes(&mut h, key_id.as_bytes());
        h.update(self.ts.to_be_bytes());
        h.update(self.genesis_id.to_be_bytes());
        h.update(self.legacy_count.to_be_bytes());
        h.update(self.last_id.to_be_bytes());
        h.update(self.last_hash);
        // Sign the digest: a fixed-size message whatever the encoding grows to.
        h.finalize().to_vec()
    }
}

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub body: CheckpointBody,
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// A public key that checks checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses 64 hex digits (as `audit-key.pub` and exports hold it).
    pub fn from_hex(text: &str) -> Option<Self> {
        super::from_hex(text.trim()).map(Self)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 16 hex digits of SHA-256 of the key: names it in records.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    /// Whether `cp` was signed by this key (and names it).
    pub fn verifies(&self, cp: &Checkpoint) -> bool {
        let Ok(signature) = hex::decode(&cp.signature) else {
            return false;
        };
        cp.key_id == self.key_id()
            && UnparsedPublicKey::new(&signature::ED25519, self.0)
                .verify(&cp.body.message(&cp.key_id), &signature)
                .is_ok()
    }
}

/// The controller's checkpoint-signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public.to_hex())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audit checkpoint key: {0}")]
pub struct KeyError(&'static str);

impl SigningKey {
    /// A new key, as PKCS#8 (to be sealed before it is stored).
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| KeyError("cannot generate"))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError("malformed PKCS#8"))?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| KeyError("public key is not 32 bytes"))?,
        );
        Ok(Self { pair, public })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `body`: the checkpoint to store (its `id` is assigned then).
    pub fn sign(&self, body: CheckpointBody) -> Checkpoint {
        let key_id = self.public.key_id();
        let signature = hex::encode(self.pair.sign(&body.message(&key_id)).as_ref());
        Checkpoint {
            id: 0,
            body,
            key_id,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CheckpointBody {
        CheckpointBody {
            ts: 1_700_000_000,
            genesis_id: 1,
            legacy_count: 0,
            last_id: 42,
            last_hash: [7; 32],
        }
    }

    #[test]
    fn signatures_cover_every_field() {
        let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("gen")).expect("key");
        let cp = key.sign(body());
        assert!(key.public_key().verifies(&cp));
        let altered = [
            CheckpointBody {
                last_id: 41,
                ..body()
            },
            CheckpointBody {
                last_hash: [8; 32],
                ..body()
            },
            CheckpointBody { ts: 1, ..body() },
            CheckpointBody {
                genesis_id: 2,
                ..body()
            },
            CheckpointBody {
                legacy_count: 1,
                ..body()
            },
        ];
        for b in altered {
            let forged = Checkpoint {
                body: b,
                ..cp.clone()
            };
            assert!(!key.public_key().verifies(&forged), "{forged:?}");
        }
        let other =
            SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("gen")).expect("key");
        assert!(!other.public_key().verifies(&cp), "another key");
        let garbage = Checkpoint {
            signature: "zz".into(),
            ..cp.clone()
        };
        assert!(!key.public_key().verifies(&garbage));
        let round = PublicKey::from_hex(&key.public_key().to_hex()).expect("hex");
        assert_eq!(&round, key.public_key());
    }
}
