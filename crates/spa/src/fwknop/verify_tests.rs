//! The fwknop verifier: acceptance and every refusal, with injected time.

use std::net::IpAddr;
use std::time::SystemTime;

use super::*;
use crate::fwknop::{AccessRequest, FwknopKeys, Message, encode, parse_access_conf};
use crate::window::from_unix_secs;

const KEY: &str = "dYGwY3EiluwwBYCR5PlXSyFbNIINExOGQEjK3rQPz9c=";
const HKEY: &str =
    "GlgORKNCgu0gn6/vFHPBQKOjKablPt3gUPSeKfvjYBvA5pmogyNkayzZHg6Jlr3qslSbK2++CLmewC+nf3vB/w==";
const T0: u64 = 1_800_000_000;

fn conf(extra: &str) -> String {
    format!(
        "SOURCE 10.66.0.0/24, 2001:db8::/64\nOPEN_PORTS tcp/22, udp/53\nKEY_BASE64 {KEY}\nHMAC_KEY_BASE64 {HKEY}\n{extra}"
    )
}

fn verifier(extra: &str) -> FwknopVerifier {
    FwknopVerifier::new(
        parse_access_conf(&conf(extra)).unwrap(),
        FwknopConfig::default(),
        at(T0 - 500),
    )
}

fn keys() -> FwknopKeys {
    parse_access_conf(&conf("")).unwrap().remove(0).keys
}

fn at(s: u64) -> SystemTime {
    from_unix_secs(s)
}

fn src() -> IpAddr {
    "10.66.0.2".parse().unwrap()
}

fn packet(req: &str, ts: u64, timeout: Option<u32>) -> Vec<u8> {
    let req: AccessRequest = req.parse().unwrap();
    encode(&Message::access("root", ts, req, timeout), &keys())
        .unwrap()
        .into_bytes()
}

#[test]
fn accepts_and_resolves() {
    let mut v = verifier("");
    let g = v
        .verify(&packet("10.66.0.2,tcp/22", T0, None), src(), at(T0))
        .unwrap();
    assert_eq!(g.open, src());
    assert_eq!(g.timeout_secs, 30);
    assert_eq!(g.ports[0].to_string(), "tcp/22");
    // Client timeout capped by MAX_FW_TIMEOUT.
    let mut v = verifier("MAX_FW_TIMEOUT 40\n");
    let g = v
        .verify(
            &packet("10.66.0.2,tcp/22,udp/53", T0, Some(45)),
            src(),
            at(T0),
        )
        .unwrap();
    assert_eq!(g.timeout_secs, 40);
    assert_eq!(g.ports.len(), 2);
}

#[test]
fn allow_ip_zero_needs_require_source_address_n() {
    let mut v = verifier("");
    assert_eq!(
        v.verify(&packet("0.0.0.0,tcp/22", T0, None), src(), at(T0)),
        Err(Refusal::SourceAddressRequired)
    );
    let mut v = verifier("REQUIRE_SOURCE_ADDRESS N\n");
    let v6: IpAddr = "2001:db8::7".parse().unwrap();
    assert_eq!(
        v.verify(&packet("0.0.0.0,tcp/22", T0, None), v6, at(T0))
            .unwrap()
            .open,
        v6
    );
}

#[test]
fn allow_ip_must_be_the_source_unless_configured() {
    let p = packet("10.66.0.9,tcp/22", T0, None);
    let mut v = verifier("");
    assert!(matches!(
        v.verify(&p, src(), at(T0)),
        Err(Refusal::AddressMismatch { .. })
    ));
    let config = FwknopConfig {
        allow_other_address: true,
        ..FwknopConfig::default()
    };
    let mut v = FwknopVerifier::new(parse_access_conf(&conf("")).unwrap(), config, at(T0 - 500));
    assert_eq!(
        v.verify(&p, src(), at(T0)).unwrap().open,
        "10.66.0.9".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn time_window_replay_and_restart() {
    let mut v = verifier("");
    let p = packet("10.66.0.2,tcp/22", T0, None);
    assert!(matches!(
        v.verify(&p, src(), at(T0 + 121)),
        Err(Refusal::Stale {
            age: 121,
            window: 120
        })
    ));
    // fwknopd burns an authentic packet even when it is then refused.
    assert_eq!(v.verify(&p, src(), at(T0)), Err(Refusal::Replay));
    let p = packet("10.66.0.2,tcp/22", T0 + 121, None);
    assert!(matches!(
        v.verify(&p, src(), at(T0)),
        Err(Refusal::Future { .. })
    ));
    let p = packet("10.66.0.2,tcp/22", T0, None);
    assert!(v.verify(&p, src(), at(T0 + 120)).is_ok());
    assert_eq!(v.verify(&p, src(), at(T0 + 120)), Err(Refusal::Replay));
    let mut restarted = FwknopVerifier::new(
        parse_access_conf(&conf("")).unwrap(),
        FwknopConfig::default(),
        at(T0 + 121),
    );
    assert!(matches!(
        restarted.verify(&p, src(), at(T0 + 121)),
        Err(Refusal::BeforeStartup { .. })
    ));
}

#[test]
fn ports_username_and_types() {
    let mut v = verifier("RESTRICT_PORTS udp/53\n");
    assert_eq!(
        v.verify(&packet("10.66.0.2,udp/53", T0, None), src(), at(T0)),
        Err(Refusal::PortDenied("udp/53".into()))
    );
    assert_eq!(
        v.verify(&packet("10.66.0.2,tcp/23", T0, None), src(), at(T0)),
        Err(Refusal::PortDenied("tcp/23".into()))
    );
    let mut v = verifier("REQUIRE_USERNAME alice\n");
    assert_eq!(
        v.verify(&packet("10.66.0.2,tcp/22", T0, None), src(), at(T0)),
        Err(Refusal::UsernameMismatch { got: "root".into() })
    );
}

#[test]
fn structural_and_source_refusals() {
    let mut v = verifier("");
    let p = packet("10.66.0.2,tcp/22", T0, None);
    assert_eq!(
        v.verify(&p, "192.0.2.1".parse().unwrap(), at(T0)),
        Err(Refusal::NoStanza("192.0.2.1".parse().unwrap()))
    );
    assert!(matches!(
        v.verify(&p[..100], src(), at(T0)),
        Err(Refusal::TooShort { .. })
    ));
    assert!(matches!(
        v.verify(&[b'A'; 1501], src(), at(T0)),
        Err(Refusal::TooLong { .. })
    ));
    let mut nl = p.clone();
    nl.push(b'\n');
    assert_eq!(v.verify(&nl, src(), at(T0)), Err(Refusal::NotBase64));
    let mut prefixed = b"U2FsdGVkX1".to_vec();
    prefixed.extend_from_slice(&p);
    assert_eq!(
        v.verify(&prefixed, src(), at(T0)),
        Err(Refusal::RijndaelPrefix)
    );
    assert!(matches!(
        v.verify(&[b'A'; 450], src(), at(T0)),
        Err(Refusal::UnsupportedMessage(_))
    ));
}

#[test]
fn every_tampered_char_fails_the_hmac() {
    let mut v = verifier("");
    let p = packet("10.66.0.2,tcp/22", T0, None);
    for i in 0..p.len() {
        let mut t = p.clone();
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        // Spread over sources so the rate limiter stays out of the way.
        let source = IpAddr::from([10, 66, 0, (i % 250) as u8]);
        assert_eq!(
            v.verify(&t, source, at(T0)),
            Err(Refusal::BadMac),
            "char {i}"
        );
    }
}

#[test]
fn rate_limit() {
    let config = FwknopConfig {
        rate_limit: crate::RateLimitConfig {
            burst: 1,
            per_second: 1,
            max_sources: 4,
        },
        ..FwknopConfig::default()
    };
    let mut v = FwknopVerifier::new(parse_access_conf(&conf("")).unwrap(), config, at(T0 - 500));
    assert!(
        v.verify(&packet("10.66.0.2,tcp/22", T0, None), src(), at(T0))
            .is_ok()
    );
    assert_eq!(
        v.verify(&packet("10.66.0.2,tcp/22", T0, None), src(), at(T0)),
        Err(Refusal::RateLimited(src()))
    );
}

#[test]
fn random_base64_never_panics() {
    use rand::{RngExt, SeedableRng};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v = verifier("");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let good = packet("10.66.0.2,tcp/22", T0, None);
    for i in 0..5_000u32 {
        let len = rng.random_range(0..600);
        let p: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.random_range(0..64)])
            .collect();
        let source = IpAddr::from([10, 66, 0, (i % 250) as u8]);
        assert!(v.verify(&p, source, at(T0)).is_err());
        let mut m = good.clone();
        let j = rng.random_range(0..m.len());
        m[j] = rng.random();
        if m != good {
            assert!(v.verify(&m, source, at(T0)).is_err());
        }
    }
}
