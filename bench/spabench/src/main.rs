//! spabench: the measurements behind bench/spa.sh.
//!
//! - `native`: umbra-spa's native `Verifier` in-process, one thread: valid
//!   packets, then garbage of several kinds, verified per second.
//! - `fwknop-gen`: write distinct valid fwknop packets (one per line), so the
//!   same packets go to `FwknopVerifier` and to fwknopd.
//! - `fwknop`: `FwknopVerifier` in-process, one thread, on such a file.
//! - `udp-fwknop`: `FwknopVerifier` behind a plain blocking UDP socket
//!   (recv + verify, one thread), the same shape as fwknopd's UDP server.
//! - `send`: replay a packet file over UDP, paced.
//! - `count`: read lines on stdin (a log), count those containing a pattern,
//!   print the count and the first/last match times at EOF.
//! - `pinholes`: new nftables pinholes/s through `NftPinholes`.
//!
//! Every result is one `RESULT {json}` line on stdout.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use clap::{Parser, Subcommand};
use umbra_firewall::{NftPinholes, NftSettings, Pinhole, Pinholes, Protected, Protocol};
use umbra_spa::fwknop::{
    AccessRequest, DigestType, EncryptionMode, FwknopConfig, FwknopKeys, FwknopVerifier, Message,
    Proto, ProtoPort, encode, parse_access_conf,
};
use umbra_spa::native::{Knock, OpenAddr, Verifier, VerifierConfig, seal};
use umbra_spa::{DeviceSecret, GatewayKey, RateLimitConfig, derive_gateway_key};
use uuid::Uuid;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(about = "SPA measurements for bench/spa.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Native Verifier: valid packets/s and garbage dropped/s, one thread.
    Native {
        /// Distinct valid packets per pass.
        #[arg(long, default_value_t = 200_000)]
        packets: usize,
        /// Enrolled devices (keys in a HashMap, one source address each).
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        #[arg(long, default_value_t = 5)]
        passes: u32,
        /// Garbage packets per kind and pass (a pool of 65,536 reused).
        #[arg(long, default_value_t = 5_000_000)]
        garbage: usize,
    },
    /// Write distinct valid fwknop access packets, one per line.
    FwknopGen {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        key_b64: String,
        #[arg(long)]
        hmac_key_b64: String,
        #[arg(long)]
        allow_ip: Ipv4Addr,
        /// Distinct allow-IPs: packet i asks for allow_ip + (i % this).
        #[arg(long, default_value_t = 1)]
        allow_ip_count: u32,
        #[arg(long, default_value_t = 22)]
        port: u16,
        #[arg(long)]
        out: String,
    },
    /// FwknopVerifier in-process on a packet file, one thread.
    Fwknop {
        #[arg(long)]
        file: String,
        #[arg(long)]
        access_conf: String,
        /// The packets' source address (their allow-IP).
        #[arg(long)]
        source: IpAddr,
        #[arg(long, default_value_t = 5)]
        passes: u32,
        /// Garbage packets per kind and pass (a pool of 65,536 reused).
        #[arg(long, default_value_t = 2_000_000)]
        garbage: usize,
    },
    /// FwknopVerifier behind a blocking UDP socket; stops after `idle` s
    /// without a datagram (once one arrived) or at `max_wait`.
    UdpFwknop {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        access_conf: String,
        #[arg(long, default_value_t = 2.0)]
        idle: f64,
        #[arg(long, default_value_t = 120.0)]
        max_wait: f64,
        /// Written once the socket is bound.
        #[arg(long)]
        ready_file: Option<String>,
    },
    /// Send each line of a file as one UDP datagram.
    Send {
        #[arg(long)]
        file: String,
        #[arg(long)]
        to: SocketAddr,
        /// Datagrams per second; 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Count stdin lines containing a pattern; report at EOF.
    Count {
        #[arg(long)]
        pattern: String,
        #[arg(long)]
        label: String,
        /// When a line contains this, write `ready_file`.
        #[arg(long)]
        ready_pattern: Option<String>,
        #[arg(long)]
        ready_file: Option<String>,
        /// Copy every line read to this file.
        #[arg(long)]
        copy: Option<String>,
    },
    /// New nftables pinholes/s through NftPinholes (run as root).
    Pinholes {
        #[arg(long, default_value_t = 100_000)]
        total: u32,
        /// Concurrent single-pinhole `open` calls.
        #[arg(long, default_value_t = 1024)]
        in_flight: u32,
        /// Network namespace to run nft in (created by the caller).
        #[arg(long)]
        netns: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Native {
            packets,
            devices,
            passes,
            garbage,
        } => native(packets, devices, passes, garbage),
        Cmd::FwknopGen {
            count,
            key_b64,
            hmac_key_b64,
            allow_ip,
            allow_ip_count,
            port,
            out,
        } => fwknop_gen(count, &key_b64, &hmac_key_b64, allow_ip, allow_ip_count, port, &out),
        Cmd::Fwknop {
            file,
            access_conf,
            source,
            passes,
            garbage,
        } => fwknop(&file, &access_conf, source, passes, garbage),
        Cmd::UdpFwknop {
            listen,
            access_conf,
            idle,
            max_wait,
            ready_file,
        } => udp_fwknop(listen, &access_conf, idle, max_wait, ready_file.as_deref()),
        Cmd::Send { file, to, rate } => send(&file, to, rate),
        Cmd::Count {
            pattern,
            label,
            ready_pattern,
            ready_file,
            copy,
        } => count(&pattern, &label, ready_pattern.as_deref(), ready_file.as_deref(), copy.as_deref()),
        Cmd::Pinholes {
            total,
            in_flight,
            netns,
        } => pinholes(total, in_flight, &netns),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spabench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rate limits far above the load: the limiter is still consulted for
/// every packet (its table lookup is part of the cost), it never refuses.
fn open_limits() -> RateLimitConfig {
    RateLimitConfig {
        burst: u32::MAX,
        per_second: u32::MAX,
        max_sources: 65_536,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn result(bench: &str, what: &str, per_pass: &mut [f64], extra: &str) {
    let listed = fmt_list(per_pass);
    let best = per_pass.iter().copied().fold(0.0, f64::max);
    let med = median(per_pass);
    println!(
        "RESULT {{\"bench\":\"{bench}\",\"what\":\"{what}\",\"per_sec_median\":{med:.0},\"per_sec_best\":{best:.0},\"per_pass\":[{listed}]{extra}}}"
    );
}

fn source_of(i: u32) -> IpAddr {
    // 10.77.0.0/16 and up: private, one per device / packet index.
    IpAddr::V4(Ipv4Addr::from(0x0a4d_0000 + i))
}

fn native(packets: usize, devices: u32, passes: u32, garbage: usize) -> Res<()> {
    let started = SystemTime::now() - Duration::from_secs(5);
    let devs: Vec<(Uuid, GatewayKey)> = (0..devices)
        .map(|_| {
            let secret = DeviceSecret::generate();
            (Uuid::new_v4(), derive_gateway_key(&secret, "bench-gateway"))
        })
        .collect();
    let keys: HashMap<Uuid, GatewayKey> = devs.iter().cloned().collect();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let t = Instant::now();
    let valid: Vec<(Vec<u8>, IpAddr)> = (0..packets)
        .map(|i| {
            let d = (i % devs.len()) as u32;
            let (id, key) = &devs[d as usize];
            let knock = Knock::new(*id, vec!["web".into()], OpenAddr::Source, now_s);
            (seal(key, &knock).expect("seal"), source_of(d))
        })
        .collect();
    let len = valid[0].0.len();
    eprintln!(
        "native: {packets} valid packets ({len} bytes, 1 service, open = source) from {devices} devices sealed in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let config = VerifierConfig {
        replay_capacity: packets + 1,
        rate_limit: open_limits(),
        ..VerifierConfig::default()
    };

    // Valid packets: a fresh verifier (empty replay cache) per pass.
    let mut rates = Vec::new();
    for _ in 0..passes {
        let mut v = Verifier::new(config.clone(), started);
        let t = Instant::now();
        let mut ok = 0usize;
        for (p, src) in &valid {
            if let Ok(g) = v.verify(p, *src, SystemTime::now(), &keys) {
                black_box(&g);
                ok += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        if ok != packets {
            return Err(format!("native: only {ok} of {packets} valid packets accepted").into());
        }
        rates.push(packets as f64 / secs);
    }
    result(
        "native",
        "valid",
        &mut rates,
        &format!(",\"packets\":{packets},\"bytes\":{len},\"devices\":{devices}"),
    );

    // Garbage. The verifier used for it has seen every valid packet once
    // (replay kind) and is otherwise like the gateway's.
    let mut v = Verifier::new(config.clone(), started);
    for (p, src) in &valid {
        v.verify(p, *src, SystemTime::now(), &keys)?;
    }
    let pool = 65_536usize.min(packets);
    let mut rng = rand::rng();
    let random: Vec<Vec<u8>> = (0..pool)
        .map(|_| {
            let mut b = vec![0u8; len];
            rand::Rng::fill_bytes(&mut rng, &mut b);
            b
        })
        .collect();
    let unknown: Vec<Vec<u8>> = valid[..pool]
        .iter()
        .map(|(p, _)| {
            let mut b = p.clone();
            let id = Uuid::new_v4();
            b[4..20].copy_from_slice(id.as_bytes());
            b
        })
        .collect();
    let bad_tag: Vec<Vec<u8>> = valid[..pool]
        .iter()
        .map(|(p, _)| {
            let mut b = p.clone();
            let n = b.len();
            b[n - 1] ^= 0x01;
            // A fresh nonce, so the replay lookup misses and the AEAD runs.
            let mut nonce = [0u8; 12];
            rand::Rng::fill_bytes(&mut rng, &mut nonce);
            b[20..32].copy_from_slice(&nonce);
            b
        })
        .collect();
    let replays: Vec<Vec<u8>> = valid[..pool].iter().map(|(p, _)| p.clone()).collect();
    let kinds: [(&str, &str, &Vec<Vec<u8>>); 4] = [
        ("random", "random bytes, valid-packet length (refused at the magic check)", &random),
        ("unknown_device", "well-formed header, unknown device id (refused at key lookup)", &unknown),
        ("replay", "already-accepted packets sent again (refused at the replay lookup)", &replays),
        ("bad_tag", "known device, fresh nonce, one tag bit flipped (refused by the AEAD)", &bad_tag),
    ];
    for (kind, desc, pkts) in kinds {
        let mut rates = Vec::new();
        let n = if kind == "bad_tag" { garbage / 10 } else { garbage };
        for _ in 0..passes {
            let t = Instant::now();
            let mut refused = 0usize;
            for i in 0..n {
                let idx = i % pkts.len();
                let src = source_of((idx % devs.len()) as u32);
                if v.verify(&pkts[idx], src, SystemTime::now(), &keys).is_err() {
                    refused += 1;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            if refused != n {
                return Err(format!("native garbage {kind}: {} accepted", n - refused).into());
            }
            rates.push(n as f64 / secs);
        }
        result(
            "native",
            &format!("garbage_{kind}"),
            &mut rates,
            &format!(",\"packets\":{n},\"desc\":\"{desc}\""),
        );
    }
    Ok(())
}

fn b64(s: &str) -> Res<Vec<u8>> {
    Ok(base64::engine::general_purpose::STANDARD.decode(s.trim())?)
}

fn fwknop_gen(
    count: usize,
    key: &str,
    hkey: &str,
    allow_ip: Ipv4Addr,
    allow_ip_count: u32,
    port: u16,
    out: &str,
) -> Res<()> {
    let keys = FwknopKeys::new(
        &b64(key)?,
        EncryptionMode::Cbc,
        Some((&b64(hkey)?, DigestType::Sha256)),
    )?;
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    let t = Instant::now();
    for i in 0..count {
        let ip = Ipv4Addr::from(u32::from(allow_ip) + (i as u32 % allow_ip_count.max(1)));
        let m = Message::access(
            "root",
            now_s,
            AccessRequest {
                allow_ip: ip,
                ports: vec![ProtoPort {
                    proto: Proto::Tcp,
                    port,
                }],
            },
            None,
        );
        writeln!(f, "{}", encode(&m, &keys)?)?;
    }
    f.flush()?;
    eprintln!(
        "fwknop-gen: {count} packets (user root, {allow_ip} (+0..{allow_ip_count}),tcp/{port}, AES-256-CBC + HMAC-SHA256, timestamp {now_s}) in {:.2} s -> {out}",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read_packets(file: &str) -> Res<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect())
}

fn fwknop_config(n: usize) -> FwknopConfig {
    FwknopConfig {
        replay_capacity: n + 1,
        rate_limit: open_limits(),
        ..FwknopConfig::default()
    }
}

fn fwknop(file: &str, access_conf: &str, source: IpAddr, passes: u32, garbage: usize) -> Res<()> {
    let stanzas = parse_access_conf(&std::fs::read_to_string(access_conf)?)
        .map_err(|e| format!("{access_conf}: {e:?}"))?;
    let packets = read_packets(file)?;
    let n = packets.len();
    let len = packets[0].len();
    // Started before the packets were stamped (they are at most minutes old).
    let started = SystemTime::now() - Duration::from_secs(600);
    let config = fwknop_config(n.max(garbage));
    let mut rates = Vec::new();
    for _ in 0..passes {
        let mut v = FwknopVerifier::new(stanzas.clone(), config.clone(), started);
        let t = Instant::now();
        let mut ok = 0usize;
        let mut first_err = None;
        for p in &packets {
            match v.verify(p, source, SystemTime::now()) {
                Ok(g) => {
                    black_box(&g);
                    ok += 1;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        if ok != n {
            return Err(format!("fwknop: only {ok} of {n} accepted; first refusal: {first_err:?}").into());
        }
        rates.push(n as f64 / secs);
    }
    result(
        "fwknop",
        "valid",
        &mut rates,
        &format!(",\"packets\":{n},\"bytes\":{len}"),
    );

    // Garbage: base64 of the right length (passes the structure check, so
    // costs a SHA-256 replay digest and an HMAC), and random bytes.
    let pool = 65_536usize.min(garbage.max(1));
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    let b64_garbage: Vec<Vec<u8>> = (0..pool)
        .map(|_| {
            let mut b = vec![0u8; len];
            rand::Rng::fill_bytes(&mut rng, &mut b);
            // First char 8, 9, + or / like a real Rijndael packet.
            let mut out: Vec<u8> = b.iter().map(|x| alphabet[(*x & 63) as usize]).collect();
            out[0] = b'+';
            out
        })
        .collect();
    let random: Vec<Vec<u8>> = (0..pool)
        .map(|_| {
            let mut b = vec![0u8; len];
            rand::Rng::fill_bytes(&mut rng, &mut b);
            b
        })
        .collect();
    for (kind, desc, pkts, total) in [
        ("random", "random bytes, valid-packet length (refused at the alphabet check)", &random, garbage),
        ("base64_bad_hmac", "random base64 of valid-packet length (replay digest + HMAC, refused)", &b64_garbage, garbage / 10),
    ] {
        let mut rates = Vec::new();
        for _ in 0..passes {
            let mut v = FwknopVerifier::new(stanzas.clone(), config.clone(), started);
            let t = Instant::now();
            let mut refused = 0usize;
            for i in 0..total {
                if v.verify(&pkts[i % pkts.len()], source, SystemTime::now()).is_err() {
                    refused += 1;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            if refused != total {
                return Err(format!("fwknop garbage {kind}: {} accepted", total - refused).into());
            }
            rates.push(total as f64 / secs);
        }
        result(
            "fwknop",
            &format!("garbage_{kind}"),
            &mut rates,
            &format!(",\"packets\":{total},\"desc\":\"{desc}\""),
        );
    }
    Ok(())
}

fn udp_fwknop(
    listen: SocketAddr,
    access_conf: &str,
    idle: f64,
    max_wait: f64,
    ready_file: Option<&str>,
) -> Res<()> {
    let stanzas = parse_access_conf(&std::fs::read_to_string(access_conf)?)
        .map_err(|e| format!("{access_conf}: {e:?}"))?;
    let sock = UdpSocket::bind(listen)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    if let Some(f) = ready_file {
        std::fs::write(f, "ready\n")?;
    }
    let started = SystemTime::now() - Duration::from_secs(600);
    let mut v = FwknopVerifier::new(stanzas, fwknop_config(1 << 20), started);
    let mut buf = [0u8; 2048];
    let (mut received, mut accepted) = (0usize, 0usize);
    let mut refusals: HashMap<String, usize> = HashMap::new();
    let begin = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                received += 1;
                match v.verify(&buf[..n], from.ip(), SystemTime::now()) {
                    Ok(g) => {
                        black_box(&g);
                        accepted += 1;
                    }
                    Err(e) => {
                        let k = format!("{e:?}");
                        let k = k.split(['(', ' ', '{']).next().unwrap_or("").to_string();
                        *refusals.entry(k).or_default() += 1;
                    }
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                let quiet = last.elapsed().as_secs_f64();
                if (first.is_some() && quiet >= idle) || begin.elapsed().as_secs_f64() >= max_wait {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let mut r: Vec<_> = refusals.into_iter().collect();
    r.sort();
    let refused = r
        .iter()
        .map(|(k, n)| format!("\"{k}\":{n}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "RESULT {{\"bench\":\"udp_fwknop\",\"received\":{received},\"accepted\":{accepted},\"first_to_last_s\":{span:.4},\"refused\":{{{refused}}}}}"
    );
    Ok(())
}

fn send(file: &str, to: SocketAddr, rate: u64) -> Res<()> {
    let packets = read_packets(file)?;
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(to)?;
    let t = Instant::now();
    let mut errors = 0usize;
    for (i, p) in packets.iter().enumerate() {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            loop {
                let el = t.elapsed();
                if el >= due {
                    break;
                }
                let left = due - el;
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        if sock.send(p).is_err() {
            errors += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "RESULT {{\"bench\":\"send\",\"sent\":{},\"send_errors\":{errors},\"seconds\":{secs:.4},\"offered_per_sec\":{:.0},\"rate_asked\":{rate}}}",
        packets.len(),
        packets.len() as f64 / secs
    );
    Ok(())
}

fn count(
    pattern: &str,
    label: &str,
    ready_pattern: Option<&str>,
    ready_file: Option<&str>,
    copy: Option<&str>,
) -> Res<()> {
    let mut copy = match copy {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let stdin = std::io::stdin();
    let (mut n, mut lines) = (0usize, 0usize);
    let mut first: Option<SystemTime> = None;
    let mut last = SystemTime::now();
    let mut line = String::new();
    let mut lock = stdin.lock();
    loop {
        line.clear();
        if lock.read_line(&mut line)? == 0 {
            break;
        }
        lines += 1;
        if let Some(c) = copy.as_mut() {
            c.write_all(line.as_bytes())?;
        }
        if let (Some(rp), Some(rf)) = (ready_pattern, ready_file)
            && line.contains(rp)
        {
            std::fs::write(rf, "ready\n")?;
        }
        if line.contains(pattern) {
            let now = SystemTime::now();
            first.get_or_insert(now);
            last = now;
            n += 1;
        }
    }
    if let Some(c) = copy.as_mut() {
        c.flush()?;
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).map_or(0.0, |d| d.as_secs_f64()));
    println!(
        "RESULT {{\"bench\":\"count\",\"label\":\"{label}\",\"lines\":{lines},\"matched\":{n},\"first_to_last_s\":{span:.4}}}"
    );
    Ok(())
}

fn pinholes(total: u32, in_flight: u32, netns: &str) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let command = ["ip", "netns", "exec", netns, "nft"].map(String::from).to_vec();
        let fw = Arc::new(NftPinholes::new(NftSettings {
            command,
            ..NftSettings::default()
        })?);
        fw.install(&[Protected::new(Protocol::Tcp, 443)]).await?;
        let start = Instant::now();
        let workers: Vec<_> = (0..in_flight)
            .map(|w| {
                let fw = Arc::clone(&fw);
                tokio::spawn(async move {
                    let mut i = w;
                    while i < total {
                        let source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
                        fw.open(&[Pinhole::new(source, Protocol::Tcp, 443, Duration::from_secs(300))])
                            .await?;
                        i += in_flight;
                    }
                    Ok::<_, umbra_firewall::Error>(())
                })
            })
            .collect();
        for w in workers {
            w.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        let in_kernel = fw.count().await?;
        println!(
            "RESULT {{\"bench\":\"pinholes\",\"total\":{total},\"in_flight\":{in_flight},\"seconds\":{secs:.4},\"per_sec\":{:.0},\"in_kernel\":{in_kernel}}}",
            f64::from(total) / secs
        );
        fw.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
