//! fwknop mode: `spabench fwknop-gen` writes distinct valid packets, one
//! base64 line each, so the very same packets go to `FwknopVerifier` and to
//! fwknopd; `spabench fwknop` verifies such a file in-process, one thread,
//! then garbage.

use std::hint::black_box;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::json;
use umbra_spa::fwknop::{
    AccessRequest, DigestType, EncryptionMode, FwknopConfig, FwknopKeys, FwknopVerifier, Message,
    Proto, ProtoPort, Stanza, encode, parse_access_conf,
};

use crate::Res;
use crate::native::open_limits;
use crate::stats::{Labels, Passes};

#[derive(clap::Args)]
pub struct GenArgs {
    #[arg(long)]
    pub count: usize,
    #[arg(long)]
    pub key_b64: String,
    #[arg(long)]
    pub hmac_key_b64: String,
    #[arg(long)]
    pub allow_ip: Ipv4Addr,
    /// Distinct allow-IPs: packet i asks for allow_ip + (i % this).
    #[arg(long, default_value_t = 1)]
    pub allow_ip_count: u32,
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    #[arg(long)]
    pub out: String,
}

fn b64(s: &str) -> Res<Vec<u8>> {
    Ok(base64::engine::general_purpose::STANDARD.decode(s.trim())?)
}

/// AES-256-CBC + HMAC-SHA256 access messages for user root, as the stock
/// client sends them with `--use-hmac` (its default modes).
pub fn generate(a: &GenArgs) -> Res<()> {
    let keys = FwknopKeys::new(
        &b64(&a.key_b64)?,
        EncryptionMode::Cbc,
        Some((&b64(&a.hmac_key_b64)?, DigestType::Sha256)),
    )?;
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&a.out)?);
    let t = Instant::now();
    let span = a.allow_ip_count.max(1);
    for i in 0..a.count {
        let ip = Ipv4Addr::from(u32::from(a.allow_ip) + (i as u32 % span));
        let request = AccessRequest {
            allow_ip: ip,
            ports: vec![ProtoPort {
                proto: Proto::Tcp,
                port: a.port,
            }],
        };
        let m = Message::access("root", now_s, request, None);
        writeln!(f, "{}", encode(&m, &keys)?)?;
    }
    f.flush()?;
    eprintln!(
        "fwknop-gen: {} packets (user root, allow-IP {} (+0..{span}), tcp/{}, AES-256-CBC + HMAC-SHA256, timestamp {now_s}) in {:.2} s -> {}",
        a.count,
        a.allow_ip,
        a.port,
        t.elapsed().as_secs_f64(),
        a.out
    );
    Ok(())
}

pub fn read_packets(file: &str) -> Res<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect())
}

pub fn stanzas(access_conf: &str) -> Res<Vec<Stanza>> {
    parse_access_conf(&std::fs::read_to_string(access_conf)?)
        .map_err(|e| format!("{access_conf}: {e:?}").into())
}

/// fwknopd's defaults (120 s window) with the limiter never refusing.
pub fn config(replay_capacity: usize) -> FwknopConfig {
    FwknopConfig {
        replay_capacity: replay_capacity + 1,
        rate_limit: open_limits(),
        ..FwknopConfig::default()
    }
}

/// The verifier "started" before the packets were stamped (they are at
/// most minutes old).
pub fn started() -> SystemTime {
    SystemTime::now() - Duration::from_secs(600)
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub file: String,
    #[arg(long)]
    pub access_conf: String,
    /// The packets' source address (their allow-IP).
    #[arg(long)]
    pub source: IpAddr,
    #[arg(long, default_value_t = 5)]
    pub passes: u32,
    /// Garbage packets per kind and pass (the kind that reaches the HMAC
    /// uses a tenth).
    #[arg(long, default_value_t = 2_000_000)]
    pub garbage: usize,
}

pub fn run(a: &Args) -> Res<()> {
    let stanzas = stanzas(&a.access_conf)?;
    let packets = read_packets(&a.file)?;
    let n = packets.len();
    let len = packets.first().map_or(0, Vec::len);
    let config = config(n.max(a.garbage));
    let mut passes = Passes::default();
    for _ in 0..a.passes {
        // A fresh verifier per pass: an empty replay cache.
        let mut v = FwknopVerifier::new(stanzas.clone(), config.clone(), started());
        let mut refused = Labels::default();
        passes.start();
        for p in &packets {
            match v.verify(p, a.source, SystemTime::now()) {
                Ok(g) => {
                    black_box(&g);
                }
                Err(e) => refused.add(e.label()),
            }
        }
        passes.finish(n);
        if refused.total() > 0 {
            return Err(format!("fwknop: valid packets refused: {:?}", refused.0).into());
        }
    }
    passes.emit("fwknop", "valid", json!({"packets": n, "bytes": len}));
    garbage(a, &stanzas, &config, len)
}

struct Garbage<'a> {
    kind: &'static str,
    desc: &'static str,
    /// The refusal label every packet must get.
    expected: &'static str,
    pkts: &'a [Vec<u8>],
    per_pass: usize,
}

fn garbage(a: &Args, stanzas: &[Stanza], config: &FwknopConfig, len: usize) -> Res<()> {
    let pool = 65_536usize.min(a.garbage.max(1));
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let random_bytes = || {
        let mut b = vec![0u8; len];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
        b
    };
    let random: Vec<Vec<u8>> = (0..pool).map(|_| random_bytes()).collect();
    // Base64 of the right length: passes the structure checks, so it
    // costs the SHA-256 replay digest and the HMAC before it is refused.
    let b64_garbage: Vec<Vec<u8>> = (0..pool)
        .map(|_| {
            let mut out: Vec<u8> = random_bytes()
                .iter()
                .map(|x| alphabet[usize::from(*x & 63)])
                .collect();
            // Not the stripped "U2FsdGVkX1" prefix fwknopd drops early.
            out[0] = b'+';
            out
        })
        .collect();
    let kinds = [
        Garbage {
            kind: "random",
            desc: "random bytes of a valid packet's length (refused at the alphabet check)",
            expected: "not_base64",
            pkts: &random,
            per_pass: a.garbage.max(1),
        },
        Garbage {
            kind: "base64_bad_hmac",
            desc: "random base64 of a valid packet's length (replay digest + HMAC, refused)",
            expected: "bad_mac",
            pkts: &b64_garbage,
            per_pass: (a.garbage / 10).max(1),
        },
    ];
    for g in kinds {
        let mut passes = Passes::default();
        let mut labels = Labels::default();
        for _ in 0..a.passes {
            let mut v = FwknopVerifier::new(stanzas.to_vec(), config.clone(), started());
            passes.start();
            for i in 0..g.per_pass {
                match v.verify(&g.pkts[i % g.pkts.len()], a.source, SystemTime::now()) {
                    Ok(_) => return Err(format!("fwknop garbage {}: accepted", g.kind).into()),
                    Err(e) => labels.add(e.label()),
                }
            }
            passes.finish(g.per_pass);
        }
        labels.check(&format!("fwknop garbage {}", g.kind), g.expected, &[])?;
        passes.emit(
            "fwknop",
            &format!("garbage_{}", g.kind),
            json!({"packets": g.per_pass, "desc": g.desc, "refused_as": labels.json()}),
        );
    }
    Ok(())
}
