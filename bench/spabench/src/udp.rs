//! The UDP side of the fwknopd comparison.
//!
//! - `udp-fwknop`: `FwknopVerifier` behind a plain blocking UDP socket,
//!   recv + verify, one thread, no logging: the shape of fwknopd's UDP
//!   server mode (`ENABLE_UDP_SERVER`), with the default receive buffer.
//! - `send`: each line of a packet file as one datagram, paced.
//! - `count`: counts the lines of a log (fwknopd's stderr) that contain a
//!   pattern, copying them to a file as they come.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use umbra_spa::fwknop::FwknopVerifier;

use crate::Res;
use crate::fwknop::{config, read_packets, stanzas, started};
use crate::stats::emit;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long)]
    pub access_conf: String,
    /// Stop after this many seconds without a datagram, once one arrived.
    #[arg(long, default_value_t = 2.0)]
    pub idle: f64,
    /// Stop after this many seconds in any case.
    #[arg(long, default_value_t = 120.0)]
    pub max_wait: f64,
    /// Written once the socket is bound.
    #[arg(long)]
    pub ready_file: Option<String>,
}

pub fn serve(a: &ServeArgs) -> Res<()> {
    let stanzas = stanzas(&a.access_conf)?;
    let sock = UdpSocket::bind(a.listen)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut v = FwknopVerifier::new(stanzas, config(1 << 20), started());
    if let Some(f) = &a.ready_file {
        std::fs::write(f, "ready\n")?;
    }
    let mut buf = [0u8; 2048];
    let (mut received, mut accepted) = (0u64, 0u64);
    let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
    let begin = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                received += 1;
                match v.verify(&buf[..n], from.ip(), SystemTime::now()) {
                    Ok(g) => {
                        black_box(&g);
                        accepted += 1;
                    }
                    Err(e) => *refused.entry(e.label()).or_default() += 1,
                }
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let quiet = last.elapsed().as_secs_f64();
                if (first.is_some() && quiet >= a.idle)
                    || begin.elapsed().as_secs_f64() >= a.max_wait
                {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    emit(json!({
        "bench": "udp_fwknop", "received": received, "accepted": accepted,
        "first_to_last_s": span, "refused": refused,
    }));
    Ok(())
}

#[derive(clap::Args)]
pub struct SendArgs {
    #[arg(long)]
    pub file: String,
    #[arg(long)]
    pub to: SocketAddr,
    /// Datagrams per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

pub fn send(a: &SendArgs) -> Res<()> {
    let (to, rate) = (a.to, a.rate);
    let packets = read_packets(&a.file)?;
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(to)?;
    let t = Instant::now();
    let mut errors = 0u64;
    for (i, p) in packets.iter().enumerate() {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            loop {
                let elapsed = t.elapsed();
                if elapsed >= due {
                    break;
                }
                let left = due - elapsed;
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
    emit(json!({
        "bench": "send", "sent": packets.len(), "send_errors": errors, "seconds": secs,
        "offered_per_sec": (packets.len() as f64 / secs).round(), "rate_asked": rate,
    }));
    Ok(())
}

#[derive(clap::Args)]
pub struct CountArgs {
    #[arg(long)]
    pub pattern: String,
    #[arg(long)]
    pub label: String,
    /// When a line contains this, write `ready_file`.
    #[arg(long)]
    pub ready_pattern: Option<String>,
    #[arg(long)]
    pub ready_file: Option<String>,
    /// Every line read is written here, flushed line by line so the
    /// script can watch it.
    #[arg(long)]
    pub copy: Option<String>,
}

/// Reads stdin to EOF. The match times are when this process read the
/// lines, so they lag the writer by its scheduling delay: good for events
/// milliseconds apart (fwknopd's full path), not for microsecond rates.
pub fn count(a: &CountArgs) -> Res<()> {
    let mut copy = match &a.copy {
        Some(p) => Some(std::io::LineWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let (mut matched, mut lines) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    loop {
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        lines += 1;
        if let Some(c) = copy.as_mut() {
            c.write_all(line.as_bytes())?;
        }
        if let (Some(rp), Some(rf)) = (&a.ready_pattern, &a.ready_file)
            && line.contains(rp.as_str())
        {
            std::fs::write(rf, "ready\n")?;
        }
        if line.contains(a.pattern.as_str()) {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            matched += 1;
        }
    }
    if let Some(c) = copy.as_mut() {
        c.flush()?;
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    emit(json!({
        "bench": "count", "label": a.label, "lines": lines, "matched": matched,
        "first_to_last_s": span,
    }));
    Ok(())
}
