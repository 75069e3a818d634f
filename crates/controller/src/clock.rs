//! Injectable time, shared with the gateway: see [`umbra_pki::clock`].

pub use umbra_pki::clock::*;
