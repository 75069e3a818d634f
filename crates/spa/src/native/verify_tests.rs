//! Every refusal the stateful verifier can give, and the happy paths.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use super::*;
use crate::native::{Knock, OpenAddr, seal};
use crate::window::from_unix_secs;
use crate::{DeviceSecret, GatewayKey, RateLimitConfig, derive_gateway_key};

const T0: u64 = 1_800_000_000;
const GW: &str = "spiffe://umbra.test/gateway/gw1";

struct Fixture {
    device: Uuid,
    secret: DeviceSecret,
    keys: HashMap<Uuid, GatewayKey>,
}

fn fixture() -> Fixture {
    let device = Uuid::from_u128(0xD0D0);
    let secret = DeviceSecret::from_bytes([3; 32]);
    let keys = HashMap::from([(device, derive_gateway_key(&secret, GW))]);
    Fixture {
        device,
        secret,
        keys,
    }
}

fn src() -> IpAddr {
    "198.51.100.20".parse().unwrap()
}

fn at(s: u64) -> SystemTime {
    from_unix_secs(s)
}

fn packet(f: &Fixture, open: OpenAddr, ts: u64) -> Vec<u8> {
    let k = Knock::new(f.device, vec!["ssh".into()], open, ts);
    seal(&derive_gateway_key(&f.secret, GW), &k).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(VerifierConfig::default(), at(T0 - 100))
}

#[test]
fn accepts_and_resolves_source() {
    let f = fixture();
    let mut v = verifier();
    let ok = v
        .verify(&packet(&f, OpenAddr::Source, T0), src(), at(T0), &f.keys)
        .unwrap();
    assert_eq!(ok.device, f.device);
    assert_eq!(ok.open, src());
    assert_eq!(ok.services, vec!["ssh".to_string()]);
}

#[test]
fn explicit_address_must_match_source_v4_and_v6() {
    let f = fixture();
    let mut v = verifier();
    let p = packet(&f, OpenAddr::Addr(src()), T0);
    assert_eq!(v.verify(&p, src(), at(T0), &f.keys).unwrap().open, src());
    // Dual-stack sockets report IPv4 peers as mapped IPv6.
    let mapped: IpAddr = "::ffff:198.51.100.20".parse().unwrap();
    let p = packet(&f, OpenAddr::Addr(src()), T0);
    assert!(v.verify(&p, mapped, at(T0), &f.keys).is_ok());
    let v6: IpAddr = "2001:db8::5".parse().unwrap();
    let p = packet(&f, OpenAddr::Addr(v6), T0);
    assert_eq!(v.verify(&p, v6, at(T0), &f.keys).unwrap().open, v6);
    let p = packet(&f, OpenAddr::Addr("203.0.113.1".parse().unwrap()), T0);
    assert!(matches!(
        v.verify(&p, src(), at(T0), &f.keys),
        Err(Refusal::AddressMismatch { .. })
    ));
}

#[test]
fn other_address_allowed_when_configured() {
    let f = fixture();
    let config = VerifierConfig {
        allow_other_address: true,
        ..VerifierConfig::default()
    };
    let mut v = Verifier::new(config, at(T0 - 100));
    let other: IpAddr = "203.0.113.1".parse().unwrap();
    let p = packet(&f, OpenAddr::Addr(other), T0);
    assert_eq!(v.verify(&p, src(), at(T0), &f.keys).unwrap().open, other);
}

#[test]
fn stale_future_and_window_edges() {
    let f = fixture();
    let mut v = verifier();
    let p = packet(&f, OpenAddr::Source, T0);
    assert!(matches!(
        v.verify(&p, src(), at(T0 + 31), &f.keys),
        Err(Refusal::Stale {
            age: 31,
            window: 30
        })
    ));
    assert!(matches!(
        v.verify(&p, src(), at(T0 - 31), &f.keys),
        Err(Refusal::Future {
            ahead: 31,
            window: 30
        })
    ));
    assert!(v.verify(&p, src(), at(T0 + 30), &f.keys).is_ok());
    let p = packet(&f, OpenAddr::Source, T0 + 30);
    assert!(v.verify(&p, src(), at(T0), &f.keys).is_ok());
}

#[test]
fn replay_is_refused_and_expires_with_the_window() {
    let f = fixture();
    let mut v = verifier();
    let p = packet(&f, OpenAddr::Source, T0);
    assert!(v.verify(&p, src(), at(T0), &f.keys).is_ok());
    assert_eq!(
        v.verify(&p, src(), at(T0 + 1), &f.keys),
        Err(Refusal::Replay)
    );
    // From another source too.
    let other: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        v.verify(&p, other, at(T0 + 2), &f.keys),
        Err(Refusal::Replay)
    );
    // Once the entry expires, the window refuses it instead.
    assert!(matches!(
        v.verify(&p, src(), at(T0 + 31), &f.keys),
        Err(Refusal::Stale { .. })
    ));
}

#[test]
fn replay_after_restart_is_refused_by_the_startup_rule() {
    let f = fixture();
    let mut v = verifier();
    let p = packet(&f, OpenAddr::Source, T0);
    assert!(v.verify(&p, src(), at(T0), &f.keys).is_ok());
    // The gateway restarts 5 s later: empty cache, later start-up time.
    let mut restarted = Verifier::new(VerifierConfig::default(), at(T0 + 5));
    assert_eq!(
        restarted.verify(&p, src(), at(T0 + 6), &f.keys),
        Err(Refusal::BeforeStartup {
            timestamp: T0,
            started: T0 + 5
        })
    );
    let fresh = packet(&f, OpenAddr::Source, T0 + 6);
    assert!(restarted.verify(&fresh, src(), at(T0 + 6), &f.keys).is_ok());
}

#[test]
fn unknown_device_wrong_key_and_other_gateway() {
    let f = fixture();
    let mut v = verifier();
    let stranger = Knock::new(Uuid::from_u128(9), vec!["ssh".into()], OpenAddr::Source, T0);
    let p = seal(&GatewayKey::from_bytes([1; 32]), &stranger).unwrap();
    assert_eq!(
        v.verify(&p, src(), at(T0), &f.keys),
        Err(Refusal::UnknownDevice(Uuid::from_u128(9)))
    );
    // A knock sealed for gateway 2 does not open gateway 1.
    let k = Knock::new(f.device, vec!["ssh".into()], OpenAddr::Source, T0);
    let p = seal(
        &derive_gateway_key(&f.secret, "spiffe://umbra.test/gateway/gw2"),
        &k,
    )
    .unwrap();
    assert_eq!(v.verify(&p, src(), at(T0), &f.keys), Err(Refusal::BadMac));
    // A closure works as a key lookup.
    let lookup = |_: &Uuid| Some(GatewayKey::from_bytes([0; 32]));
    let p = packet(&f, OpenAddr::Source, T0);
    assert_eq!(v.verify(&p, src(), at(T0), &lookup), Err(Refusal::BadMac));
}

#[test]
fn forged_packets_do_not_poison_the_replay_cache() {
    let f = fixture();
    let mut v = verifier();
    let good = packet(&f, OpenAddr::Source, T0);
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        v.verify(&forged, src(), at(T0), &f.keys),
        Err(Refusal::BadMac)
    );
    // Same (device, nonce) as the forgery: still accepted.
    assert!(v.verify(&good, src(), at(T0), &f.keys).is_ok());
}

#[test]
fn rate_limit_per_source() {
    let f = fixture();
    let config = VerifierConfig {
        rate_limit: RateLimitConfig {
            burst: 2,
            per_second: 1,
            max_sources: 16,
        },
        ..VerifierConfig::default()
    };
    let mut v = Verifier::new(config, at(T0 - 100));
    for _ in 0..2 {
        let p = packet(&f, OpenAddr::Source, T0);
        assert!(v.verify(&p, src(), at(T0), &f.keys).is_ok());
    }
    let p = packet(&f, OpenAddr::Source, T0);
    assert_eq!(
        v.verify(&p, src(), at(T0), &f.keys),
        Err(Refusal::RateLimited(src()))
    );
    // Garbage with a valid header also spends tokens; another source is fine.
    let other: IpAddr = "2001:db8::9".parse().unwrap();
    assert!(v.verify(&p, other, at(T0), &f.keys).is_ok());
    assert!(
        v.verify(
            &packet(&f, OpenAddr::Source, T0 + 1),
            src(),
            at(T0 + 1),
            &f.keys
        )
        .is_ok()
    );
}

#[test]
fn full_replay_cache_fails_closed() {
    let f = fixture();
    let config = VerifierConfig {
        replay_capacity: 2,
        ..VerifierConfig::default()
    };
    let mut v = Verifier::new(config, at(T0 - 100));
    for _ in 0..2 {
        assert!(
            v.verify(&packet(&f, OpenAddr::Source, T0), src(), at(T0), &f.keys)
                .is_ok()
        );
    }
    assert_eq!(
        v.verify(&packet(&f, OpenAddr::Source, T0), src(), at(T0), &f.keys),
        Err(Refusal::ReplayCacheFull)
    );
}

#[test]
fn structural_refusals_come_first() {
    let f = fixture();
    let mut v = verifier();
    assert!(matches!(
        v.verify(&[], src(), at(T0), &f.keys),
        Err(Refusal::TooShort { .. })
    ));
    assert!(matches!(
        v.verify(&[0u8; 2000], src(), at(T0), &f.keys),
        Err(Refusal::TooLong { .. })
    ));
    let mut p = packet(&f, OpenAddr::Source, T0);
    p[0] = b'+';
    assert_eq!(v.verify(&p, src(), at(T0), &f.keys), Err(Refusal::BadMagic));
}

#[test]
fn random_input_never_panics_or_passes() {
    use rand::{Rng, RngExt, SeedableRng};
    let f = fixture();
    let mut v = verifier();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..20_000u32 {
        let mut p = vec![0u8; rng.random_range(0..700)];
        rng.fill_bytes(&mut p);
        if p.len() > 20 && i % 2 == 0 {
            p[..4].copy_from_slice(&[0xF5, b'U', b'S', 1]);
            p[4..20].copy_from_slice(f.device.as_bytes());
        }
        let source = IpAddr::from(i.to_be_bytes());
        assert!(v.verify(&p, source, at(T0), &f.keys).is_err());
    }
}
