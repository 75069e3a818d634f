//! `spabench pinholes`: new nftables pinholes per second through
//! umbra-firewall's `NftPinholes`, in a network namespace the caller made.
//!
//! Each pinhole is its own `open` call with one element, as the gateway's
//! SPA listener makes them (one per accepted knock); `in_flight` calls run
//! at once and the backend's batcher coalesces them into `nft` runs. Every
//! pinhole has a distinct source address, so each is a new set element.
//! The kernel's element count is checked afterwards.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use umbra_firewall::{NftPinholes, NftSettings, Pinhole, Pinholes, Protected, Protocol};

use crate::Res;
use crate::stats::{emit, latency_ms};

/// The protected port (the gateway's TLS port).
const PORT: u16 = 443;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000)]
    pub total: u32,
    /// Concurrent single-pinhole `open` calls.
    #[arg(long, default_value_t = 1024)]
    pub in_flight: u32,
    /// Network namespace to run nft in (made by the caller).
    #[arg(long)]
    pub netns: String,
}

pub fn run(a: &Args) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(measure(a))
}

async fn measure(a: &Args) -> Res<()> {
    let command = ["ip", "netns", "exec", a.netns.as_str(), "nft"]
        .map(String::from)
        .to_vec();
    let fw = Arc::new(NftPinholes::new(NftSettings {
        command,
        ..NftSettings::default()
    })?);
    fw.install(&[Protected::new(Protocol::Tcp, PORT)]).await?;
    let (total, in_flight) = (a.total, a.in_flight.max(1));
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let fw = Arc::clone(&fw);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = w;
                while i < total {
                    // 10.0.0.0/8 from 10.0.0.0 up: one new element each.
                    let source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
                    let hole = Pinhole::new(source, Protocol::Tcp, PORT, Duration::from_secs(300));
                    let t = Instant::now();
                    fw.open(&[hole]).await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    i += in_flight;
                }
                Ok::<_, umbra_firewall::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total as usize);
    for w in workers {
        latencies.extend(w.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    let in_kernel = fw.count().await?;
    let result = json!({
        "bench": "pinholes", "total": total, "in_flight": in_flight, "seconds": secs,
        "per_sec": (f64::from(total) / secs).round(), "in_kernel": in_kernel,
        "open_call_ms": latency_ms(&latencies),
    });
    fw.shutdown().await?;
    emit(result);
    if in_kernel != total as usize {
        return Err(format!("{in_kernel} pinholes in the kernel, {total} opened").into());
    }
    Ok(())
}
