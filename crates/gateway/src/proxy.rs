//! One request through the gateway: authenticate, route, authorize,
//! forward.
//!
//! Order matters. The view must be fresh (fail closed). The session token
//! is checked before anything about routing is revealed, so a caller
//! without a session learns nothing but 401. Routing uses the normalized
//! path and whole-segment prefixes; an ungranted service and a nonexistent
//! one get the same 404. Client-sent identity headers are stripped in every
//! spelling and the gateway's own are added; the upstream receives exactly
//! the normalized path that was authorized. Every decision is audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use umbra_pki::PeerCertificate;
use umbra_proto::control::GatewayAuditRecord;
use umbra_proto::{ApiError, ErrorBody, ErrorCode};

use crate::config::Route;
use crate::live::{CutBody, Holder};
use crate::metrics::{Decision, ServiceMetrics};
use crate::policy::{Ask, STEP_UP_CHALLENGE, STEP_UP_MESSAGE, Target, explain};
use crate::{Gateway, headers, path};

pub type Body = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body at least this large (or of unknown length: streamed,
/// server-sent events) is cut when its session is revoked; a smaller one
/// is over before the cut would matter, and spares the registration.
const CUT_BODIES_FROM: u64 = 256 * 1024;
/// Request bodies are streamed to the upstream, never buffered whole, and
/// cut at the configured limit.
pub type UpstreamBody = crate::transfer::CountedBody<http_body_util::Limited<Incoming>>;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Keep-alive pools for the upstreams: HTTP/1.1, and HTTP/2 (cleartext,
/// prior knowledge) for routes that ask for it.
#[derive(Clone)]
pub struct Upstreams {
    http1: Client<HttpConnector, UpstreamBody>,
    http2: Client<HttpConnector, UpstreamBody>,
}

pub fn upstream_client() -> Upstreams {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let build = |http2: bool| {
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .http2_only(http2)
            .build(connector.clone())
    };
    Upstreams {
        http1: build(false),
        http2: build(true),
    }
}

/// Request ids: a random per-process prefix and a counter, unique without
/// a random draw (a system call) per request.
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

/// The connection a request arrived on.
#[derive(Clone, Debug)]
pub struct Conn {
    pub addr: SocketAddr,
    pub peer: Arc<PeerCertificate>,
}

fn refusal(code: ErrorCode, message: &str, request_id: &str) -> Response<Body> {
    let body = ErrorBody {
        error: ApiError {
            code,
            message: message.to_owned(),
            request_id: Some(request_id.to_owned()),
        },
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(json)).map_err(|n| match n {}).boxed());
    *r.status_mut() =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

struct Audit<'a> {
    gw: &'a Gateway,
    conn: &'a Conn,
    request_id: String,
    resource: String,
    actor: String,
    /// The request's arrival, and the counters of its service once it is
    /// routed: every decision is counted where it is audited.
    started: tokio::time::Instant,
    metrics: &'a ServiceMetrics,
}

impl Audit<'_> {
    fn entry(&self, outcome: &str, reason: &str) -> GatewayAuditRecord {
        GatewayAuditRecord {
            ts: self.gw.now(),
            actor: self.actor.clone(),
            source_ip: self.conn.addr.ip().to_string(),
            action: "gateway.access".into(),
            resource: self.resource.clone(),
            outcome: outcome.into(),
            reason: reason.into(),
            request_id: self.request_id.clone(),
            count: 1,
            transfer: None,
        }
    }

    /// Allowed requests are recorded in batches.
    fn record(&self, outcome: &str, reason: &str) {
        self.count(if outcome == "allow" {
            Decision::Allow
        } else {
            Decision::Deny
        });
        self.gw.audit.record(self.entry(outcome, reason));
    }

    /// A refusal is durable before it is sent.
    async fn deny(&self, reason: &str, code: ErrorCode, message: &str) -> Response<Body> {
        self.count(if code == ErrorCode::StepUpRequired {
            Decision::StepUp
        } else {
            Decision::Deny
        });
        self.gw
            .audit
            .record_durable(self.entry("deny", reason))
            .await;
        refusal(code, message, &self.request_id)
    }

    fn count(&self, decision: Decision) {
        self.metrics.count(decision);
        self.metrics.answered(self.started);
    }
}

/// The request's host, lowercase and without port.
fn host_of(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h.to_owned(),
        None => {
            let h = req.headers().get(HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = h.parse().ok()?;
            authority.host().to_owned()
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The protocol a request asks to switch to (`Connection: upgrade` with an
/// `Upgrade` header), if any.
fn upgrade_protocol(h: &http::HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        h.get(http::header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The most specific route for `host` and `path`: the longest prefix wins.
pub fn route<'r>(routes: &'r [Route], host: &str, path: &str) -> Option<&'r Route> {
    routes
        .iter()
        .filter(|r| {
            r.protocol == umbra_proto::control::Protocol::Http
                && r.host == host
                && path::prefix_matches(&r.path_prefix, path)
        })
        .max_by_key(|r| r.path_prefix.len())
}

pub async fn handle(
    gw: Arc<Gateway>,
    upstreams: Upstreams,
    conn: Conn,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = tokio::time::Instant::now();
    let request_id = next_request_id();
    let mut audit = Audit {
        gw: &gw,
        conn: &conn,
        started,
        metrics: gw.metrics.unrouted(),
        request_id,
        resource: format!(
            "{} {}",
            req.method(),
            req.uri().path().chars().take(256).collect::<String>()
        ),
        actor: format!("device:{}", conn.peer.device_id),
    };
    if gw.revoked.load(Ordering::SeqCst) {
        // The controller no longer takes this gateway's records: no wait.
        audit.record("deny", "gateway_revoked");
        return refusal(
            ErrorCode::Unavailable,
            "service unavailable",
            &audit.request_id,
        );
    }
    if !gw.view.is_fresh() {
        // Most likely the controller is unreachable: do not hold every
        // request for an acknowledgement that cannot come.
        audit.record("deny", "gateway_state_stale");
        return refusal(
            ErrorCode::Unavailable,
            "service unavailable, retry later",
            &audit.request_id,
        );
    }
    let now = gw.now();
    let issuer = gw
        .issuer
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let claims = {
        let Some(token) = bearer(&req) else {
            return audit
                .deny(
                    "no_session_token",
                    ErrorCode::AuthenticationFailed,
                    "authentication failed",
                )
                .await;
        };
        let view = gw.view.read();
        crate::authn::verify(
            &view,
            issuer.as_deref().unwrap_or_default(),
            token,
            &conn.peer,
            now,
        )
    };
    let claims = match claims {
        Ok(c) => c,
        Err(reason) => {
            return audit
                .deny(
                    reason,
                    ErrorCode::AuthenticationFailed,
                    "authentication failed",
                )
                .await;
        }
    };
    audit.actor = format!("user:{}", claims.sub);
    let normalized = match path::normalize(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            return audit
                .deny(
                    &format!("bad_path: {e}"),
                    ErrorCode::InvalidRequest,
                    "invalid request path",
                )
                .await;
        }
    };
    let host = host_of(&req).unwrap_or_default();
    let Some(route) = route(&gw.config.routes, &host, &normalized) else {
        return audit
            .deny(
                &format!("no_route: {host}{normalized}"),
                ErrorCode::NotFound,
                "not found",
            )
            .await;
    };
    audit.resource = format!("service:{} {} {normalized}", route.service, req.method());
    audit.metrics = gw.metrics.service(&route.service);
    let decision = {
        let view = gw.view.read();
        view.decide(&Ask {
            claims: &claims,
            spiffe_id: &conn.peer.spiffe_id,
            service: &route.service,
            method: Some(req.method().as_str()),
            path: Some(&normalized),
            port: None,
            source: conn.addr.ip(),
            now,
        })
    };
    let explanation = explain(&decision);
    if decision.needs_step_up() {
        let mut resp = audit
            .deny(
                &format!("step_up_required: {explanation}"),
                ErrorCode::StepUpRequired,
                STEP_UP_MESSAGE,
            )
            .await;
        // Machine-readable without reading the body (RFC 9470's style).
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(STEP_UP_CHALLENGE),
        );
        return resp;
    }
    if !decision.allowed() {
        // The same answer as for a service that does not exist.
        return audit
            .deny(&explanation, ErrorCode::NotFound, "not found")
            .await;
    }

    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max_body = gw.config.limits.max_body_bytes;
    if declared.is_some_and(|n| n > max_body) {
        return audit
            .deny(
                &format!("body_too_large: over {max_body} bytes"),
                ErrorCode::PayloadTooLarge,
                "request body too large",
            )
            .await;
    }
    // An upgrade (WebSocket) keeps its two hop-by-hop headers for the
    // upstream; everything else hop-by-hop goes.
    let upgrade = upgrade_protocol(req.headers());
    // What an upgraded connection is re-checked against while it lasts.
    let target = upgrade.as_ref().map(|_| Target {
        service: route.service.clone(),
        method: Some(req.method().as_str().to_owned()),
        path: Some(normalized.clone()),
        port: None,
    });
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let forged = headers::sanitize_request(req.headers_mut());
    if let Some(protocol) = &upgrade {
        req.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        req.headers_mut()
            .insert(http::header::UPGRADE, protocol.clone());
    }
    let assertion = match gw.assertions.assert(&claims, &route.service, now) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "assertion signing failed");
            return audit
                .deny(
                    "assertion_signing_failed",
                    ErrorCode::Internal,
                    "internal error",
                )
                .await;
        }
    };
    let h = req.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-auth-user", &claims.sub);
    set("x-auth-groups", &claims.groups.join(","));
    set("x-risk-score", &decision.risk.score.to_string());
    set("x-device-id", &claims.device);
    set("x-session-id", &claims.sid);
    set("x-umbra-jwt-assertion", &assertion);
    set("x-forwarded-for", &conn.addr.ip().to_string());
    set("x-forwarded-proto", "https");
    set("x-forwarded-host", &host);
    // The upstream sees the host that was routed on, even when the client
    // sent an absolute-form target naming another.
    set("host", &host);
    set("x-request-id", &audit.request_id);

    let path_and_query = match req.uri().query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized.clone(),
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(route.upstream.clone())
        .path_and_query(path_and_query)
        .build();
    let Ok(uri) = uri else {
        return audit
            .deny(
                "upstream_uri_invalid",
                ErrorCode::InvalidRequest,
                "invalid request",
            )
            .await;
    };
    *req.uri_mut() = uri;
    let (client, version) = if route.upstream_http2 {
        (&upstreams.http2, http::Version::HTTP_2)
    } else {
        (&upstreams.http1, http::Version::HTTP_11)
    };
    *req.version_mut() = version;

    let mut reason = explanation;
    if forged > 0 {
        reason.push_str(&format!("; {forged} client identity header(s) stripped"));
    }
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    // Bytes moved both ways count toward the session's transfer, as
    // over a tunnel.
    let owner = Arc::new(crate::transfer::Owner {
        session: claims.sid.clone(),
        user: claims.sub.clone(),
        source: conn.addr.ip(),
        service: route.service.clone(),
    });
    let req = req.map(|body| {
        crate::transfer::CountedBody::new(
            http_body_util::Limited::new(body, limit),
            gw.clone(),
            owner.clone(),
        )
    });
    match tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(req)).await {
        Ok(Ok(mut resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let (Some(client_upgrade), Some(target)) = (client_upgrade, target) else {
                // 101 to a request that asked for no upgrade: refuse it.
                audit.record("allow", &format!("{reason}; unsolicited 101 from upstream"));
                return refusal(
                    ErrorCode::UpstreamUnavailable,
                    "upstream switched protocols unasked",
                    &audit.request_id,
                );
            };
            audit.record("allow", &format!("{reason}; upgraded"));
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let (gw2, conn2) = (gw.clone(), conn.clone());
            let (actor, resource) = (audit.actor.clone(), audit.resource.clone());
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await)
                else {
                    return;
                };
                let ended = crate::tunnel::relay_checked(
                    &gw2,
                    &conn2,
                    &claims,
                    &target,
                    hyper_util::rt::TokioIo::new(client),
                    hyper_util::rt::TokioIo::new(upstream),
                )
                .await;
                if let crate::tunnel::Ended::Cut(why) = ended {
                    gw2.audit.record(GatewayAuditRecord {
                        ts: gw2.now(),
                        actor,
                        source_ip: conn2.addr.ip().to_string(),
                        action: "gateway.access".into(),
                        resource,
                        outcome: "deny".into(),
                        reason: format!("upgraded connection cut: {why}"),
                        request_id: String::new(),
                        count: 1,
                        transfer: None,
                    });
                }
            });
            resp.map(|b| b.map_err(BoxError::from).boxed())
        }
        Ok(Ok(mut resp)) => {
            audit.record("allow", &reason);
            headers::sanitize_response(resp.headers_mut());
            if let Ok(v) = HeaderValue::from_str(&audit.request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            let long = hyper::body::Body::size_hint(resp.body())
                .exact()
                .is_none_or(|n| n >= CUT_BODIES_FROM);
            if long && !hyper::body::Body::is_end_stream(resp.body()) {
                let live = gw.live.register(Holder {
                    session: claims.sid.clone(),
                    user: claims.sub.clone(),
                    device: claims.device.clone(),
                    serial: conn.peer.serial.clone(),
                    source: conn.addr.ip(),
                });
                let gw = gw.clone();
                return resp.map(|b| {
                    CutBody::new(crate::transfer::CountedBody::new(b, gw, owner), live).boxed()
                });
            }
            let gw = gw.clone();
            resp.map(|b| {
                crate::transfer::CountedBody::new(b, gw, owner)
                    .map_err(BoxError::from)
                    .boxed()
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, service = %route.service, "upstream request failed");
            audit.record("allow", &format!("{reason}; upstream failed"));
            refusal(
                ErrorCode::UpstreamUnavailable,
                "upstream unavailable",
                &audit.request_id,
            )
        }
        Err(_) => {
            audit.record("allow", &format!("{reason}; upstream timed out"));
            refusal(
                ErrorCode::UpstreamUnavailable,
                "upstream timed out",
                &audit.request_id,
            )
        }
    }
}
