//! Endpoints anyone may call: they reveal nothing secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use umbra_proto::api::Health;

use crate::Controller;
use crate::error::Failure;
use umbra_proto::ErrorBody;

#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready when the store answers.
#[utoipa::path(get, path = "/readyz", tag = "public", responses((status = 200, description = "Ready: the store answers", body = Health), (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn readyz(State(c): State<Arc<Controller>>) -> Response {
    match c.store.ping().await {
        Ok(()) => Json(Health {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: store unavailable");
            Failure::unavailable().into_response()
        }
    }
}

/// The session-token keys and the active gateways' assertion keys: what an
/// upstream needs to check `X-Umbra-Jwt-Assertion`. Only the session keys
/// verify session tokens (the controller and the gateways never take keys
/// from this document).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "public", responses((status = 200, description = "Session-token keys and the active gateways' assertion keys (RFC 7517 JWK set)", body = Object), (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn jwks(State(c): State<Arc<Controller>>) -> Response {
    let mut set = c.signer.jwks(c.now());
    match c.store.list_gateways().await {
        Ok(gateways) => set.keys.extend(
            gateways
                .iter()
                .filter(|g| g.status == umbra_store::GatewayStatus::Active)
                .filter_map(|g| serde_json::from_str(g.assertion_jwk.as_deref()?).ok()),
        ),
        Err(e) => {
            tracing::error!(error = %e, "jwks: store unavailable");
            return Failure::unavailable().into_response();
        }
    }
    let mut r = Json(set).into_response();
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=60"),
    );
    r
}

#[utoipa::path(get, path = "/api/v1/ca", tag = "public", responses((status = 200, description = "The Umbra CA certificate (PEM)", content_type = "application/x-pem-file", body = String)))]
pub async fn ca(State(c): State<Arc<Controller>>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/x-pem-file")],
        c.ca.cert_pem().to_owned(),
    )
        .into_response()
}

/// Prometheus metrics (text exposition format 0.0.4; `docs/api.md` lists
/// them). Counts and gauges only: nothing here names a user or a device.
#[utoipa::path(get, path = "/metrics", tag = "public", responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(c): State<Arc<Controller>>) -> Response {
    let text = c.metrics.render(&c).await;
    (
        [
            (http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}
