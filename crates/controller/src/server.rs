//! The HTTPS listener: a tokio-rustls accept loop feeding hyper, so each
//! request can carry the client certificate of its connection.
//!
//! `run(controller, listener, shutdown)` takes a bound listener (tests bind
//! port 0) and one cancellation token; on cancellation it stops accepting
//! and gives open connections a grace period to finish. A dark controller
//! (`[spa]`) has three: [`Listeners`], from [`bind`] or bound by the caller,
//! served by [`run_with`].

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use umbra_store::Outcome;

use umbra_firewall::{Pinholes, Protected, Protocol};

use crate::Controller;
use crate::api::Routes;
use crate::context::PeerInfo;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(10);
/// The controller's own server certificate is re-issued at every start.
const SERVER_CERT_LIFETIME: i64 = 365 * 86400;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("server certificate: {0}")]
    Pki(#[from] umbra_pki::PkiError),
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("a dark controller ([spa]) needs {0}")]
    Missing(&'static str),
    #[error("pinholes: {0}")]
    Firewall(#[from] umbra_firewall::Error),
    #[error("firewall: {0}")]
    FirewallConfig(String),
}

/// What a controller serves on.
#[derive(Debug)]
pub struct Listeners {
    /// `listen`: everything, or, when dark, all but the public endpoints.
    pub main: TcpListener,
    /// A dark controller's public endpoints (`spa.public_listen`).
    pub public: Option<TcpListener>,
    /// A dark controller's knock socket (`spa.listen`).
    pub knock: Option<std::net::UdpSocket>,
}

/// Binds what `config` names.
pub async fn bind(config: &crate::config::Config) -> Result<Listeners, ServeError> {
    let tcp = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let main = tcp("listen", config.listen).await?;
    let (public, knock) = match &config.spa {
        None => (None, None),
        Some(spa) => (
            Some(tcp("spa.public_listen", spa.public_listen).await?),
            Some(
                umbra_firewall::knock_socket(spa.listen).map_err(|source| ServeError::Bind {
                    what: "spa.listen",
                    addr: spa.listen,
                    source,
                })?,
            ),
        ),
    };
    Ok(Listeners {
        main,
        public,
        knock,
    })
}

pub async fn run(
    controller: Arc<Controller>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listeners = Listeners {
        main: listener,
        public: None,
        knock: None,
    };
    run_with(controller, listeners, shutdown).await
}

pub async fn run_with(
    controller: Arc<Controller>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let ca = controller.ca.cert_der().clone();
    let (issued, key) = controller.ca.issue_server_certificate(
        &controller.config.server_names,
        controller.now(),
        SERVER_CERT_LIFETIME,
    )?;
    let time = Arc::new(umbra_pki::clock::ClockTime(controller.clock.clone()));
    let tls = umbra_pki::tls::server_config(&ca, vec![issued.der, ca.clone()], &key, time)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let graceful = Arc::new(GracefulShutdown::new());
    let poll = controller.config.event_poll;
    tokio::spawn(crate::events::tail(controller.clone(), poll));
    tokio::spawn(crate::policies::watch(controller.clone(), poll));
    tokio::spawn(crate::detect::run(controller.clone()));
    tokio::spawn(crate::reevaluate::run(
        controller.clone(),
        crate::reevaluate::TICK,
    ));
    let checkpoints = tokio::spawn(crate::audit::checkpoints(
        controller.clone(),
        controller.config.audit_checkpoint_interval,
    ));
    let Listeners {
        main,
        public,
        knock,
    } = listeners;
    let main_port = main.local_addr().map(|a| a.port()).unwrap_or_default();
    let mut dark = None;
    let mut public_loop = None;
    let mut knock_task = None;
    let routes = if let Some(spa) = &controller.config.spa {
        let public = public.ok_or(ServeError::Missing("a public listener"))?;
        let knock = knock.ok_or(ServeError::Missing("a knock socket"))?;
        let spa_port = knock.local_addr().map(|a| a.port()).unwrap_or_default();
        let knock = tokio::net::UdpSocket::from_std(knock).map_err(|source| ServeError::Bind {
            what: "spa.listen",
            addr: spa.listen,
            source,
        })?;
        let pinholes = spa
            .firewall
            .build()
            .map_err(|e| ServeError::FirewallConfig(e.to_string()))?;
        pinholes
            .install(&[Protected::new(Protocol::Tcp, main_port)])
            .await?;
        if !spa.exempt.is_empty() {
            pinholes
                .open(&crate::knock::exempt_pinholes(&spa.exempt, main_port))
                .await?;
            tracing::info!(addresses = ?spa.exempt, "exempt from knocking");
        }
        let _ = controller.dark.set(umbra_proto::api::DarkController {
            login_port: main_port,
            spa_port,
        });
        tracing::info!(
            backend = pinholes.backend(),
            login_port = main_port,
            spa_port,
            "dark controller: pinholes installed"
        );
        knock_task = Some(tokio::spawn(crate::knock::run(
            controller.clone(),
            knock,
            pinholes.clone(),
            main_port,
            shutdown.clone(),
        )));
        public_loop = Some(tokio::spawn(accept_loop(
            controller.clone(),
            public,
            acceptor.clone(),
            Routes::Public,
            None,
            graceful.clone(),
            shutdown.clone(),
        )));
        dark = Some(pinholes);
        Routes::Private
    } else {
        Routes::All
    };
    accept_loop(
        controller.clone(),
        main,
        acceptor,
        routes,
        dark.clone(),
        graceful.clone(),
        shutdown.clone(),
    )
    .await;
    if let Some(public) = public_loop {
        let _ = public.await;
    }
    // Control channels never end by themselves: close them first.
    controller.events.stop();
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    if let Some(task) = knock_task {
        let _ = task.await;
    }
    // Sign the records of the last moments too.
    checkpoints.abort();
    if let Err(e) = controller.checkpoint_audit().await {
        tracing::warn!(error = e.message, "final audit checkpoint failed");
    }
    if let Some(pinholes) = dark
        && let Err(e) = pinholes.shutdown().await
    {
        tracing::error!(error = %e, "pinholes could not be removed");
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// Accepts TLS connections on `listener` until `shutdown` and serves
/// `routes` on them. With `pinholes` (a dark listener), a connection from a
/// source without a pinhole is closed before the handshake: with nftables
/// it never arrives; with userspace pinholes this is the enforcement.
async fn accept_loop(
    controller: Arc<Controller>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: Routes,
    pinholes: Option<Arc<dyn Pinholes>>,
    graceful: Arc<GracefulShutdown>,
    shutdown: CancellationToken,
) {
    let router = crate::api::router(controller.clone(), routes);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ?routes, "controller listening (HTTPS)");
    }
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Some(p) = &pinholes
            && !p.allows(
                addr.ip().to_canonical(),
                Protocol::Tcp,
                port,
                tokio::time::Instant::now(),
            )
        {
            tracing::debug!(%addr, "no pinhole for this source; closed");
            drop(tcp);
            continue;
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        let controller = controller.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return handshake_failed(&controller, addr, &e).await,
                Err(_) => return tracing::debug!(%addr, "TLS handshake timed out"),
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.clone().into_owned());
            let peer = PeerInfo { addr, cert };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                router.clone().oneshot(req)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Slow-loris: a client gets a bounded time to send its headers.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Certificate refusals are security events and go to the audit trail;
/// other handshake failures (scanners, timeouts) only to the debug log.
async fn handshake_failed(controller: &Controller, addr: std::net::SocketAddr, e: &std::io::Error) {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(
            err @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => {
            let reason = format!("client_certificate_refused: {err}");
            controller
                .audit_event(
                    "-",
                    Some(addr.ip()),
                    "tls.handshake",
                    "-",
                    Outcome::Deny,
                    &reason,
                    "",
                )
                .await
                .ok();
        }
        _ => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
    }
}
