//! Round trips and every structural refusal of the stateless layer.

use super::*;
use crate::native::{MAX_SERVICE_NAME, MIN_PACKET};

fn key(b: u8) -> GatewayKey {
    GatewayKey::from_bytes([b; 32])
}

fn knock(open: OpenAddr, services: &[&str]) -> Knock {
    Knock::new(
        Uuid::from_u128(0x1234),
        services.iter().map(|s| s.to_string()).collect(),
        open,
        1_800_000_000,
    )
}

#[test]
fn round_trip_all_address_kinds() {
    for addr in [
        OpenAddr::Source,
        OpenAddr::Addr("203.0.113.9".parse().unwrap()),
        OpenAddr::Addr("2001:db8::7".parse().unwrap()),
    ] {
        let k = knock(addr, &["ssh", "db.internal"]);
        let p = seal(&key(1), &k).unwrap();
        assert_eq!(open(&p, &key(1)).unwrap(), k);
        assert_eq!(peek_header(&p).unwrap().device, k.device);
    }
}

#[test]
fn minimum_and_maximum_sizes_are_exact() {
    let small = seal(&key(1), &knock(OpenAddr::Source, &["a"])).unwrap();
    assert_eq!(small.len(), MIN_PACKET);
    let long = "x".repeat(MAX_SERVICE_NAME);
    let names: Vec<&str> = (0..MAX_SERVICES).map(|_| long.as_str()).collect();
    let big = seal(
        &key(1),
        &knock(OpenAddr::Addr("::1".parse().unwrap()), &names),
    )
    .unwrap();
    assert_eq!(big.len(), MAX_PACKET);
    assert_eq!(open(&big, &key(1)).unwrap().services.len(), MAX_SERVICES);
}

#[test]
fn seal_rejects_bad_knocks() {
    assert!(matches!(
        seal(&key(1), &knock(OpenAddr::Source, &[])),
        Err(KnockError::ServiceCount { got: 0, .. })
    ));
    let nine: Vec<&str> = vec!["s"; MAX_SERVICES + 1];
    assert!(seal(&key(1), &knock(OpenAddr::Source, &nine)).is_err());
    for bad in ["", "with space", "naïve", &"y".repeat(MAX_SERVICE_NAME + 1)] {
        assert!(matches!(
            seal(&key(1), &knock(OpenAddr::Source, &[bad])),
            Err(KnockError::ServiceName(_))
        ));
    }
}

#[test]
fn wrong_key_is_bad_mac() {
    let p = seal(&key(1), &knock(OpenAddr::Source, &["ssh"])).unwrap();
    assert_eq!(open(&p, &key(2)), Err(Refusal::BadMac));
}

#[test]
fn every_tampered_byte_is_refused() {
    let p = seal(&key(1), &knock(OpenAddr::Source, &["ssh"])).unwrap();
    for i in 0..p.len() {
        for flip in [0x01u8, 0x80] {
            let mut t = p.clone();
            t[i] ^= flip;
            let r = open(&t, &key(1));
            assert!(r.is_err(), "byte {i} flip {flip:#x} accepted");
            let expected = match i {
                0..=2 => Refusal::BadMagic,
                3 => Refusal::UnsupportedVersion(t[3]),
                _ => Refusal::BadMac,
            };
            assert_eq!(r.unwrap_err(), expected, "byte {i}");
        }
    }
}

#[test]
fn truncated_and_oversized() {
    let p = seal(&key(1), &knock(OpenAddr::Source, &["ssh"])).unwrap();
    for n in 0..p.len() {
        let r = open(&p[..n], &key(1));
        assert!(r.is_err(), "truncated to {n} accepted");
        if n < MIN_PACKET {
            assert!(matches!(r, Err(Refusal::TooShort { .. })));
        }
    }
    let mut big = p.clone();
    big.resize(MAX_PACKET + 1, 0);
    assert!(matches!(open(&big, &key(1)), Err(Refusal::TooLong { .. })));
    // Extra bytes within the size limit break the tag.
    let mut longer = p;
    longer.push(0);
    assert_eq!(open(&longer, &key(1)), Err(Refusal::BadMac));
}

#[test]
fn authentic_but_malformed_bodies_are_refused() {
    // A key holder (a buggy or hostile agent) can seal any body; the parser
    // must still refuse it cleanly.
    fn seal_raw(body: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{AeadInOut, KeyInit};
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&[7; NONCE_LEN]);
        out.extend_from_slice(body);
        let c = chacha20poly1305::ChaCha20Poly1305::new(&[1u8; 32].into());
        let (h, b) = out.split_at_mut(HEADER_LEN);
        let tag = c
            .encrypt_inout_detached(&[7u8; NONCE_LEN].into(), h, b.into())
            .unwrap();
        out.extend_from_slice(&tag);
        out
    }
    let ts = 5u64.to_be_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ([&ts[..], &[9, 1, 1, b'a']].concat(), "unknown address kind"),
        (
            [&ts[..], &[0, 0, 1, b'a']].concat(),
            "service count out of range",
        ),
        (
            [&ts[..], &[0, 9, 1, b'a']].concat(),
            "service count out of range",
        ),
        ([&ts[..], &[0, 1, 2, b'a']].concat(), "truncated service"),
        ([&ts[..], &[0, 1, 1, b' ']].concat(), "invalid service name"),
        (
            [&ts[..], &[0, 1, 1, b'a', 0]].concat(),
            "trailing bytes after the services",
        ),
        ([&ts[..], &[4, 1, 1, 1]].concat(), "truncated IPv4 address"),
        (
            [&ts[..], &[6, 1, 2, 3, 4, 5, 6, 7, 8]].concat(),
            "truncated IPv6 address",
        ),
    ];
    for (body, why) in cases {
        assert_eq!(
            open(&seal_raw(&body), &key(1)),
            Err(Refusal::Malformed(why)),
            "{why}"
        );
    }
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    use rand::{Rng, RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    let good = seal(&key(1), &knock(OpenAddr::Source, &["ssh"])).unwrap();
    for _ in 0..20_000 {
        let len = rng.random_range(0..MAX_PACKET + 8);
        let mut p = vec![0u8; len];
        rng.fill_bytes(&mut p);
        if rng.random_bool(0.5) && p.len() >= 4 {
            p[..3].copy_from_slice(&MAGIC);
            p[3] = VERSION;
        }
        assert!(open(&p, &key(1)).is_err());
        let mut m = good.clone();
        let i = rng.random_range(0..m.len());
        m[i] = rng.random();
        if m != good {
            assert!(open(&m, &key(1)).is_err());
        }
    }
}
