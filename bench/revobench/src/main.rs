//! Revocation benchmark tool for `bench/revocation.sh` (see bench/RESULTS.md).
//!
//! Modes:
//! - `echo`: the TCP echo service both gateways route as a `tcp` service.
//! - `run`: makes N + M sessions through the real API (`setup`), each with
//!   one live tunnel through gateway 1 or 2 in turn, waits for a quiet
//!   machine, then revokes them one at a time and times each from the
//!   admin request to the tunnel's end (`measure`): N by
//!   `POST /api/v1/admin/sessions/{id}/revoke`, then M by suspending their
//!   users. Prints a summary and one `RESULT {json}` line per phase; exits
//!   non-zero if any tunnel outlives the timeout or anything fails.
//!
//! Layout: `admin` (keep-alive admin API client), `setup`, `measure`,
//! `report` (a phase's summary), `stats` (nearest-rank percentiles), `cpu`
//! (/proc accounting).

mod admin;
mod cpu;
mod measure;
mod report;
mod setup;
mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::measure::How;
use crate::setup::{Live, Plan, Steps};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Revocation latency: admin request to live tunnel closed")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// A TCP echo server.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Set up the sessions, then time their revocations.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The controller, `https://IP:port`.
    #[arg(long)]
    controller: String,
    /// PEM file of the Umbra CA (`GET /api/v1/ca`).
    #[arg(long)]
    ca: String,
    /// File holding an admin API token (`uat1.…`).
    #[arg(long)]
    admin_token_file: String,
    /// Directory for the devices' agent state (one subdirectory each).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Sessions revoked with `POST /api/v1/admin/sessions/{id}/revoke`.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// More sessions, each ended by suspending its user.
    #[arg(long, default_value_t = 0)]
    suspend_sessions: usize,
    /// The TCP services, one per gateway, comma-separated; sessions take
    /// them in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    services: Vec<String>,
    /// The group every user is in (the services are granted to it).
    #[arg(long, default_value = "bench")]
    group: String,
    /// Prefix of the user names.
    #[arg(long, default_value = "rb")]
    prefix: String,
    /// Sessions set up in parallel.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// A tunnel not closed this long after its revocation is a failure.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Idle time between two revocations.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// Before each timed phase, wait up to this many seconds until other
    /// processes use less than --max-others cores.
    #[arg(long, default_value_t = 900)]
    quiet_wait: u64,
    #[arg(long, default_value_t = 0.05)]
    max_others: f64,
    /// This benchmark's processes, NAME=PID[,PID...]: left out of "other
    /// processes", and their CPU reported per timed phase. Repeatable.
    #[arg(long = "watch")]
    watch: Vec<String>,
}

fn parse_watch(specs: &[String]) -> Result<Vec<(String, Vec<u32>)>, BoxError> {
    let mut groups = Vec::new();
    for s in specs {
        let (name, pids) = s.split_once('=').ok_or("--watch NAME=PID[,PID...]")?;
        let pids = pids
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()?;
        groups.push((name.to_owned(), pids));
    }
    groups.push(("revobench".into(), vec![std::process::id()]));
    Ok(groups)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let r = match cli.mode {
        Mode::Echo { listen } => echo_server(listen).await,
        Mode::Run(a) => run(a).await,
    };
    if let Err(e) = r {
        eprintln!("revobench: {e}");
        std::process::exit(1);
    }
}

async fn echo_server(listen: SocketAddr) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("echo listening on {}", listener.local_addr()?);
    loop {
        let (mut sock, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let (mut r, mut w) = sock.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

fn step_summary(steps: &[Steps], f: impl Fn(&Steps) -> f64) -> Value {
    stats::summary(&steps.iter().map(f).collect::<Vec<_>>())
}

async fn run(a: RunArgs) -> Result<(), BoxError> {
    let watch = parse_watch(&a.watch)?;
    let ours: Vec<u32> = watch.iter().flat_map(|g| g.1.iter().copied()).collect();
    let ca = CertificateDer::from_pem_file(&a.ca).map_err(|e| format!("{}: {e}", a.ca))?;
    let tls = Arc::new(umbra_pki::tls::client_config(&ca, None)?);
    let admin_token = std::fs::read_to_string(&a.admin_token_file)?
        .trim()
        .to_owned();
    let plan = Arc::new(Plan {
        controller: a.controller.clone(),
        tls: tls.clone(),
        admin_token: admin_token.clone(),
        dir: a.dir.clone(),
        group: a.group.clone(),
        services: a.services.clone(),
        prefix: a.prefix.clone(),
    });
    let total = a.sessions + a.suspend_sessions;

    println!("==== setup: {total} users, devices, sessions and live tunnels ====");
    let started = Instant::now();
    let (mut lives, steps) = setup::sessions(plan, 0, total, a.workers).await?;
    let setup_s = started.elapsed().as_secs_f64();
    let mut per_gateway: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lives {
        *per_gateway
            .entry(format!("{} ({})", l.gateway, l.service))
            .or_default() += 1;
    }
    let mut admin = Admin::new(&a.controller, tls, &admin_token)?;
    let listed = admin.json("GET", "/api/v1/admin/sessions", None).await?;
    let live_sessions = listed["items"].as_array().map_or(0, Vec::len);
    let setup = json!({
        "phase": "setup",
        "sessions": lives.len(),
        "seconds": (setup_s * 10.0).round() / 10.0,
        "workers": a.workers,
        "tunnels_per_gateway": per_gateway,
        "tunnel_retries": steps.iter().map(|s| s.tunnel_retries).sum::<u32>(),
        "live_sessions_listed": live_sessions,
        "ms": {
            "create_user": step_summary(&steps, |s| s.create_user),
            "enrollment_token": step_summary(&steps, |s| s.enroll_token),
            "enroll": step_summary(&steps, |s| s.enroll),
            "login": step_summary(&steps, |s| s.login),
            "tunnel_open_and_echo": step_summary(&steps, |s| s.tunnel),
        },
    });
    println!(
        "setup       : {} sessions in {setup_s:.1} s with {} workers ({:.1} sessions/s); tunnels per gateway {per_gateway:?}; {} tunnel retries while the gateways started; live sessions listed by GET /api/v1/admin/sessions: {live_sessions}",
        lives.len(),
        a.workers,
        lives.len() as f64 / setup_s,
        setup["tunnel_retries"],
    );
    for (k, label) in [
        ("create_user", "POST /api/v1/admin/users"),
        ("enrollment_token", "POST /api/v1/admin/enrollment-tokens"),
        ("enroll", "enroll (agent: key, CSR, POST /api/v1/enroll)"),
        ("login", "login (agent: mTLS, password + TOTP)"),
        ("tunnel_open_and_echo", "tunnel open + echo (agent)"),
    ] {
        println!("{}", stats::line(&format!("  {label}"), &setup["ms"][k]));
    }
    println!("RESULT {setup}");
    if live_sessions != total {
        return Err(format!("{live_sessions} live sessions listed, {total} made").into());
    }

    let mut failed = false;
    let suspend = lives.split_off(a.sessions);
    for (how, mut group) in [(How::RevokeSession, lives), (How::SuspendUser, suspend)] {
        if group.is_empty() {
            continue;
        }
        failed |= phase(&a, &mut admin, how, &mut group, &watch, &ours).await?;
    }

    let left = admin.json("GET", "/api/v1/admin/sessions", None).await?;
    let left = left["items"].as_array().map_or(0, Vec::len);
    println!(
        "after       : live sessions listed by GET /api/v1/admin/sessions: {left} (expected 0)"
    );
    if left != 0 {
        failed = true;
    }
    if failed {
        return Err("some revocations failed (see above)".into());
    }
    Ok(())
}

/// Times the revocation of every session in `group`, one at a time;
/// `Ok(true)` if any failed.
async fn phase(
    a: &RunArgs,
    admin: &mut Admin,
    how: How,
    group: &mut [Live],
    watch: &[(String, Vec<u32>)],
    ours: &[u32],
) -> Result<bool, BoxError> {
    println!();
    println!(
        "==== {}: {} sessions, one at a time, {} ms apart ====",
        how.name(),
        group.len(),
        a.pause_ms
    );
    cpu::quiet(ours, a.max_others, Duration::from_secs(a.quiet_wait)).await;
    // Warm the keep-alive connection (it may have idled out meanwhile).
    admin
        .json(
            "GET",
            &format!("/api/v1/admin/users/{}", group[0].user),
            None,
        )
        .await?;
    let connects_before = admin.connects;
    let scan_before = cpu::all_processes();
    let started = Instant::now();
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut samples = Vec::with_capacity(group.len());
    let mut errors = Vec::new();
    for live in group.iter_mut() {
        match measure::one(admin, live, how, timeout).await {
            Ok(s) => samples.push(s),
            Err(e) => errors.push(e),
        }
        tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let scan_after = cpu::all_processes();
    let (others_s, top) = cpu::others(&scan_before, &scan_after, ours);
    let reconnects = admin.connects - connects_before;

    let cpu_cores = watch
        .iter()
        .map(|(n, p)| {
            let s = cpu::of(&scan_after, p) - cpu::of(&scan_before, p);
            (n.clone(), s / wall)
        })
        .collect();
    Ok(report::phase(&report::Timed {
        how,
        sessions: group.len(),
        samples,
        errors,
        wall,
        reconnects,
        cpu_cores,
        others_cores: others_s / wall,
        busiest_others: top,
        timeout_ms: a.timeout_ms,
        pause_ms: a.pause_ms,
        max_others: a.max_others,
    }))
}
