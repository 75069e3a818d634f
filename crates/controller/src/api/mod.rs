//! The HTTP API: routes, the JSON extractor, request ids.
//!
//! Layout:
//! - [`public`]: health, readiness, metrics, JWKS, CA certificate.
//! - [`enroll`]: device enrollment (public; the token authenticates).
//! - [`auth`]: login, logout, session introspection (mTLS required).
//! - [`devices`]: certificate renewal (mTLS with the current certificate).
//! - [`admin`]: everything under `/api/v1/admin` (admin credential required).
//! - [`audit`]: the audit trail under `/api/v1/admin/audit`: filters,
//!   export with the hash chain and checkpoints, checkpoints on demand.
//! - [`gateway`]: gateway enrollment, registration, control channel, audit.
//! - [`guard`]: credential checks shared by `auth` and `admin`.
//! - [`opa`]: the OPA REST API (`/v1/data`, `/v1/policies`).
//! - [`login`]: the browser login, step-up and logout pages ([`page`]:
//!   their HTML, cookies and return URLs); [`verify`]: `/auth/verify` for
//!   reverse proxies ([`forwarded`]: what a trusted proxy says).
//! - [`ui`]: the dashboard at `/ui/` (an admin's browser session).

mod admin;
mod audit;
mod auth;
mod blocks;
mod devices;
mod enroll;
mod forwarded;
mod gateway;
mod guard;
mod login;
mod opa;
pub mod openapi;
mod page;
mod public;
mod ui;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use umbra_proto::ErrorCode;

use crate::Controller;
use crate::error::{Failure, REQUEST_ID};

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// Everything: a controller that is not dark.
    All,
    /// The public endpoints only (a dark controller's `public_listen`):
    /// health, readiness, metrics, JWKS, OpenAPI, the CA, device enrollment
    /// (which its one-time token authenticates), and the browser's login
    /// pages, `/auth/verify` and the dashboard.
    Public,
    /// Everything else (a dark controller's `listen`).
    Private,
}

pub fn router(controller: Arc<Controller>, routes: Routes) -> Router {
    let max_body = controller.config.max_body_bytes;
    let router = match routes {
        Routes::All => public_routes().merge(private_routes()),
        Routes::Public => public_routes(),
        Routes::Private => private_routes(),
    };
    router
        .fallback(|| async { Failure::not_found("route") })
        .method_not_allowed_fallback(|| async {
            let mut f = Failure::new(
                ErrorCode::InvalidRequest,
                "method not allowed on this route",
            );
            f.status_override = Some(http::StatusCode::METHOD_NOT_ALLOWED);
            f
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(request_id))
        .with_state(controller)
}

fn public_routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/healthz", get(public::healthz))
        .route("/readyz", get(public::readyz))
        .route("/metrics", get(public::metrics))
        .route("/.well-known/jwks.json", get(public::jwks))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/ca", get(public::ca))
        .route("/api/v1/enroll", post(enroll::enroll))
        // The browser's login pages and forward-auth: a browser has no
        // client certificate, and a dark controller serves them here.
        .route(
            "/auth/login",
            get(login::login_page).post(login::login_submit),
        )
        .route(
            "/auth/step-up",
            get(login::step_up_page).post(login::step_up_submit),
        )
        .route("/auth/logout", post(login::logout))
        .route("/auth/verify", any(verify::verify))
        .route("/auth/verify/{*original}", any(verify::verify_envoy))
        // The dashboard: a browser with the login page's cookie.
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/ui.css", get(ui::stylesheet))
        .route("/ui/favicon.svg", get(ui::icon))
        .route("/ui/sessions/{id}/revoke", post(ui::revoke_session))
        .route("/ui/users/{name}/{action}", post(ui::user_action))
        .route("/ui/blocks/{address}/lift", post(ui::lift_block))
}

fn private_routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/devices/renew", post(devices::renew))
        // Gateways reach a dark controller from exempt addresses: their
        // enrollment stays with their control channel, on one URL.
        .route("/api/v1/gateways/enroll", post(gateway::enroll))
        .route("/api/v1/devices/posture", post(devices::posture))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/step-up", post(auth::step_up))
        .route("/api/v1/auth/session", get(auth::session))
        .route("/api/v1/gateway/register", post(gateway::register))
        .route("/api/v1/gateway/renew", post(gateway::renew))
        .route(umbra_proto::control::CONTROL_PATH, get(gateway::control))
        // Gateways upload decision records in batches of up to 1000.
        .route(
            "/api/v1/gateway/audit",
            post(gateway::audit).layer(DefaultBodyLimit::max(1024 * 1024)),
        )
        .route("/api/v1/admin/bootstrap", post(admin::bootstrap))
        .route("/api/v1/admin/services", get(admin::list_services))
        .route(
            "/api/v1/admin/services/{name}",
            axum::routing::put(admin::put_service).delete(admin::delete_service),
        )
        .route(
            "/api/v1/admin/gateways",
            get(admin::list_gateways).post(admin::create_gateway),
        )
        .route(
            "/api/v1/admin/gateways/{name}/revoke",
            post(admin::revoke_gateway),
        )
        .route(
            "/api/v1/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route("/api/v1/admin/users/{name}", get(admin::get_user))
        .route(
            "/api/v1/admin/users/{name}/{action}",
            post(admin::user_action),
        )
        .route(
            "/api/v1/admin/enrollment-tokens",
            post(admin::create_enrollment_token),
        )
        .route("/api/v1/admin/devices", get(admin::list_devices))
        .route(
            "/api/v1/admin/devices/{id}/{action}",
            post(admin::device_action),
        )
        .route(
            "/api/v1/admin/certificates/{serial}/revoke",
            post(admin::revoke_certificate),
        )
        .route("/api/v1/admin/sessions", get(admin::list_sessions))
        .route("/api/v1/admin/blocks", get(blocks::list).post(blocks::add))
        .route(
            "/api/v1/admin/blocks/{address}",
            axum::routing::delete(blocks::lift),
        )
        .route(
            "/api/v1/admin/sessions/{id}/revoke",
            post(admin::revoke_session),
        )
        .route(
            "/api/v1/admin/tokens",
            get(admin::list_admin_tokens).post(admin::create_admin_token),
        )
        .route(
            "/api/v1/admin/tokens/{id}/revoke",
            post(admin::revoke_admin_token),
        )
        .route("/api/v1/admin/audit", get(audit::list))
        .route("/api/v1/admin/audit/export", get(audit::export))
        .route("/api/v1/admin/audit/checkpoints", post(audit::checkpoint))
        .route(
            "/api/v1/admin/signing-keys/rotate",
            post(admin::rotate_signing_key),
        )
        .merge(opa_routes())
}

/// The OPA REST API, with its own body limit: inputs and modules are
/// larger than anything else the API takes.
fn opa_routes() -> Router<Arc<Controller>> {
    Router::new()
        .route(
            "/v1/data",
            get(opa::get_data_root).post(opa::post_data_root),
        )
        .route(
            "/v1/data/{*path}",
            get(opa::get_data)
                .post(opa::post_data)
                .put(opa::put_data)
                .delete(opa::delete_data),
        )
        .route("/v1/policies", get(opa::list_policies))
        .route(
            "/v1/policies/{*id}",
            get(opa::get_policy)
                .put(opa::put_policy)
                .delete(opa::delete_policy),
        )
        .layer(DefaultBodyLimit::max(opa::MAX_BODY_BYTES))
}

/// Gives every request a fresh id (client-sent ids are not trusted: they
/// would let a peer forge correlation in the audit trail) and echoes it in
/// `X-Request-Id`.
async fn request_id(request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// `axum::Json` with rejections mapped onto the API's error codes.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let code = if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::MalformedJson
                };
                Err(Failure::new(code, rejection.body_text()))
            }
        }
    }
}

/// `axum::extract::Query` with rejections in the API's error envelope.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|rejection| Failure::invalid(rejection.body_text()))
    }
}

/// Names of users and groups: 1–64 characters, ASCII letters, digits and
/// `._@-`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}
