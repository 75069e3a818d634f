//! libfko's plaintext rules, one by one.

use super::*;
use crate::fwknop::{AccessRequest, ProtoPort};

/// Build `body:digest` for arbitrary fields (bypassing the typed encoder).
fn pt(body: &str) -> Vec<u8> {
    let d = DigestType::Sha256.hash(&[body.as_bytes()]);
    format!("{body}:{}", b64::encode(d.as_slice())).into_bytes()
}

fn enc(s: &str) -> String {
    b64::encode(s.as_bytes())
}

#[test]
fn access_message_round_trip() {
    let req: AccessRequest = "10.0.0.1,tcp/22,udp/53".parse().unwrap();
    let m = Message::access("bob", 1_800_000_000, req.clone(), Some(60));
    assert_eq!(m.message_type, MessageType::ClientTimeoutAccess);
    let back = parse_plaintext(m.to_plaintext().as_bytes()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.access, Some(req));
    assert_eq!(m.random.len(), 16);
}

#[test]
fn proto_port_rules_match_libfko() {
    assert!("tcp/22".parse::<ProtoPort>().is_ok());
    assert_eq!("tcp/022".parse::<ProtoPort>().unwrap().port, 22);
    for bad in [
        "icmp/8",
        "none/1",
        "tcpx/22",
        "TCP/22",
        "tcp/0",
        "tcp/65536",
        "tcp/",
        "tcp/123456",
        "tcp22",
    ] {
        assert!(bad.parse::<ProtoPort>().is_err(), "{bad}");
    }
    assert!("10.0.0.1".parse::<AccessRequest>().is_err());
    assert!("10.0.0,tcp/22".parse::<AccessRequest>().is_err());
    assert!("host.example,tcp/22".parse::<AccessRequest>().is_err());
}

#[test]
fn bad_decryption_and_digest() {
    assert_eq!(parse_plaintext(b"123:abc"), Err(Refusal::DecryptionFailed));
    assert_eq!(
        parse_plaintext(b"123456789012345x:abc:d:e:f:g:h"),
        Err(Refusal::DecryptionFailed)
    );
    let good = pt(&format!(
        "1234567890123456:{}:1800000000:3.0.0:1:{}",
        enc("root"),
        enc("10.0.0.1,tcp/22")
    ));
    assert!(parse_plaintext(&good).is_ok());
    let mut tampered = good.clone();
    tampered[20] ^= 1;
    assert!(matches!(
        parse_plaintext(&tampered),
        Err(Refusal::DigestMismatch) | Err(Refusal::Malformed(_))
    ));
    let mut short_digest = good.clone();
    short_digest.truncate(good.len() - 5);
    assert_eq!(
        parse_plaintext(&short_digest),
        Err(Refusal::Malformed("inner digest has an unknown length"))
    );
}

#[test]
fn field_rules() {
    let user = enc("root");
    let msg = enc("10.0.0.1,tcp/22");
    let cases = [
        (
            format!("1234567890123456:{user}:1800000000:3.0.0:9:{msg}"),
            "unknown message type",
        ),
        (
            format!("1234567890123456:{user}:18000000000000:3.0.0:1:{msg}"),
            "timestamp is not 1 to 12 digits",
        ),
        (
            format!("1234567890123456:{user}:-5:3.0.0:1:{msg}"),
            "timestamp is not 1 to 12 digits",
        ),
        (
            format!("1234567890123456:{user}:1800000000:123456789:1:{msg}"),
            "version is not 1 to 8 characters",
        ),
        (
            format!("1234567890123456:{}:1800000000:3.0.0:1:{msg}", enc("ro/ot")),
            "username has forbidden characters",
        ),
        (
            format!(
                "1234567890123456:{user}:1800000000:3.0.0:1:{}",
                enc("10.0.0.1,icmp/8")
            ),
            "protocol must be tcp or udp",
        ),
        (
            format!(
                "1234567890123456:{user}:1800000000:3.0.0:1:{msg}:{}:{}",
                enc("a"),
                enc("b")
            ),
            "too many fields for the message type",
        ),
        (
            format!("1234567890123456:{user}:1800000000:3.0.0:3:{msg}:70000"),
            "client timeout must be 0..=65536",
        ),
        (
            format!(
                "1234567890123456:{user}:1800000000:3.0.0:2:{msg}:{}",
                enc("10.0.0.1;22")
            ),
            "nat_access must be host,port",
        ),
        (
            format!("1234567890123456:{user}:1800000000:3.0.0:1:{msg}!"),
            "field is not base64",
        ),
    ];
    for (body, why) in cases {
        assert_eq!(
            parse_plaintext(&pt(&body)),
            Err(Refusal::Malformed(why)),
            "{body}"
        );
    }
    assert_eq!(
        parse_plaintext(b"1234567890123456:a:b:\x01:d:e:f"),
        Err(Refusal::Malformed("plaintext has non-printable characters"))
    );
    assert_eq!(
        parse_plaintext(b"1234567890123456:a:b"),
        Err(Refusal::Malformed("too few fields"))
    );
}

#[test]
fn optional_fields() {
    let user = enc("root");
    let msg = enc("10.0.0.1,tcp/22");
    let m = parse_plaintext(&pt(&format!(
        "1234567890123456:{user}:1800000000:3.0.0:1:{msg}:{}",
        enc("sa")
    )))
    .unwrap();
    assert_eq!(m.server_auth.as_deref(), Some("sa"));
    let m = parse_plaintext(&pt(&format!(
        "1234567890123456:{user}:1800000000:3.0.0:4:{msg}:{}:30",
        enc("10.0.0.9,2222")
    )))
    .unwrap();
    assert_eq!(m.nat_access.as_deref(), Some("10.0.0.9,2222"));
    assert_eq!(m.client_timeout, Some(30));
    let m = parse_plaintext(&pt(&format!(
        "1234567890123456:{user}:1800000000:3.0.0:0:{}",
        enc("10.0.0.1,touch /tmp/x")
    )))
    .unwrap();
    assert_eq!(m.message_type, MessageType::Command);
    assert!(m.access.is_none());
}
