//! The audit log's hash chain: what makes it tamper-evident, not just
//! append-only.
//!
//! The database's append-only triggers stop mistakes; they do not stop
//! someone with write access to the database, who can drop them. So every
//! record carries the hash of the one before it ([`record_hash`]), computed
//! inside the transaction that appends it (under the chain head's row lock,
//! so concurrent appenders — several controllers, gateways' batches —
//! cannot fork the chain), and the controller periodically signs the head
//! ([`checkpoint`]) with an Ed25519 key sealed by the KEK. [`verify`] walks
//! the records and checkpoints and names the first bad one.
//!
//! An attacker who edits a record and recomputes every later hash keeps
//! the chain self-consistent, but not the signed checkpoints: the first
//! checkpoint after the edit disagrees. One who also deletes those
//! checkpoints is the limit of what a log on the same host can show, which
//! is why checkpoints are exported off the host (`umbra admin audit
//! export`) and can be checked against later (`verify --anchor`).
//!
//! Records written before the chain existed (migration 0013) carry no hash:
//! the chain starts at the first record appended after it, whose previous
//! hash is [`GENESIS`]. Their number is signed in every checkpoint, so
//! adding or removing such a record is detected; their content is not
//! protected.

pub mod checkpoint;
pub mod verify;

use sha2::{Digest, Sha256};

/// The version of the canonical encoding below, stored with every record.
pub const HASH_VERSION: i64 = 1;

/// The "previous hash" of the chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Domain separation: a record hash can never be mistaken for a checkpoint
/// message or anything else hashed with SHA-256.
const RECORD_TAG: &[u8] = b"umbra.audit.record.v1";

/// A record's fields, as hashed. Borrowed, so both an event being appended
/// and a record read back can be hashed without copies.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    pub id: i64,
    pub ts: i64,
    pub actor: &'a str,
    pub source_ip: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub outcome: &'a str,
    pub reason: &'a str,
    pub request_id: &'a str,
    pub count: i64,
}

/// The hash of version 1: SHA-256 over the tag, then the id, the previous
/// hash, the time, seven length-prefixed strings and the count. Integers
/// are 8 bytes big-endian; each string is its byte length (8 bytes,
/// big-endian) followed by its UTF-8 bytes, so no choice of field contents
/// can make two different records encode alike.
pub fn record_hash(prev: &[u8; 32], f: &Fields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    put_bytes(&mut h, RECORD_TAG);
    h.update(f.id.to_be_bytes());
    h.update(prev);
    h.update(f.ts.to_be_bytes());
    for s in [
        f.actor,
        f.source_ip,
        f.action,
        f.resource,
        f.outcome,
        f.reason,
        f.request_id,
    ] {
        put_bytes(&mut h, s.as_bytes());
    }
    h.update(f.count.to_be_bytes());
    h.finalize().into()
}

pub(crate) fn put_bytes(h: &mut Sha256, bytes: &[u8]) {
    // usize is at most 64 bits on every supported target.
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Lowercase hex, as hashes are stored and exported.
pub fn to_hex(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

/// Parses a stored or exported hash; `None` unless exactly 64 hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// A chained record's link: its encoding version, the previous record's
/// hash and its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub version: i64,
    pub prev_hash: String,
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(actor: &'a str, resource: &'a str) -> Fields<'a> {
        Fields {
            id: 7,
            ts: 1_700_000_000,
            actor,
            source_ip: "10.0.0.1",
            action: "login",
            resource,
            outcome: "allow",
            reason: "",
            request_id: "r1",
            count: 1,
        }
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        // Without length prefixes these two would concatenate alike.
        let a = record_hash(&GENESIS, &fields("ab", "c"));
        let b = record_hash(&GENESIS, &fields("a", "bc"));
        assert_ne!(a, b);
    }

    #[test]
    fn every_input_changes_the_hash() {
        let base = fields("ann", "svc");
        let h = record_hash(&GENESIS, &base);
        assert_ne!(h, record_hash(&[1; 32], &base), "previous hash");
        assert_ne!(h, record_hash(&GENESIS, &Fields { id: 8, ..base }), "id");
        assert_ne!(
            h,
            record_hash(&GENESIS, &Fields { count: 2, ..base }),
            "count"
        );
        assert_ne!(h, record_hash(&GENESIS, &Fields { ts: 1, ..base }), "time");
        assert_eq!(h, record_hash(&GENESIS, &base), "deterministic");
    }

    #[test]
    fn the_encoding_is_stable() {
        // Version 1 is a stored format: this value must never change. (It
        // was computed independently, from the description in docs/api.md.)
        assert_eq!(
            to_hex(&record_hash(&GENESIS, &fields("ann", "svc"))),
            "0acde753c54ecb9c6155b9701a6e01784c9889121cec6836d78c7406b5deafed"
        );
        assert_eq!(from_hex(&to_hex(&[0xab; 32])), Some([0xab; 32]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }
}
