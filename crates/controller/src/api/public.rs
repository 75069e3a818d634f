//! Endpoints anyone may call: they reveal nothing secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use umbra_proto::api::Health;

use crate::Controller;
use crate::error::Failure;

pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready when the store answers.
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

pub async fn jwks(State(c): State<Arc<Controller>>) -> Response {
    let mut r = Json(c.signer.jwks(c.now())).into_response();
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=300"),
    );
    r
}

pub async fn ca(State(c): State<Arc<Controller>>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/x-pem-file")],
        c.ca.cert_pem().to_owned(),
    )
        .into_response()
}
