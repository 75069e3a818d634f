//! `spabench native`: umbra-spa's native `Verifier` in-process, one thread.
//!
//! Valid packets: distinct knocks from `devices` enrolled devices, each
//! from its own source address, verified by a fresh verifier per pass (an
//! empty replay cache, as after a restart). Then garbage of several kinds,
//! each refused for the reason its name says (checked: a kind refused for
//! another reason, e.g. packets gone stale, fails the run).
//!
//! The verifier is used exactly as the gateway's SPA listener uses it:
//! `SystemTime::now()` per packet, keys looked up in a map, the per-source
//! rate limiter consulted for every packet. Its limits are set far above
//! the load so it never refuses, except in the `flood_one_source` kind,
//! which uses the default limits.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use umbra_spa::native::{Knock, OpenAddr, Verifier, VerifierConfig, seal};
use umbra_spa::{DeviceSecret, GatewayKey, RateLimitConfig, derive_gateway_key};
use uuid::Uuid;

use crate::Res;
use crate::stats::{Labels, Passes};

/// Garbage packets are drawn from a pool of this many, reused.
const POOL: usize = 65_536;

/// Rate limits far above the load: the limiter is still consulted for
/// every packet (its table lookup is part of the cost), it never refuses.
pub fn open_limits() -> RateLimitConfig {
    RateLimitConfig {
        burst: u32::MAX,
        per_second: u32::MAX,
        max_sources: 65_536,
    }
}

fn source_of(i: usize) -> IpAddr {
    // 10.77.0.0/16 and up: private, one per device.
    IpAddr::V4(Ipv4Addr::from(0x0a4d_0000 + i as u32))
}

struct Devices {
    list: Vec<(Uuid, GatewayKey)>,
    keys: HashMap<Uuid, GatewayKey>,
}

impl Devices {
    fn new(n: usize) -> Self {
        let list: Vec<(Uuid, GatewayKey)> = (0..n.max(1))
            .map(|_| {
                let secret = DeviceSecret::generate();
                let key = derive_gateway_key(&secret, "spiffe://bench.local/gateway/bench");
                (Uuid::new_v4(), key)
            })
            .collect();
        let keys = list.iter().cloned().collect();
        Self { list, keys }
    }

    /// `n` distinct knocks stamped now, packet `i` from device `i % devices`
    /// (one service, open = the source address, as the agent sends them).
    fn seal(&self, n: usize) -> Res<Vec<(Vec<u8>, IpAddr)>> {
        let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        (0..n)
            .map(|i| {
                let d = i % self.list.len();
                let (id, key) = &self.list[d];
                let knock = Knock::new(*id, vec!["web".into()], OpenAddr::Source, now_s);
                Ok((seal(key, &knock)?, source_of(d)))
            })
            .collect()
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Distinct valid packets per pass.
    #[arg(long, default_value_t = 200_000)]
    pub packets: usize,
    /// Enrolled devices (keys in a HashMap, one source address each).
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    #[arg(long, default_value_t = 5)]
    pub passes: u32,
    /// Garbage packets per kind and pass (from a pool of 65,536; the kind
    /// that reaches the AEAD uses a tenth).
    #[arg(long, default_value_t = 5_000_000)]
    pub garbage: usize,
}

pub fn run(a: &Args) -> Res<()> {
    // The verifier "started" a little before the packets were stamped.
    let started = SystemTime::now() - Duration::from_secs(5);
    let devs = Devices::new(a.devices);
    let t = Instant::now();
    let valid = devs.seal(a.packets)?;
    let len = valid.first().map_or(0, |p| p.0.len());
    eprintln!(
        "native: {} valid packets ({len} bytes, 1 service, open = source) from {} devices sealed in {:.2} s",
        a.packets,
        a.devices,
        t.elapsed().as_secs_f64()
    );
    let config = VerifierConfig {
        replay_capacity: a.packets.max(POOL) + 1,
        rate_limit: open_limits(),
        ..VerifierConfig::default()
    };

    let mut passes = Passes::default();
    for _ in 0..a.passes {
        let mut v = Verifier::new(config.clone(), started);
        let mut refused = Labels::default();
        passes.start();
        for (p, src) in &valid {
            match v.verify(p, *src, SystemTime::now(), &devs.keys) {
                Ok(g) => {
                    black_box(&g);
                }
                Err(e) => refused.add(e.label()),
            }
        }
        passes.finish(a.packets);
        if refused.total() > 0 {
            return Err(format!("native: valid packets refused: {:?}", refused.0).into());
        }
    }
    passes.emit(
        "native",
        "valid",
        json!({"packets": a.packets, "bytes": len, "devices": a.devices}),
    );
    garbage(a, &devs, &config, started)
}

/// A garbage kind: how its pool is made, how many packets per pass, what
/// it must be refused as, and which verifier settings it meets.
struct Kind {
    name: &'static str,
    desc: &'static str,
    expected: &'static str,
    /// Packets per pass: the kinds that reach the AEAD are slower.
    per_pass: usize,
    pool: Vec<(Vec<u8>, IpAddr)>,
    config: VerifierConfig,
    /// Verify these first (the replay kind's originals).
    prime: bool,
}

const KINDS: [&str; 5] = [
    "random",
    "unknown_device",
    "replay",
    "bad_tag",
    "flood_one_source",
];

fn garbage(a: &Args, devs: &Devices, config: &VerifierConfig, started: SystemTime) -> Res<()> {
    for name in KINDS {
        // Made right before it is measured: the kinds built from valid
        // packets must still be inside the time window.
        let k = kind(name, a, devs, config)?;
        measure(a, devs, &k, started)?;
    }
    Ok(())
}

fn kind(name: &'static str, a: &Args, devs: &Devices, config: &VerifierConfig) -> Res<Kind> {
    let pool = POOL.min(a.packets.max(1));
    let base = Kind {
        name,
        desc: "",
        expected: "",
        per_pass: a.garbage.max(1),
        pool: devs.seal(pool)?,
        config: config.clone(),
        prime: false,
    };
    let flip_tag = |p: &mut Vec<(Vec<u8>, IpAddr)>| {
        for (b, _) in p.iter_mut() {
            if let Some(last) = b.last_mut() {
                *last ^= 0x01;
            }
        }
    };
    Ok(match name {
        "random" => {
            let mut k = base;
            for (b, _) in &mut k.pool {
                rand::Rng::fill_bytes(&mut rand::rng(), b);
            }
            Kind {
                desc: "random bytes of a valid packet's length (refused at the magic check)",
                expected: "bad_magic",
                ..k
            }
        }
        "unknown_device" => {
            let mut k = base;
            for (b, _) in &mut k.pool {
                b[4..20].copy_from_slice(Uuid::new_v4().as_bytes());
            }
            Kind {
                desc: "well-formed header, unknown device id (refused at the key lookup)",
                expected: "unknown_device",
                ..k
            }
        }
        "replay" => Kind {
            desc: "packets accepted once, sent again (refused at the replay lookup)",
            expected: "replay",
            prime: true,
            ..base
        },
        "bad_tag" => {
            let mut k = base;
            flip_tag(&mut k.pool);
            Kind {
                desc: "known device, fresh nonce, one tag bit flipped (refused by the AEAD)",
                expected: "bad_mac",
                per_pass: (a.garbage / 10).max(1),
                ..k
            }
        }
        _ => {
            let mut k = base;
            flip_tag(&mut k.pool);
            for (_, src) in &mut k.pool {
                *src = source_of(0);
            }
            Kind {
                desc: "bad_tag packets all from one source, default rate limits (20 at once, \
                       10/s): refused by the limiter",
                expected: "rate_limited",
                config: VerifierConfig {
                    rate_limit: RateLimitConfig::default(),
                    ..config.clone()
                },
                ..k
            }
        }
    })
}

fn measure(a: &Args, devs: &Devices, k: &Kind, started: SystemTime) -> Res<()> {
    let mut v = Verifier::new(k.config.clone(), started);
    if k.prime {
        for (p, src) in &k.pool {
            v.verify(p, *src, SystemTime::now(), &devs.keys)?;
        }
    }
    // The first packets of a flood reach the AEAD before the bucket is
    // empty: those are allowed to be refused as bad_mac.
    let also: &[&str] = if k.expected == "rate_limited" {
        &["bad_mac"]
    } else {
        &[]
    };
    let mut passes = Passes::default();
    let mut labels = Labels::default();
    for _ in 0..a.passes {
        let mut accepted = 0usize;
        passes.start();
        for i in 0..k.per_pass {
            let (p, src) = &k.pool[i % k.pool.len()];
            match v.verify(p, *src, SystemTime::now(), &devs.keys) {
                Ok(_) => accepted += 1,
                Err(e) => labels.add(e.label()),
            }
        }
        passes.finish(k.per_pass);
        if accepted > 0 {
            return Err(format!("native garbage {}: {accepted} accepted", k.name).into());
        }
    }
    labels.check(&format!("native garbage {}", k.name), k.expected, also)?;
    passes.emit(
        "native",
        &format!("garbage_{}", k.name),
        json!({"packets": k.per_pass, "desc": k.desc, "refused_as": labels.json()}),
    );
    Ok(())
}
