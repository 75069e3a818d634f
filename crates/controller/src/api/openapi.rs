//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema` derives, so it cannot drift
//! from the code silently: a test compares it with the committed
//! `docs/openapi.json`, and CI runs schemathesis against a live controller.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use umbra_proto::ErrorBody;
use umbra_proto::api::*;
use umbra_proto::control::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Every error an API call can answer with; the body is always the
/// envelope, the code says which.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: handlers return `Failure`
pub enum ApiErrors {
    /// Malformed JSON, a field that failed validation, or an invalid CSR.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No credential, or one that does not verify (deliberately generic).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Enrollment refused, or not allowed.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such resource or route.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Method not allowed on this route.
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// Already exists, or in a state that forbids the change.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over the size limit.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// Too many attempts; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// An unexpected failure; the request id finds it in the log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The store is unavailable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// What `POST /api/v1/admin/users/{name}/{action}` returns, by action.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only
pub enum UserActionResult {
    User(User),
    ResetTotp(ResetTotpResponse),
    RecoveryCodes(RecoveryCodes),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token (uat1.…), or a session token (JWT) presented over mTLS \
                         with the device certificate it is bound to",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "mtls",
            SecurityScheme::MutualTls {
                description: Some(
                    "A client certificate from the Umbra CA (device or gateway)".into(),
                ),
                extensions: None,
            },
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Umbra controller API",
        description = "Identities, devices, sessions, gateways and the audit trail. \
                       Errors are `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    paths(
        super::public::healthz,
        super::public::readyz,
        super::public::metrics,
        super::public::jwks,
        super::public::ca,
        openapi_json,
        super::enroll::enroll,
        super::devices::renew,
        super::devices::posture,
        super::auth::login,
        super::auth::logout,
        super::auth::step_up,
        super::auth::session,
        super::gateway::enroll,
        super::gateway::register,
        super::gateway::renew,
        super::gateway::control,
        super::gateway::audit,
        super::admin::bootstrap,
        super::admin::create_user,
        super::admin::list_users,
        super::admin::get_user,
        super::admin::user_action,
        super::admin::create_enrollment_token,
        super::admin::list_devices,
        super::admin::device_action,
        super::admin::revoke_certificate,
        super::admin::list_sessions,
        super::admin::revoke_session,
        super::blocks::list,
        super::blocks::add,
        super::blocks::lift,
        super::admin::create_admin_token,
        super::admin::list_admin_tokens,
        super::admin::revoke_admin_token,
        super::audit::list,
        super::audit::export,
        super::audit::checkpoint,
        super::admin::rotate_signing_key,
        super::admin::list_services,
        super::admin::put_service,
        super::admin::delete_service,
        super::admin::list_gateways,
        super::admin::create_gateway,
        super::admin::revoke_gateway,
        super::opa::get_data_root,
        super::opa::post_data_root,
        super::opa::get_data,
        super::opa::post_data,
        super::opa::put_data,
        super::opa::delete_data,
        super::opa::list_policies,
        super::opa::get_policy,
        super::opa::put_policy,
        super::opa::delete_policy,
        super::login::login_page,
        super::login::login_submit,
        super::login::step_up_page,
        super::login::step_up_submit,
        super::login::logout,
        super::verify::verify,
        super::verify::verify_envoy,
        super::ui::root,
        super::ui::index,
        super::ui::stylesheet,
        super::ui::icon,
        super::ui::revoke_session,
        super::ui::user_action,
        super::ui::lift_block,
    ),
    components(schemas(ErrorBody, ControlFrame, Event, Snapshot, super::opa::OpaError)),
    tags(
        (name = "public", description = "No credential needed"),
        (name = "devices", description = "Enrollment and certificate renewal"),
        (name = "sessions", description = "Login over mTLS, logout, introspection"),
        (name = "gateways", description = "Gateway enrollment and the control channel"),
        (name = "admin", description = "Administration (admin token or admin session)"),
        (name = "browser", description = "The login page (HTML forms, a session cookie) and forward-auth for reverse proxies"),
        (name = "dashboard", description = "The admin dashboard at /ui/ (HTML; an admin's browser session, forms with the session's token)"),
        (name = "policy", description = "The OPA REST API: Data API and policy modules, in OPA's shapes (errors are `{\"code\", \"message\", \"errors\"}`)"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "public", responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(document).clone();
    ([(http::header::CONTENT_TYPE, "application/json")], doc).into_response()
}

#[cfg(test)]
mod tests {
    /// The committed document must be what the code generates. To update
    /// it after changing the API: `UMBRA_UPDATE_OPENAPI=1 cargo test -p
    /// umbra-controller openapi`, then review and commit the diff.
    #[test]
    fn committed_openapi_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = format!("{}\n", super::document());
        if std::env::var_os("UMBRA_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: regenerate it with \
             `UMBRA_UPDATE_OPENAPI=1 cargo test -p umbra-controller openapi` and commit it"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::document()).expect("the document is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        // The router's routes (crates/controller/src/api/mod.rs), by path.
        let source = include_str!("mod.rs").replace(
            "umbra_proto::control::CONTROL_PATH",
            &format!("\"{}\"", umbra_proto::control::CONTROL_PATH),
        );
        let routes = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            // `{*path}` (the rest of the URL) is `{path}` in OpenAPI.
            .map(|r| r.replace("{*", "{"))
            .collect::<Vec<_>>();
        assert!(routes.len() > 30, "parsed the router: {routes:?}");
        for r in routes {
            assert!(
                paths.contains_key(&r),
                "route {r} is not in the OpenAPI document"
            );
        }
    }
}
