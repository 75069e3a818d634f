//! spabench: the measurements behind bench/spa.sh (see bench/RESULTS.md,
//! section "SPA").
//!
//! Every figure is one `RESULT {json}` line on stdout; diagnostics go to
//! stderr. Layout:
//! - [`native`]: umbra-spa's native `Verifier` in-process (valid, garbage).
//! - [`fwknop`]: fwknop packets for both servers; `FwknopVerifier`
//!   in-process.
//! - [`udp`]: `FwknopVerifier` behind a UDP socket, the paced sender, and a
//!   log line counter for fwknopd.
//! - [`pinholes`]: new nftables pinholes/s through `NftPinholes`.
//! - [`knock`]: knock → pinhole → mTLS → first byte at a dark gateway.
//! - [`stats`]: medians, percentiles, result lines.

mod fwknop;
mod knock;
mod native;
mod pinholes;
mod stats;
mod udp;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Native(native::Args),
    /// Write distinct valid fwknop access packets, one per line.
    FwknopGen(fwknop::GenArgs),
    /// FwknopVerifier in-process on a packet file, one thread.
    Fwknop(fwknop::Args),
    /// FwknopVerifier behind a blocking UDP socket, one thread.
    UdpFwknop(udp::ServeArgs),
    /// Send each line of a file as one UDP datagram.
    Send(udp::SendArgs),
    /// Count stdin lines containing a pattern; report at EOF.
    Count(udp::CountArgs),
    /// New nftables pinholes/s through NftPinholes (as root).
    Pinholes(pinholes::Args),
    /// Knock → pinhole → mTLS → first byte at a dark gateway.
    KnockConnect(knock::Args),
}

fn main() -> ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Native(a) => native::run(&a),
        Cmd::FwknopGen(a) => fwknop::generate(&a),
        Cmd::Fwknop(a) => fwknop::run(&a),
        Cmd::UdpFwknop(a) => udp::serve(&a),
        Cmd::Send(a) => udp::send(&a),
        Cmd::Count(a) => udp::count(&a),
        Cmd::Pinholes(a) => pinholes::run(&a),
        Cmd::KnockConnect(a) => knock::run(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spabench: {e}");
            ExitCode::FAILURE
        }
    }
}
