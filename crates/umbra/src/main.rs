//! `umbra`: one binary for the controller, the admin CLI and `umbra dev`.
//! CLI wiring only; the work happens in the library crates.

mod admin;
mod agent;
mod audit;
mod client;
mod dev;
mod policy;
mod spa;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

// The proxy allocates for every request (headers, body frames, audit
// fields); glibc's malloc took 14% of the gateway's CPU under load, more
// than any part of Umbra's own code (bench/RESULTS.md, "Gateway proxy").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "umbra",
    version,
    about = "Zero-trust access platform and software-defined perimeter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (identities, CA, sessions, audit, API).
    Controller {
        /// TOML configuration file (see docs/config.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a gateway (mTLS identity-aware proxy in front of services).
    Gateway {
        /// TOML configuration file (see docs/config.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Administer a running controller.
    Admin(admin::AdminArgs),
    /// This device: enroll, log in, forward a local port to a service.
    Agent(agent::AgentArgs),
    /// Everything on one machine with an embedded store, for trying Umbra.
    Dev(dev::DevArgs),
    /// Single Packet Authorization tools (`inspect`).
    Spa(spa::SpaArgs),
    /// Rego tools, as OPA's (`eval`, `test`, `check`).
    Policy(policy::PolicyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("UMBRA_LOG").unwrap_or_else(|_| {
        let default = match cli.command {
            Command::Admin(_) | Command::Agent(_) | Command::Policy(_) => "warn",
            _ => "info",
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Controller { config } => run_controller(config).await,
            Command::Gateway { config } => run_gateway(config).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Spa(args) => spa::run(args),
            Command::Policy(args) => policy::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Already explained on stderr (test failures, compile errors).
        Err(e) if e.downcast_ref::<policy::Exit>().is_some() => {
            ExitCode::from(e.downcast_ref::<policy::Exit>().map_or(1, |x| x.0))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_controller(path: PathBuf) -> Result<()> {
    let raw = umbra_controller::config::RawConfig::load(&path)?;
    let env_kek = zeroize::Zeroizing::new(std::env::var("UMBRA_KEK").ok());
    let config = raw.validate(env_kek.as_deref())?;
    let listeners = umbra_controller::server::bind(&config).await?;
    let controller =
        umbra_controller::Controller::start(config, Arc::new(umbra_controller::clock::SystemClock))
            .await
            .context("starting the controller")?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    umbra_controller::server::run_with(controller, listeners, shutdown).await?;
    Ok(())
}

async fn run_gateway(path: PathBuf) -> Result<()> {
    let config = umbra_gateway::Config::load(&path)?;
    let listen = config.listen;
    let gateway =
        umbra_gateway::Gateway::start(config, Arc::new(umbra_controller::clock::SystemClock))
            .await
            .context("starting the gateway")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    if let Some(fa) = gateway.config.forward_auth.clone() {
        let fa_listener = tokio::net::TcpListener::bind(fa.listen)
            .await
            .with_context(|| format!("binding forward_auth.listen {}", fa.listen))?;
        let fa = umbra_gateway::forward_auth::ForwardAuth::new(gateway.clone(), fa)?;
        tokio::spawn(umbra_gateway::forward_auth::serve(
            Arc::new(fa),
            fa_listener,
            shutdown.clone(),
        ));
    }
    if let Some(m) = gateway.config.metrics.clone() {
        let m_listener = tokio::net::TcpListener::bind(m.listen)
            .await
            .with_context(|| format!("binding metrics.listen {}", m.listen))?;
        tokio::spawn(umbra_gateway::metrics::serve(
            gateway.clone(),
            m_listener,
            shutdown.clone(),
        ));
    }
    umbra_gateway::server::run(gateway, listener, shutdown).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM cancels `token`: one shutdown path for everything.
pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}
