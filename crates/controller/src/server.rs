//! The HTTPS listener: a tokio-rustls accept loop feeding hyper, so each
//! request can carry the client certificate of its connection.
//!
//! `run(controller, listener, shutdown)` takes a bound listener (tests bind
//! port 0) and one cancellation token; on cancellation it stops accepting
//! and gives open connections a grace period to finish.

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

use crate::Controller;
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
}

pub async fn run(
    controller: Arc<Controller>,
    listener: TcpListener,
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
    let router = crate::api::router(controller.clone());
    let graceful = GracefulShutdown::new();
    let poll = controller.config.event_poll;
    tokio::spawn(crate::events::tail(controller.clone(), poll));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "controller listening (HTTPS)");
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
    drop(listener);
    // Control channels never end by themselves: close them first.
    controller.events.stop();
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    tracing::info!("controller stopped");
    Ok(())
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
