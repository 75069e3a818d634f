//! The gateway's TLS listener: mTLS is mandatory, client certificates are
//! admitted by [`crate::authn::DeviceAdmission`], and each connection's
//! verified device goes with every request on it to [`crate::proxy`].

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use umbra_pki::PeerCertificate;
use umbra_proto::control::GatewayAuditRecord;

use crate::Gateway;
use crate::proxy::{self, Conn};

const GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown`; also runs the control channel and the audit
/// uploader, which stop with it.
pub async fn run(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), crate::GatewayError> {
    // The verifier knows why (which device, which list); the accept loop
    // knows who (the address) and records the refusal.
    let admission = crate::authn::DeviceAdmission {
        view: gw.view.clone(),
        trust_domain: gw.trust_domain.clone(),
        refused: Box::new(|reason| tracing::warn!(%reason, "client certificate refused")),
    };
    let time = Arc::new(umbra_pki::clock::ClockTime(gw.clock.clone()));
    let tls = umbra_pki::tls::strict_server_config(
        &gw.identity.ca,
        gw.server_cert.clone(),
        time,
        Arc::new(admission),
    )?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let workers = crate::workers::Workers::start(gw.config.workers).map_err(|source| {
        crate::GatewayError::Io {
            path: "gateway worker threads".into(),
            source,
        }
    })?;
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(crate::control::run(gw.clone(), shutdown.clone()));
    tasks.spawn(crate::audit::run(gw.clone(), shutdown.clone()));
    tasks.spawn(crate::renew::run(gw.clone(), shutdown.clone()));
    if let (Some(pinholes), Some(socket)) = (gw.pinholes.clone(), gw.take_spa_socket()) {
        let socket =
            tokio::net::UdpSocket::from_std(socket).map_err(|source| crate::GatewayError::Io {
                path: "SPA socket".into(),
                source,
            })?;
        tasks.spawn(crate::spa::run(
            gw.clone(),
            socket,
            pinholes,
            shutdown.clone(),
        ));
    }
    let port = gw.config.listen.port();
    let graceful = GracefulShutdown::new();
    let per_source = Arc::new(PerSource::default());
    let limits = gw.config.limits.clone();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, name = gw.name(), "gateway listening (mTLS)");
    }
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A dark gateway with userspace pinholes: no pinhole, no service
        // (with nftables the kernel never let the connection in).
        if let Some(p) = &gw.pinholes
            && !p.allows(
                addr.ip().to_canonical(),
                umbra_firewall::Protocol::Tcp,
                port,
                tokio::time::Instant::now(),
            )
        {
            tracing::debug!(%addr, "no pinhole for this source; closed");
            drop(tcp);
            continue;
        }
        // A source blocked by threat detection (or an admin): closed.
        if gw.view.read().is_blocked(addr.ip(), gw.now()) {
            tracing::debug!(%addr, "blocked source; closed");
            drop(tcp);
            continue;
        }
        let Some(slot) = per_source.take(addr.ip(), limits.max_connections_per_source) else {
            tracing::debug!(%addr, "too many connections from this source; closed");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // Re-registered with the worker's own reactor, below.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        let limits = limits.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let gw = gw.clone();
        let (worker, upstreams) = workers.next();
        let upstreams = upstreams.clone();
        worker.spawn(async move {
            let _slot = slot;
            let tcp = match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    return tracing::warn!(%addr, error = %e, "worker cannot take the connection");
                }
            };
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return handshake_failed(&gw, addr, &e),
                    Err(_) => return tracing::debug!(%addr, "TLS handshake timed out"),
                };
            // rustls has verified the chain and DeviceAdmission the rest;
            // a connection without a parsable device certificate is closed.
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| PeerCertificate::parse(c, &gw.trust_domain).ok());
            let Some(peer) = peer else {
                return;
            };
            let conn = Conn {
                addr,
                peer: Arc::new(peer),
            };
            let tunnel =
                stream.get_ref().1.alpn_protocol() == Some(umbra_proto::control::TUNNEL_ALPN);
            if tunnel {
                // Held open by the watcher like an HTTP connection, so a
                // graceful shutdown waits for it (up to the grace period).
                let _watch = watcher;
                return crate::tunnel::serve(gw, conn, stream).await;
            }
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let gw = gw.clone();
                let upstreams = upstreams.clone();
                let conn = conn.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(proxy::handle(gw, upstreams, conn, req).await)
                }
            });
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Relays never end by themselves: end them, then drain the rest.
    gw.stop.cancel();
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    tasks.close();
    tasks.wait().await;
    workers.stop().await;
    if let Some(p) = &gw.pinholes
        && let Err(e) = p.shutdown().await
    {
        tracing::error!(error = %e, "pinholes could not be removed");
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Certificate refusals are security events and go to the audit trail;
/// other handshake failures (scanners, timeouts) only to the debug log.
fn handshake_failed(gw: &Gateway, addr: std::net::SocketAddr, e: &std::io::Error) {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(
            err @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => gw.audit.record(GatewayAuditRecord {
            ts: gw.now(),
            actor: "-".into(),
            source_ip: addr.ip().to_string(),
            action: "tls.handshake".into(),
            resource: format!("gateway:{}", gw.name()),
            outcome: "deny".into(),
            reason: format!("client_certificate_refused: {err}"),
            request_id: String::new(),
            count: 1,
            transfer: None,
        }),
        _ => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
    }
}

/// Open connections per source address: one client cannot hold them all.
#[derive(Default)]
struct PerSource(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// Held for the life of one connection; gives its place back when dropped.
struct Slot {
    table: Arc<PerSource>,
    ip: std::net::IpAddr,
}

impl PerSource {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<Slot> {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}
