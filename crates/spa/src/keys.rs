//! Native SPA key material: the device secret and per-gateway keys.
//!
//! At enrollment the controller gives the device a random 32-byte secret
//! and keeps a copy. Each gateway receives only
//! `HKDF-SHA256(ikm = device secret, salt = none, info = "umbra-spa v1" ‖ gateway id)`
//! for the devices allowed to reach it. HKDF is one-way, so a compromised
//! gateway learns its own keys but cannot compute another gateway's, and
//! cannot forge knocks that any other gateway would accept.
//!
//! Both types zeroize on drop and print `***` in `Debug`.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a device secret and of a gateway key.
pub const KEY_LEN: usize = 32;

/// HKDF `info` prefix; the gateway identity follows it. A fixed-length
/// prefix keeps the concatenation unambiguous and versions the derivation.
pub const HKDF_INFO_PREFIX: &[u8] = b"umbra-spa v1";

/// Wrong-size key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("SPA key must be {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("SPA key is not valid base64")]
    Base64,
}

/// The device's 32-byte SPA secret (device and controller only).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DeviceSecret([u8; KEY_LEN]);

/// A per-gateway native SPA key: what a gateway holds for one device.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GatewayKey([u8; KEY_LEN]);

macro_rules! key_common {
    ($t:ident) => {
        impl $t {
            /// Wrap raw key bytes.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// Wrap a slice that must be exactly [`KEY_LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
                let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Length {
                    expected: KEY_LEN,
                    got: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// Parse standard (padded or unpadded) base64.
            pub fn from_base64(text: &str) -> Result<Self, KeyError> {
                use base64::Engine;
                let bytes = zeroize::Zeroizing::new(
                    crate::fwknop::b64::PERMISSIVE
                        .decode(text.trim())
                        .map_err(|_| KeyError::Base64)?,
                );
                Self::from_slice(&bytes)
            }

            /// Standard base64 (for handing the key to its holder).
            pub fn to_base64(&self) -> String {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(self.0)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "(***)"))
            }
        }

        impl PartialEq for $t {
            /// Constant time: keys are secrets.
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $t {}
    };
}

key_common!(DeviceSecret);
key_common!(GatewayKey);

impl DeviceSecret {
    /// A fresh random secret (controller side, at enrollment).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }
}

/// Derive the key `gateway_id` (e.g. its SPIFFE ID) holds for this device.
pub fn derive_gateway_key(secret: &DeviceSecret, gateway_id: &str) -> GatewayKey {
    let hk = Hkdf::<Sha256>::new(None, &secret.0);
    // Expand straight into the key so no stray copy is left unzeroized.
    let mut key = GatewayKey([0u8; KEY_LEN]);
    // HKDF-SHA256 can expand up to 8160 bytes; 32 is always valid, so the
    // error branch is unreachable (invariant, not peer input).
    if hk
        .expand_multi_info(&[HKDF_INFO_PREFIX, gateway_id.as_bytes()], &mut key.0)
        .is_err()
    {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    key
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_per_gateway() {
        let s = DeviceSecret::from_bytes([7; 32]);
        let a = derive_gateway_key(&s, "spiffe://umbra.test/gateway/a");
        let a2 = derive_gateway_key(&s, "spiffe://umbra.test/gateway/a");
        let b = derive_gateway_key(&s, "spiffe://umbra.test/gateway/b");
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_ne!(a.as_bytes(), s.as_bytes());
        let other = derive_gateway_key(
            &DeviceSecret::from_bytes([8; 32]),
            "spiffe://umbra.test/gateway/a",
        );
        assert_ne!(a, other);
    }

    #[test]
    fn known_answer() {
        // Pinned so the agent and gateway can never drift apart silently.
        let s = DeviceSecret::from_bytes([0; 32]);
        let k = derive_gateway_key(&s, "gw");
        let hk = Hkdf::<Sha256>::new(None, &[0u8; 32]);
        let mut expect = [0u8; 32];
        hk.expand(b"umbra-spa v1gw", &mut expect).unwrap();
        assert_eq!(k.as_bytes(), &expect);
    }

    #[test]
    fn debug_hides_secrets() {
        let s = DeviceSecret::generate();
        let k = derive_gateway_key(&s, "gw");
        assert_eq!(format!("{s:?}"), "DeviceSecret(***)");
        assert_eq!(format!("{k:?}"), "GatewayKey(***)");
    }

    #[test]
    fn base64_round_trip_and_length_errors() {
        let k = GatewayKey::from_bytes([9; 32]);
        assert_eq!(GatewayKey::from_base64(&k.to_base64()).unwrap(), k);
        assert_eq!(
            GatewayKey::from_slice(&[1; 16]),
            Err(KeyError::Length {
                expected: 32,
                got: 16
            })
        );
        assert_eq!(GatewayKey::from_base64("!!"), Err(KeyError::Base64));
    }
}
