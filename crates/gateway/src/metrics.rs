//! The gateway's Prometheus metrics and the plain listener that serves
//! them (`[metrics] listen`, off by default).
//!
//! Why a listener of its own: the gateway's main listener admits only
//! devices with an Umbra certificate, which a Prometheus server does not
//! hold, and a dark gateway's is behind SPA besides. The metrics listener
//! answers `GET /metrics` and `GET /healthz` and nothing else; bind it to
//! loopback or a management network.
//!
//! The hot path stays cheap: the counters and latency histogram of every
//! routed service are created once, at start, from the configured routes
//! ([`Metrics::service`] is a hash lookup by `&str` and an atomic add, no
//! allocation, no lock); requests refused before a service is known
//! (no token, no route, stale state) count under `resource="-"`, so a
//! client cannot mint label values. Gauges (pinholes, live connections,
//! the controller's reachability) are read at scrape time.
//!
//! Why the `prometheus` crate: see `umbra_controller::metrics` (text
//! format 0.0.4 for `promtool`, one registry per gateway, no global).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::config::Route;
use crate::spa::SpaCounters;

/// The `resource` of requests refused before a service was known.
pub const UNROUTED: &str = "-";

/// An access decision, as `ztna_access_requests_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Refused until the session passes a fresh MFA.
    StepUp,
}

/// One service's counters, made at start.
#[derive(Clone)]
pub struct ServiceMetrics {
    allow: IntCounter,
    deny: IntCounter,
    step_up: IntCounter,
    /// HTTP services only (and the unrouted bucket).
    duration: Option<Histogram>,
}

impl ServiceMetrics {
    pub fn count(&self, decision: Decision) {
        match decision {
            Decision::Allow => self.allow.inc(),
            Decision::Deny => self.deny.inc(),
            Decision::StepUp => self.step_up.inc(),
        }
    }

    /// An HTTP request answered: from its arrival to the response headers.
    pub fn answered(&self, since: Instant) {
        if let Some(h) = &self.duration {
            h.observe(since.elapsed().as_secs_f64());
        }
    }
}

pub struct Metrics {
    registry: Registry,
    services: HashMap<String, ServiceMetrics>,
    unrouted: ServiceMetrics,
    revocation: Histogram,
    connected: IntGauge,
    contact_age: IntGauge,
    fresh: IntGauge,
    live_sessions: IntGauge,
    live_connections: IntGauge,
    /// Dark gateways only.
    pinholes: Option<IntGauge>,
    /// When the gateway started (Unix seconds): the contact age before
    /// the first contact.
    started: i64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

// Names, help texts and label sets below are constants of this file: the
// `expect`s fire only on a programming error, which the unit test catches.
fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique constants");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        r,
        IntGauge::new(name, help).expect("valid metric constants"),
    )
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        r,
        Histogram::with_opts(opts).expect("valid metric constants"),
    )
}

/// Latency buckets, seconds: a loopback hop to a slow upstream.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Revocation buckets, seconds: a cut is in-process work.
const REVOCATION_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

impl Metrics {
    /// The metrics of a gateway serving `routes`, and the SPA counters
    /// (registered only when it is `dark`).
    pub fn new(routes: &[Route], dark: bool, now: i64) -> (Self, SpaCounters) {
        let r = Registry::new();
        let access = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "ztna_access_requests_total",
                    "Access decisions (HTTP requests, TCP tunnels, forward-auth checks) by \
                     service and decision; resource=\"-\": refused before a service was known",
                ),
                &["resource", "decision"],
            )
            .expect("valid metric constants"),
        );
        let durations = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "umbra_gateway_request_duration_seconds",
                    "HTTP requests through the proxy, from arrival to the response headers \
                     (refusals included), by service",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["service"],
            )
            .expect("valid metric constants"),
        );
        let make = |service: &str, http: bool| ServiceMetrics {
            allow: access.with_label_values(&[service, "allow"]),
            deny: access.with_label_values(&[service, "deny"]),
            step_up: access.with_label_values(&[service, "step_up"]),
            duration: http.then(|| durations.with_label_values(&[service])),
        };
        let mut services: HashMap<String, ServiceMetrics> = HashMap::new();
        for route in routes {
            let http = route.protocol == umbra_proto::control::Protocol::Http;
            match services.get_mut(&route.service) {
                Some(m) if http && m.duration.is_none() => {
                    m.duration = Some(durations.with_label_values(&[&route.service]));
                }
                Some(_) => {}
                None => {
                    services.insert(route.service.clone(), make(&route.service, http));
                }
            }
        }
        // Only refusals happen before a service is known: no always-zero
        // allow and step_up series for it (these two stay unregistered).
        let detached = || IntCounter::new("unrouted", "never rendered").expect("valid constants");
        let unrouted = ServiceMetrics {
            allow: detached(),
            deny: access.with_label_values(&[UNROUTED, "deny"]),
            step_up: detached(),
            duration: Some(durations.with_label_values(&[UNROUTED])),
        };
        let spa = IntCounterVec::new(
            Opts::new(
                "umbra_gateway_spa_packets_total",
                "SPA packets at a dark gateway by outcome (dropped: failed the cheap checks, \
                 before any decryption)",
            ),
            &["outcome"],
        )
        .expect("valid metric constants");
        let spa = if dark { register(&r, spa) } else { spa };
        let counters = SpaCounters {
            accepted: spa.with_label_values(&["accepted"]),
            refused: spa.with_label_values(&["refused"]),
            dropped_cheap: spa.with_label_values(&["dropped"]),
        };
        let metrics = Self {
            services,
            unrouted,
            revocation: histogram(
                &r,
                "umbra_gateway_revocation_seconds",
                "From a revocation event's receipt on the control channel to the cut of the \
                 live connections and pinholes it ends (gateway-side: events carry no \
                 publication time)",
                REVOCATION_BUCKETS,
            ),
            connected: gauge(
                &r,
                "umbra_gateway_controller_connected",
                "1 while the control channel to the controller is up, else 0",
            ),
            contact_age: gauge(
                &r,
                "umbra_gateway_controller_contact_age_seconds",
                "Seconds since the controller was last heard from (since start before the \
                 first contact)",
            ),
            fresh: gauge(
                &r,
                "umbra_gateway_state_fresh",
                "1 while the gateway's replica is within its staleness bound (it decides), \
                 0 when it refuses everything",
            ),
            live_sessions: gauge(
                &r,
                "umbra_gateway_live_sessions",
                "Sessions with at least one long-lived connection (tunnel, upgraded \
                 connection, streamed response)",
            ),
            live_connections: gauge(
                &r,
                "umbra_gateway_live_connections",
                "Long-lived connections (tunnels, upgraded connections, streamed responses) \
                 that a revocation cuts",
            ),
            pinholes: dark.then(|| {
                gauge(
                    &r,
                    "umbra_gateway_pinholes_open",
                    "Pinholes open at a dark gateway",
                )
            }),
            started: now,
            registry: r,
        };
        (metrics, counters)
    }

    /// The counters of `service`; the unrouted ones for a name no route
    /// has.
    pub fn service(&self, service: &str) -> &ServiceMetrics {
        self.services.get(service).unwrap_or(&self.unrouted)
    }

    pub fn unrouted(&self) -> &ServiceMetrics {
        &self.unrouted
    }

    /// A revocation received at `since` has been carried out.
    pub fn revocation_applied(&self, since: Instant) {
        self.revocation.observe(since.elapsed().as_secs_f64());
    }

    /// The scrape: the gauges read now, then every metric as text.
    pub async fn render(&self, gw: &Gateway) -> String {
        let now = gw.now();
        {
            let view = gw.view.read();
            let synced = view.seq.is_some();
            self.connected.set(i64::from(
                synced && view.connected.load(std::sync::atomic::Ordering::Relaxed),
            ));
            let since = if synced { view.contact } else { self.started };
            self.contact_age.set(now.saturating_sub(since).max(0));
            self.fresh.set(i64::from(gw.view.is_fresh_locked(&view)));
        }
        let (sessions, connections) = gw.live.counts();
        self.live_sessions.set(as_i64(sessions));
        self.live_connections.set(as_i64(connections));
        if let (Some(g), Some(p)) = (&self.pinholes, &gw.pinholes) {
            match p.count().await {
                Ok(n) => g.set(as_i64(n)),
                Err(e) => tracing::warn!(error = %e, "metrics: pinholes cannot be counted"),
            }
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics could not be encoded");
                String::new()
            })
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` (plain HTTP/1.1)
/// until `shutdown`.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening (plain HTTP)");
    }
    let limits = gw.config.limits.clone();
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let gw = gw.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let gw = gw.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&gw, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes)
                .serve_connection(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "metrics connection ended with an error");
                },
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait()).await;
}

async fn answer(gw: &Gateway, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/metrics") => (
            StatusCode::OK,
            prometheus::TEXT_FORMAT,
            Bytes::from(gw.metrics.render(gw).await),
        ),
        (&http::Method::GET, "/healthz") => (
            StatusCode::OK,
            "application/json",
            Bytes::from_static(br#"{"status":"ok"}"#),
        ),
        (_, "/metrics" | "/healthz") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"method not allowed\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, protocol: umbra_proto::control::Protocol) -> Route {
        Route {
            service: service.into(),
            protocol,
            upstream_http2: false,
            host: "h".into(),
            path_prefix: "/".into(),
            upstream: "127.0.0.1:1".parse().expect("authority"),
        }
    }

    #[test]
    fn every_routed_service_counts_from_zero_and_strangers_count_as_unrouted() {
        use umbra_proto::control::Protocol::{Http, Tcp};
        let routes = [route("web", Http), route("web", Http), route("ssh", Tcp)];
        let (m, spa) = Metrics::new(&routes, true, 0);
        m.service("web").count(Decision::Allow);
        m.service("web").answered(Instant::now());
        m.service("ssh").count(Decision::StepUp);
        m.service("no-such-service").count(Decision::Deny);
        spa.dropped_cheap.inc();
        let text = TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .expect("encode");
        for line in [
            "# TYPE ztna_access_requests_total counter",
            r#"ztna_access_requests_total{decision="allow",resource="web"} 1"#,
            r#"ztna_access_requests_total{decision="deny",resource="web"} 0"#,
            r#"ztna_access_requests_total{decision="step_up",resource="ssh"} 1"#,
            r#"ztna_access_requests_total{decision="deny",resource="-"} 1"#,
            r#"umbra_gateway_request_duration_seconds_count{service="web"} 1"#,
            r#"umbra_gateway_spa_packets_total{outcome="dropped"} 1"#,
            "umbra_gateway_pinholes_open 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains(r#"umbra_gateway_request_duration_seconds_count{service="ssh"}"#),
            "TCP services have no request latency"
        );
    }

    #[test]
    fn a_gateway_that_is_not_dark_has_no_spa_or_pinhole_metrics() {
        let (m, _) = Metrics::new(&[], false, 0);
        let text = TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .expect("encode");
        assert!(!text.contains("spa_packets"), "{text}");
        assert!(!text.contains("pinholes_open"), "{text}");
    }
}
