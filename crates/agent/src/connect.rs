//! `umbra agent connect SERVICE --listen ADDR`: a local HTTP listener whose
//! requests go to the service's gateway over mTLS (the device certificate)
//! with the session token, and whose responses come back unchanged.
//!
//! The session and the device certificate are re-read from the state
//! directory for every request, so a new `umbra agent login` (or a renewed
//! certificate, which gets a fresh connection pool: a token is bound to the
//! certificate its connection presents) takes effect without restarting
//! `connect`. The
//! listener is meant for loopback: anything that can reach it acts with this
//! device's session, like any local port-forward.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use umbra_proto::control::ServiceAccess;

use crate::AgentError;
use crate::dir::AgentDir;

type Body = BoxBody<Bytes, hyper::Error>;

/// How often `connect` collects posture (and sends it when due).
const POSTURE_EVERY: Duration = Duration::from_secs(300);
type Gateways = Client<HttpsConnector<HttpConnector>, Incoming>;

fn local_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": "agent", "message": message } }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A gateway's "step-up required" answer (401 with Umbra's challenge).
fn is_step_up<B>(resp: &Response<B>) -> bool {
    resp.status() == StatusCode::UNAUTHORIZED
        && resp
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.contains("error=\"step_up_required\""))
            })
}

/// Finds `service` in the saved session.
pub fn service_access(dir: &AgentDir, service: &str) -> Result<ServiceAccess, AgentError> {
    let session = dir.session()?.ok_or_else(|| {
        AgentError::State("not logged in; run `umbra agent login --user NAME`".into())
    })?;
    session
        .services
        .iter()
        .find(|s| s.name == service)
        .cloned()
        .ok_or_else(|| {
            let granted: Vec<&str> = session.services.iter().map(|s| s.name.as_str()).collect();
            AgentError::State(format!(
                "the session grants no service {service:?} (granted: {})",
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            ))
        })
}

/// Serves `listener` until `shutdown`, forwarding to `service`.
pub async fn run(
    dir: AgentDir,
    service: &str,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let access = Arc::new(service_access(&dir, service)?);
    // A long-running agent keeps the controller's view of the device
    // current: posture is sent when it changes, and at least hourly.
    tokio::spawn(crate::controller::report_posture_periodically(
        dir.clone(),
        POSTURE_EVERY,
        shutdown.clone(),
    ));
    if access.protocol == umbra_proto::control::Protocol::Tcp {
        return crate::tunnel::run(dir, access, listener, shutdown).await;
    }
    let gateway: Uri = access
        .gateway_url
        .parse()
        .map_err(|e| AgentError::State(format!("gateway URL {:?}: {e}", access.gateway_url)))?;
    let client = Arc::new(Pools::new(&dir)?);
    let dir = Arc::new(dir);
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (client, dir, access, gateway) =
            (client.clone(), dir.clone(), access.clone(), gateway.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (client, dir, access, gateway) =
                    (client.clone(), dir.clone(), access.clone(), gateway.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        forward(&client, &dir, &access, &gateway, req).await,
                    )
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%addr, error = %e, "local connection ended with an error");
            }
        });
    }
}

/// The connection pool for the current device certificate.
struct Pools {
    current: std::sync::Mutex<(CertificateDer<'static>, Gateways)>,
}

fn pool(dir: &AgentDir) -> Result<(CertificateDer<'static>, Gateways), AgentError> {
    let (chain, key) = dir.identity()?;
    let cert = chain
        .first()
        .cloned()
        .ok_or_else(|| AgentError::State("device.crt holds no certificate".into()))?;
    let tls = umbra_pki::tls::client_config(&dir.ca()?, Some((chain, key)))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(https);
    Ok((cert, client))
}

impl Pools {
    fn new(dir: &AgentDir) -> Result<Self, AgentError> {
        Ok(Self {
            current: std::sync::Mutex::new(pool(dir)?),
        })
    }

    /// The pool for the certificate now on disk.
    fn get(&self, dir: &AgentDir) -> Result<Gateways, AgentError> {
        let on_disk = dir.certificate()?;
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != on_disk {
            *current = pool(dir)?;
        }
        Ok(current.1.clone())
    }
}

async fn forward(
    pools: &Pools,
    dir: &AgentDir,
    access: &ServiceAccess,
    gateway: &Uri,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let token = match dir.session() {
        Ok(Some(s)) => s.token,
        _ => {
            return local_error(
                StatusCode::UNAUTHORIZED,
                "not logged in; run `umbra agent login --user NAME`",
            );
        }
    };
    let client = match pools.get(dir) {
        Ok(c) => c,
        Err(e) => return local_error(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    if let Err(e) = crate::knock::ensure(dir, access).await {
        tracing::warn!(error = %e, gateway = %access.gateway_url, "knock failed");
        return local_error(StatusCode::BAD_GATEWAY, &e.to_string());
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = Uri::builder()
        .scheme("https")
        .authority(gateway.authority().map_or("", |a| a.as_str()))
        .path_and_query(path)
        .build();
    let Ok(uri) = uri else {
        return local_error(StatusCode::BAD_REQUEST, "invalid request target");
    };
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    // The gateway routes by Host: the service's, not ours.
    match HeaderValue::from_str(&access.host) {
        Ok(v) => headers.insert(http::header::HOST, v),
        Err(_) => return local_error(StatusCode::BAD_GATEWAY, "invalid service host"),
    };
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(v) => headers.insert(http::header::AUTHORIZATION, v),
        Err(_) => return local_error(StatusCode::UNAUTHORIZED, "unusable session token"),
    };
    // An upgrade (WebSocket): once the gateway answers 101, the local and
    // the gateway connections are joined.
    let wants_upgrade = req.headers().contains_key(http::header::UPGRADE);
    let local_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    match client.request(req).await {
        Ok(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if let Some(local) = local_upgrade {
                let remote = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(local), Ok(remote)) = (local.await, remote.await) {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(local),
                            &mut TokioIo::new(remote),
                        )
                        .await;
                    }
                });
            }
            resp.map(BodyExt::boxed)
        }
        Ok(resp) => {
            if is_step_up(&resp) {
                // The user is not looking at this process's output per se,
                // but at the local client's; both say what to do.
                tracing::warn!(
                    service = %access.name,
                    "the gateway asks for a fresh MFA: run `umbra agent step-up`, then retry"
                );
            }
            resp.map(BodyExt::boxed)
        }
        Err(e) => {
            crate::knock::forget(access);
            tracing::warn!(error = %e, gateway = %access.gateway_url, "gateway unreachable");
            local_error(StatusCode::BAD_GATEWAY, "gateway unreachable")
        }
    }
}
