//! fwknop-compatible SPA: the wire format of fwknop 2.6.10 / libfko (FKO
//! protocol 3.0.0), Rijndael + HMAC, so stock `fwknop` clients can knock an
//! Umbra gateway and Umbra's agent (`--fwknop`) can knock fwknopd.
//!
//! The normative description is `FWKNOP.md` (copied facts are cited by
//! section in each module). GnuPG mode is not supported.
//!
//! Layout:
//! - [`b64`]: libfko's base64 rules (`=` stripped, lenient decoder).
//! - [`digest`]: the digest/HMAC algorithms; [`HmacKey`], keyed once per
//!   stanza.
//! - [`crypto`]: `EVP_BytesToKey`, AES-256 modes, PKCS#7.
//! - [`message`]: the plaintext fields as types, and the encoder.
//! - [`parse`]: parsing a plaintext with libfko's validation rules.
//! - [`packet`]: structure checks, HMAC-then-decrypt [`decode`], [`encode`].
//! - [`access`]: `access.conf` stanzas with secure defaults.
//! - [`verify`]: the stateful [`FwknopVerifier`] returning a [`Grant`].

pub mod access;
pub mod b64;
pub mod crypto;
pub mod digest;
pub mod message;
pub mod packet;
pub mod parse;
pub mod verify;

pub use access::{
    AccessConfError, AccessOptions, IpNet, Sources, Stanza, parse_access_conf,
    parse_access_conf_with,
};
pub use crypto::EncryptionMode;
pub use digest::{DigestBuf, DigestType, HmacKey};
pub use message::{AccessRequest, Message, MessageType, Proto, ProtoPort};
pub use packet::{
    EncodeError, FwknopKeyError, FwknopKeys, check_structure, decode, encode, encode_with_salt,
    replay_digest,
};
pub use parse::parse_plaintext;
pub use verify::{DEFAULT_MAX_AGE, FwknopConfig, FwknopVerifier, Grant};
