//! Known answers for the KDF and every mode (reference values from the
//! Python `cryptography` library and vector V1 of fwknop_vectors.txt).

use super::*;
use crate::fwknop::DigestType;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn evp_bytes_to_key_matches_vector_v1() {
    let key = crate::fwknop::b64::decode(b"dYGwY3EiluwwBYCR5PlXSyFbNIINExOGQEjK3rQPz9c").unwrap();
    let salt: [u8; 8] = hex("932db7080ecd24df").try_into().unwrap();
    let (k, iv) = evp_bytes_to_key(&key, &salt, EncryptionMode::Cbc);
    assert_eq!(
        k.to_vec(),
        hex("f916f93574c6067afc27e011aa6bb2a8c531241a259365b218dbd0803767ad22")
    );
    assert_eq!(iv.to_vec(), hex("7ddd1dc028dd655fce60216a0cf7aa08"));
}

#[test]
fn legacy_mode_pads_short_keys_with_ascii_zero() {
    let salt = [1u8; 8];
    let (a, ai) = evp_bytes_to_key(b"shortpw", &salt, EncryptionMode::LegacyIv);
    let (b, bi) = evp_bytes_to_key(b"shortpw000000000", &salt, EncryptionMode::Cbc);
    assert_eq!(*a, *b);
    assert_eq!(*ai, *bi);
    // Longer keys are truncated to 16 in legacy mode.
    let (c, _) = evp_bytes_to_key(b"0123456789abcdefXYZ", &salt, EncryptionMode::LegacyIv);
    let (d, _) = evp_bytes_to_key(b"0123456789abcdef", &salt, EncryptionMode::Cbc);
    assert_eq!(*c, *d);
}

#[test]
fn modes_match_reference_and_round_trip() {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let iv: [u8; 16] = core::array::from_fn(|i| 100 + i as u8);
    let pt: Vec<u8> = (0..48).collect();
    let cases = [
        (
            EncryptionMode::Cbc,
            "1b4dd132a4c840a32931649f08e9c042097899abe7ae5b31fbe063c45c9287b248d94c83a5b7217cd0c16a1fc65c6c42",
        ),
        (
            EncryptionMode::Ecb,
            "5a6e045708fb7196f02e553d02c3a692e9c3ef8ab23453e6f0749cd636e7a88e61a6936e4e8f101c1cc1f993b542a0d4",
        ),
        (
            EncryptionMode::Cfb,
            "93d91323b225bd4a7684b5a0eab29ed3d27f9a4e077984dcf8e4e6371b40bee20a44e20beb7d34573cb5ce4b39e241ae",
        ),
        (
            EncryptionMode::Ofb,
            "93d91323b225bd4a7684b5a0eab29ed3fc36f4d0873666aed696346b0a271c97158e7dfac5e4b756b2ac3473edf26b2a",
        ),
        (
            EncryptionMode::Ctr,
            "93d91323b225bd4a7684b5a0eab29ed3a5f8991614c603cf6a6f8e418691ff8de0e0b872f28c8b7f8a7792a446abab20",
        ),
    ];
    for (mode, expected) in cases {
        let mut buf = pt.clone();
        crypt(mode, &key, &iv, &mut buf, true);
        assert_eq!(buf, hex(expected), "{mode}");
        crypt(mode, &key, &iv, &mut buf, false);
        assert_eq!(buf, pt, "{mode} round trip");
    }
}

#[test]
fn digest_names_lengths_and_parsing() {
    for d in DigestType::ALL {
        assert_eq!(d.hash(&[b"x"]).as_slice().len(), d.output_len());
        assert_eq!(d.name().parse::<DigestType>().unwrap(), d);
        assert_eq!(d.name().to_uppercase().parse::<DigestType>().unwrap(), d);
        assert!(DigestType::by_b64_len(d.b64_len()).contains(&d));
    }
    assert_eq!(
        "SHA3-256".parse::<DigestType>().unwrap(),
        DigestType::Sha3_256
    );
    assert!("sha224".parse::<DigestType>().is_err());
    assert_eq!(
        "CBC".parse::<EncryptionMode>().unwrap(),
        EncryptionMode::Cbc
    );
    assert_eq!(
        "Legacy".parse::<EncryptionMode>().unwrap(),
        EncryptionMode::LegacyIv
    );
    assert!("asymmetric".parse::<EncryptionMode>().is_err());
}

#[test]
fn hmac_sha256_rfc4231_case_2() {
    let mac = DigestType::Sha256
        .hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])
        .unwrap();
    assert_eq!(
        mac.as_slice(),
        &hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
    );
}

#[test]
fn prekeyed_hmac_matches_rfc4231_and_simple_hmac() {
    let mac = crate::fwknop::HmacKey::new(DigestType::Sha256, b"Jefe")
        .mac(&[b"what do ya want ", b"for nothing?"])
        .unwrap();
    assert_eq!(
        mac.as_slice(),
        &hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
    );
    // Every digest; keys shorter than, equal to and longer than each block
    // size (64, 128, 136, 72); messages empty, short and several blocks.
    let msg: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    for d in DigestType::ALL {
        for key_len in [1, 20, 64, 72, 100, 128, 136, 137, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 31 + 1) as u8).collect();
            let k = crate::fwknop::HmacKey::new(d, &key);
            assert_eq!(k.digest(), d);
            for len in [0, 10, 171, 300] {
                let (a, b) = msg[..len].split_at(len / 3);
                assert_eq!(
                    k.mac(&[a, b]).unwrap().as_slice(),
                    d.hmac(&key, &[&msg[..len]]).unwrap().as_slice(),
                    "{d} key {key_len} msg {len}"
                );
            }
        }
    }
    assert!(
        !format!(
            "{:?}",
            crate::fwknop::HmacKey::new(DigestType::Md5, b"secret")
        )
        .contains("secret")
    );
}

#[test]
fn md5_short_matches_md5_at_every_length() {
    use md5::Digest;
    let msg: Vec<u8> = (0..119u32).map(|i| (i * 13 + 5) as u8).collect();
    for len in 0..=119 {
        let mut out = [0u8; 16];
        md5_short(&msg[..len], &mut out);
        assert_eq!(out[..], md5::Md5::digest(&msg[..len])[..], "length {len}");
    }
    // Both KDF paths agree (long passwords take the streaming one).
    let salt = [9u8; 8];
    for pw_len in [1, 16, 32, 95, 96, 200] {
        let pw = vec![b'k'; pw_len];
        let (k, iv) = evp_bytes_to_key(&pw, &salt, EncryptionMode::Cbc);
        let mut d1 = md5::Md5::new();
        d1.update(&pw);
        d1.update(salt);
        let d1 = d1.finalize();
        assert_eq!(k[..16], d1[..], "password {pw_len}");
        let mut d2 = md5::Md5::new();
        d2.update(d1);
        d2.update(&pw);
        d2.update(salt);
        let d2 = d2.finalize();
        assert_eq!(k[16..], d2[..], "password {pw_len}");
        let mut d3 = md5::Md5::new();
        d3.update(d2);
        d3.update(&pw);
        d3.update(salt);
        assert_eq!(iv[..], d3.finalize()[..], "password {pw_len}");
    }
}

#[test]
fn lenient_unpadding() {
    assert_eq!(pkcs7_unpad_lenient(&[b'a', 2, 2]), b"a");
    assert_eq!(pkcs7_unpad_lenient(&[b'a', 1, 2]), &[b'a', 1, 2]);
    assert_eq!(pkcs7_unpad_lenient(&[b'a', 0]), &[b'a', 0]);
    assert_eq!(pkcs7_unpad_lenient(&[]), &[] as &[u8]);
    let mut v = vec![1u8; 16];
    pkcs7_pad(&mut v);
    assert_eq!(v.len(), 32);
    assert_eq!(pkcs7_unpad_lenient(&v), &[1u8; 16]);
}
