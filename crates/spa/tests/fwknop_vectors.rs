//! Every vector in fixtures/fwknop_vectors.txt (captured from the stock
//! fwknop 2.6.10 client or built deterministically, all accepted by the
//! real libfko) must decode to its recorded plaintext, and the
//! deterministic ones must re-encode byte for byte.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use umbra_spa::fwknop::{self, DigestType, EncryptionMode, FwknopKeys, MessageType};

const VECTORS: &str = include_str!("fixtures/fwknop_vectors.txt");
const KEY_B64: &str = "dYGwY3EiluwwBYCR5PlXSyFbNIINExOGQEjK3rQPz9c";
const HMAC_B64: &str =
    "GlgORKNCgu0gn6/vFHPBQKOjKablPt3gUPSeKfvjYBvA5pmogyNkayzZHg6Jlr3qslSbK2++CLmewC+nf3vB/w";

/// `[Vn]` sections as `name -> (header line, field -> value)`.
fn sections() -> BTreeMap<u32, (String, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in VECTORS.lines() {
        if let Some(rest) = line.strip_prefix("[V") {
            let (n, _) = rest.split_once(']').unwrap();
            let n: u32 = n.parse().unwrap();
            out.insert(n, (line.to_string(), BTreeMap::new()));
            current = Some(n);
        } else if line.starts_with('[') {
            current = None;
        } else if let (Some(n), Some((k, v))) = (current, line.split_once('=')) {
            let v = v.trim().split("   ").next().unwrap().trim().to_string();
            out.get_mut(&n).unwrap().1.insert(k.trim().to_string(), v);
        }
    }
    out
}

fn keys_for(n: u32) -> FwknopKeys {
    let key = fwknop::b64::decode(KEY_B64.as_bytes()).unwrap();
    let hkey = fwknop::b64::decode(HMAC_B64.as_bytes()).unwrap();
    match n {
        10 => FwknopKeys::new(&key, EncryptionMode::Cbc, Some((&hkey, DigestType::Sha512))),
        12 => FwknopKeys::new(b"fwknop-test-passphrase", EncryptionMode::Cbc, None),
        13 => FwknopKeys::new(b"shortpw", EncryptionMode::LegacyIv, None),
        _ => FwknopKeys::new(&key, EncryptionMode::Cbc, Some((&hkey, DigestType::Sha256))),
    }
    .unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn all_thirteen_vectors_decode_to_their_plaintext() {
    let all = sections();
    assert_eq!(all.len(), 13, "fixture should hold V1..V13");
    for (n, (title, f)) in &all {
        let packet = &f["packet"];
        let m = fwknop::decode(packet.as_bytes(), &keys_for(*n))
            .unwrap_or_else(|e| panic!("V{n} ({title}) refused: {e}"));
        assert_eq!(&m.to_plaintext(), &f["plaintext"], "V{n} plaintext");
        assert_eq!(m.version, "3.0.0");
    }
}

#[test]
fn deterministic_vectors_reencode_byte_for_byte() {
    for (n, (_, f)) in sections() {
        let Some(salt) = f.get("salt_hex") else {
            continue;
        };
        let keys = keys_for(n);
        let m = fwknop::decode(f["packet"].as_bytes(), &keys).unwrap();
        let salt: [u8; 8] = hex(salt).try_into().unwrap();
        let again = fwknop::encode_with_salt(&m, &keys, salt).unwrap();
        assert_eq!(again, f["packet"], "V{n} re-encode");
    }
}

#[test]
fn decoded_fields_match_the_recorded_ones() {
    let all = sections();
    let v1 = fwknop::decode(all[&1].1["packet"].as_bytes(), &keys_for(1)).unwrap();
    assert_eq!(v1.username, "root");
    assert_eq!(v1.timestamp, 1_795_420_932);
    assert_eq!(v1.message, "10.66.0.2,tcp/22");
    assert_eq!(v1.access.as_ref().unwrap().ports[0].to_string(), "tcp/22");
    assert_eq!(
        fwknop::b64::encode(&fwknop::replay_digest(all[&1].1["packet"].as_bytes())),
        all[&1].1["replay_digest"]
    );
    let v3 = fwknop::decode(all[&3].1["packet"].as_bytes(), &keys_for(3)).unwrap();
    assert_eq!(v3.username, "alice");
    assert_eq!(v3.client_timeout, Some(45));
    assert_eq!(v3.message_type, MessageType::ClientTimeoutAccess);
    let v8 = fwknop::decode(all[&8].1["packet"].as_bytes(), &keys_for(8)).unwrap();
    assert_eq!(v8.nat_access.as_deref(), Some("10.66.0.1,2222"));
    assert_eq!(v8.client_timeout, Some(60));
    let v9 = fwknop::decode(all[&9].1["packet"].as_bytes(), &keys_for(9)).unwrap();
    assert_eq!(v9.message_type, MessageType::Command);
    assert!(v9.access.is_none());
    let v10 = fwknop::decode(all[&10].1["packet"].as_bytes(), &keys_for(10)).unwrap();
    assert_eq!(v10.digest_type, DigestType::Md5);
    let v11 = fwknop::decode(all[&11].1["packet"].as_bytes(), &keys_for(11)).unwrap();
    assert!(v11.access.unwrap().allow_ip.is_unspecified());
}

#[test]
fn wrong_keys_and_modes_are_refused() {
    let all = sections();
    let p = all[&1].1["packet"].as_bytes();
    let key = fwknop::b64::decode(KEY_B64.as_bytes()).unwrap();
    let other = FwknopKeys::new(
        &key,
        EncryptionMode::Cbc,
        Some((b"another key", DigestType::Sha256)),
    )
    .unwrap();
    assert_eq!(fwknop::decode(p, &other), Err(umbra_spa::Refusal::BadMac));
    // Right HMAC key, wrong encryption key: HMAC passes, decryption fails.
    let hkey = fwknop::b64::decode(HMAC_B64.as_bytes()).unwrap();
    let wrong = FwknopKeys::new(
        b"not the key",
        EncryptionMode::Cbc,
        Some((&hkey, DigestType::Sha256)),
    )
    .unwrap();
    assert_eq!(
        fwknop::decode(p, &wrong),
        Err(umbra_spa::Refusal::DecryptionFailed)
    );
    // Legacy packet read in CBC mode with the bare passphrase: wrong key.
    let v13 = all[&13].1["packet"].as_bytes();
    let cbc = FwknopKeys::new(b"shortpw", EncryptionMode::Cbc, None).unwrap();
    assert!(fwknop::decode(v13, &cbc).is_err());
}
