//! Measures how many new nftables pinholes per second the backend opens
//! when many knocks arrive at once (each `open` call carries ONE pinhole,
//! the SPA listener's worst case; the batcher coalesces them).
//!
//! Needs root. Runs in a throw-away network namespace:
//!
//! ```text
//! cargo run --release -p umbra-firewall --example nft_rate -- [TOTAL] [IN_FLIGHT]
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use umbra_firewall::{NftPinholes, NftSettings, Pinhole, Pinholes, Protected, Protocol};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Deletes the namespace however the run ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let total: u32 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let in_flight: u32 = args.next().map_or(Ok(1024), |a| a.parse())?;
    let ns = Netns(format!("umbra-fw-rate-{}", std::process::id()));
    if !Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()?
        .success()
    {
        return Err("cannot create a network namespace (root needed)".into());
    }
    let command = ["ip", "netns", "exec", &ns.0, "nft"]
        .map(String::from)
        .to_vec();
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
                // Worker w opens pinholes w, w + in_flight, … one call each.
                let mut i = w;
                while i < total {
                    let source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
                    fw.open(&[Pinhole::new(
                        source,
                        Protocol::Tcp,
                        443,
                        Duration::from_secs(300),
                    )])
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
    let elapsed = start.elapsed();
    let in_kernel = fw.count().await?;
    println!(
        "{total} pinholes ({in_flight} concurrent single-pinhole opens) in {:.3} s = {:.0} pinholes/s; {in_kernel} in the kernel set",
        elapsed.as_secs_f64(),
        f64::from(total) / elapsed.as_secs_f64()
    );
    fw.shutdown().await?;
    Ok(())
}
