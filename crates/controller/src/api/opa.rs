//! The OPA REST API (`/v1/data`, `/v1/policies`), so an application written
//! for OPA works against Umbra's URL with a bearer token.
//!
//! Shapes follow OPA: `{"result": …}` or `{}` when undefined; module
//! uploads are raw Rego text; errors are OPA's `{"code", "message",
//! "errors"}` (not the `/api/v1` envelope), with each compile error's
//! `location` (`file` is the policy id, `row`, `col`).
//!
//! Reads take any Umbra credential: an admin token, a session token over
//! mTLS with its device certificate, or a client certificate alone (a live
//! device or gateway of this CA). Writes take the admin credential and are
//! checked by building the whole new set before anything is stored (see
//! [`crate::policies`]); each is audited. Evaluations are not audited one
//! by one (an application's decision log is its own); evaluation errors,
//! oversized inputs and refused credentials are.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use umbra_pki::{GatewayCertificate, PeerCertificate};
use umbra_policy::rego::{EvalError, LoadError, Position};
use umbra_proto::api::DeviceStatus;
use umbra_store::Outcome;

use super::guard::{check_admin, verify_session};
use crate::Controller;
use crate::context::RequestContext;
use crate::error::Failure;
use crate::policies::{BuildError, Change, build};

type C = State<Arc<Controller>>;

/// Largest request body on these routes; the input inside it is held to the
/// policy set's own limit (1 MiB), and a module to [`MAX_MODULE_BYTES`].
pub const MAX_BODY_BYTES: usize = 2 << 20;
pub const MAX_MODULE_BYTES: usize = 1 << 20;
/// Policy ids and data paths: long enough for `team/service/authz.rego`.
const MAX_ID_BYTES: usize = 256;

// ---- wire types ----------------------------------------------------------------------

/// `{"result": …}`; the key is absent when the document is undefined.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DataResponse {
    /// Any JSON value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// The request body of `POST /v1/data/{path}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DataRequest {
    /// The input document, any JSON value; absent: evaluate without input.
    pub input: Option<Value>,
}

/// OPA's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpaError {
    /// `invalid_parameter`, `unauthorized`, `forbidden`, `resource_not_found`,
    /// `request_too_large`, `evaluation_error`, `internal_error`, `unavailable`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<OpaErrorDetail>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpaErrorDetail {
    /// `rego_parse_error`, `rego_compile_error`, `rego_type_error`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<OpaLocation>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpaLocation {
    pub file: String,
    pub row: u32,
    pub col: u32,
}

/// A stored module, as `GET /v1/policies/{id}` returns it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyModule {
    pub id: String,
    /// The Rego source as uploaded.
    pub raw: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyResponse {
    pub result: PolicyModule,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyListResponse {
    pub result: Vec<PolicyModule>,
}

/// Every error these routes answer with, in OPA's shape.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: handlers return `OpaFailure`
pub enum OpaErrors {
    /// Malformed JSON, a bad id or path, or a module that does not compile.
    #[response(status = 400)]
    BadRequest(OpaError),
    /// No credential, or one that does not verify.
    #[response(status = 401)]
    Unauthenticated(OpaError),
    /// A valid credential that may not write policy.
    #[response(status = 403)]
    Forbidden(OpaError),
    /// No such policy or document.
    #[response(status = 404)]
    NotFound(OpaError),
    /// The body or the input document is over the size limit.
    #[response(status = 413)]
    TooLarge(OpaError),
    /// Evaluation failed or ran out of time (audited; callers deny).
    #[response(status = 500)]
    Evaluation(OpaError),
    /// The store is unavailable; retry later.
    #[response(status = 503)]
    Unavailable(OpaError),
}

// ---- errors --------------------------------------------------------------------------

#[derive(Debug)]
pub struct OpaFailure {
    status: StatusCode,
    body: OpaError,
}

impl OpaFailure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: OpaError {
                code: code.to_owned(),
                message: message.into(),
                errors: Vec::new(),
            },
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "resource_not_found", message)
    }

    fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", message)
    }

    fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication failed",
        )
    }

    /// A module set that does not build: OPA's compile error body, with
    /// the position in the message too (`id:line:col: message`).
    fn load(e: &LoadError) -> Self {
        let code = match e {
            LoadError::Parse { .. } => "rego_parse_error",
            LoadError::UnknownFunction { .. } => "rego_type_error",
            _ => "rego_compile_error",
        };
        let message = match e {
            LoadError::Parse { message, .. } | LoadError::Compile { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        };
        let mut f = Self::invalid(e.to_string());
        f.body.errors.push(OpaErrorDetail {
            code: code.to_owned(),
            message,
            location: e.position().map(|p: Position| OpaLocation {
                file: p.file,
                row: p.line,
                col: p.column,
            }),
        });
        f
    }
}

impl From<Failure> for OpaFailure {
    fn from(f: Failure) -> Self {
        let status =
            StatusCode::from_u16(f.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match status.as_u16() {
            503 => "unavailable",
            _ => "internal_error",
        };
        Self::new(status, code, f.message)
    }
}

impl From<umbra_store::StoreError> for OpaFailure {
    fn from(e: umbra_store::StoreError) -> Self {
        Failure::from(e).into()
    }
}

impl IntoResponse for OpaFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type OpaResult<T> = Result<T, OpaFailure>;

/// The raw body, with an oversized one refused in OPA's shape.
pub struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = OpaFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Self(b)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(OpaFailure::too_large(
                format!("request body is over {MAX_BODY_BYTES} bytes"),
            )),
            Err(r) => Err(OpaFailure::invalid(r.body_text())),
        }
    }
}

// ---- credentials ---------------------------------------------------------------------

/// Who may read: see the module documentation. The precise refusal reason
/// is returned for the audit record.
async fn reader(c: &Controller, ctx: &RequestContext) -> Result<String, String> {
    if let Some(token) = ctx.bearer.as_deref() {
        if token.starts_with(crate::secrets::ADMIN_PREFIX)
            || token.starts_with(crate::secrets::BOOTSTRAP_PREFIX)
        {
            return check_admin(c, ctx).await.map_err(str::to_owned);
        }
        let v = verify_session(c, ctx).await.map_err(str::to_owned)?;
        return Ok(format!("user:{}", v.user.name));
    }
    let der = ctx.cert.as_ref().ok_or("no_credential")?;
    let td = c.ca.trust_domain();
    if let Ok(peer) = PeerCertificate::parse(der, td) {
        let cert = c
            .store
            .certificate(&peer.serial)
            .await
            .map_err(|_| "store_unavailable")?
            .ok_or("certificate_unknown")?;
        if cert.revoked_at.is_some() {
            return Err("certificate_revoked".into());
        }
        if cert.device_id != peer.device_id {
            return Err("certificate_device_mismatch".into());
        }
        let device = c
            .store
            .device(&peer.device_id)
            .await
            .map_err(|_| "store_unavailable")?
            .ok_or("device_unknown")?;
        if device.status == DeviceStatus::Revoked {
            return Err("device_revoked".into());
        }
        return Ok(format!("device:{}", peer.device_id));
    }
    if GatewayCertificate::parse(der, td).is_ok() {
        let gw = super::gateway::check_gateway(c, ctx).await?;
        return Ok(format!("gateway:{}", gw.name));
    }
    Err("certificate_not_a_device_or_gateway".into())
}

async fn authorize_read(c: &Controller, ctx: &RequestContext, action: &str) -> OpaResult<String> {
    match reader(c, ctx).await {
        Ok(actor) => Ok(actor),
        Err(reason) => {
            c.audit_denial(ctx, action, "-", &reason).await;
            Err(OpaFailure::unauthenticated())
        }
    }
}

/// The admin credential, or 401 (no valid credential) / 403 (a reader's).
async fn authorize_write(
    c: &Controller,
    ctx: &RequestContext,
    action: &str,
    resource: &str,
) -> OpaResult<String> {
    match check_admin(c, ctx).await {
        Ok(actor) => Ok(actor),
        Err(reason) => {
            let forbidden = reader(c, ctx).await.is_ok();
            let reason = if forbidden { "not_an_admin" } else { reason };
            c.audit_denial(ctx, action, resource, reason).await;
            Err(if forbidden {
                OpaFailure::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "writing policy needs the admin credential",
                )
            } else {
                OpaFailure::unauthenticated()
            })
        }
    }
}

async fn audit(
    c: &Controller,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    resource: &str,
    outcome: Outcome,
    reason: &str,
) -> OpaResult<()> {
    c.audit_event(
        actor,
        Some(ctx.ip),
        action,
        resource,
        outcome,
        reason,
        &ctx.request_id,
    )
    .await
    .map_err(OpaFailure::from)
}

// ---- names ---------------------------------------------------------------------------

/// A policy id: 1–256 printable ASCII characters without spaces or `\`.
fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// A data path without leading/trailing slashes; `None` when empty,
/// too long, or with an empty segment (`a//b`).
fn data_path(raw: &str) -> Option<String> {
    let path = raw.trim_matches('/');
    (!path.is_empty()
        && path.len() <= MAX_ID_BYTES
        && path.split('/').all(|s| !s.is_empty())
        && !path.chars().any(char::is_control))
    .then(|| path.to_owned())
}

// ---- the Data API ----------------------------------------------------------------------

/// The document at `data/{path}` (`{}` when undefined), without input.
#[utoipa::path(get, path = "/v1/data/{path}", tag = "policy", params(("path" = String, Path, description = "Slash-separated path under `data`, e.g. `service_auth/allow`")), security(("bearer" = []), ("mtls" = [])), responses((status = 200, description = "`{\"result\": …}`, or `{}` when the document is undefined", body = DataResponse), OpaErrors))]
pub async fn get_data(
    State(c): C,
    ctx: RequestContext,
    Path(path): Path<String>,
) -> OpaResult<Response> {
    evaluate(c, ctx, path, Bytes::new()).await
}

/// The document at `data/{path}` evaluated with `input`.
#[utoipa::path(post, path = "/v1/data/{path}", tag = "policy", params(("path" = String, Path, description = "Slash-separated path under `data`, e.g. `service_auth/allow`")), request_body(content = DataRequest, description = "`{\"input\": …}`; an empty body evaluates without input"), security(("bearer" = []), ("mtls" = [])), responses((status = 200, description = "`{\"result\": …}`, or `{}` when the document is undefined", body = DataResponse), OpaErrors))]
pub async fn post_data(
    State(c): C,
    ctx: RequestContext,
    Path(path): Path<String>,
    Body(body): Body,
) -> OpaResult<Response> {
    evaluate(c, ctx, path, body).await
}

/// The whole `data` document, without input.
#[utoipa::path(get, path = "/v1/data", tag = "policy", security(("bearer" = []), ("mtls" = [])), responses((status = 200, description = "`{\"result\": …}`", body = DataResponse), OpaErrors))]
pub async fn get_data_root(State(c): C, ctx: RequestContext) -> OpaResult<Response> {
    evaluate(c, ctx, String::new(), Bytes::new()).await
}

/// The whole `data` document, evaluated with `input`.
#[utoipa::path(post, path = "/v1/data", tag = "policy", request_body(content = DataRequest, description = "`{\"input\": …}`"), security(("bearer" = []), ("mtls" = [])), responses((status = 200, description = "`{\"result\": …}`", body = DataResponse), OpaErrors))]
pub async fn post_data_root(
    State(c): C,
    ctx: RequestContext,
    Body(body): Body,
) -> OpaResult<Response> {
    evaluate(c, ctx, String::new(), body).await
}

async fn evaluate(
    c: Arc<Controller>,
    ctx: RequestContext,
    path: String,
    body: Bytes,
) -> OpaResult<Response> {
    const ACTION: &str = "policy.eval";
    let actor = authorize_read(&c, &ctx, ACTION).await?;
    let loaded = c.policies.current();
    let set = loaded.set.clone();
    let resource = format!("data/{}", path.trim_matches('/'));
    // Parsing a large input and evaluating are CPU work: off the I/O threads.
    let outcome = tokio::task::spawn_blocking(move || {
        let input = parse_input(&set, &body)?;
        set.eval_path(&path, input.as_ref()).map_err(Some)
    })
    .await
    .map_err(|_| OpaFailure::from(Failure::internal()))?;
    match outcome {
        Ok(result) => Ok(Json(DataResponse { result }).into_response()),
        Err(None) => Err(OpaFailure::invalid(
            "the request body must be a JSON object, e.g. {\"input\": {…}}",
        )),
        Err(Some(e)) => {
            let outcome = match e {
                EvalError::InputTooLarge { .. } | EvalError::BadInput { .. } => Outcome::Deny,
                _ => Outcome::Error,
            };
            audit(
                &c,
                &ctx,
                &actor,
                ACTION,
                &resource,
                outcome,
                &format!("{}: {e}", e.code()),
            )
            .await?;
            Err(match e {
                EvalError::InputTooLarge { .. } => OpaFailure::too_large(e.to_string()),
                EvalError::BadInput { .. } | EvalError::QueryTooLarge { .. } => {
                    OpaFailure::invalid(e.to_string())
                }
                _ => OpaFailure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "evaluation_error",
                    e.to_string(),
                ),
            })
        }
    }
}

/// `{"input": …}` → the input (none when the body is empty or has no
/// `input`). `Err(None)`: the body is not an object.
fn parse_input(
    set: &umbra_policy::rego::PolicySet,
    body: &[u8],
) -> Result<Option<umbra_policy::rego::Input>, Option<EvalError>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // The envelope is a few bytes: anything past the input limit plus
    // some slack is oversized before it is parsed.
    let max = set.limits().max_input_bytes;
    if body.len() > max + 1024 {
        return Err(Some(EvalError::InputTooLarge {
            size: body.len(),
            max,
        }));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Some(EvalError::BadInput {
            line: 1,
            column: e.valid_up_to() + 1,
            message: "not UTF-8".into(),
        })
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Some(EvalError::BadInput {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    })?;
    let Value::Object(mut fields) = value else {
        return Err(None);
    };
    match fields.remove("input") {
        None => Ok(None),
        Some(input) => set
            .input_from_json(&input.to_string())
            .map(Some)
            .map_err(Some),
    }
}

/// Creates or replaces the JSON document at `data/{path}` (and everything
/// below it), as OPA's `PUT /v1/data/{path}`.
#[utoipa::path(put, path = "/v1/data/{path}", tag = "policy", params(("path" = String, Path, description = "Slash-separated path under `data`")), request_body(content = Object, description = "Any JSON document"), security(("bearer" = [])), responses((status = 204, description = "Stored; in force on this controller at once, on the others within `api.event_poll_ms`"), OpaErrors))]
pub async fn put_data(
    State(c): C,
    ctx: RequestContext,
    Path(path): Path<String>,
    Body(body): Body,
) -> OpaResult<StatusCode> {
    const ACTION: &str = "policy.data.put";
    let resource = format!("data/{}", path.trim_matches('/'));
    let actor = authorize_write(&c, &ctx, ACTION, &resource).await?;
    let path = data_path(&path).ok_or_else(|| {
        OpaFailure::invalid("path: 1-256 characters, no empty segments; the root is not writable")
    })?;
    if body.len() > MAX_MODULE_BYTES {
        return Err(OpaFailure::too_large(format!(
            "a data document is at most {MAX_MODULE_BYTES} bytes"
        )));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        OpaFailure::invalid(format!(
            "body is not JSON: line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let document = value.to_string();
    let change = Change::PutData {
        path: path.clone(),
        value,
    };
    let revision = write(&c, &ctx, &actor, ACTION, &resource, change, |store, now| {
        let (path, document) = (path.clone(), document.clone());
        Box::pin(async move { store.put_policy_data(&path, &document, now).await.map(Some) })
    })
    .await?;
    revision.ok_or_else(|| OpaFailure::not_found("document"))?;
    audit(
        &c,
        &ctx,
        &actor,
        ACTION,
        &resource,
        Outcome::Allow,
        &format!("{} bytes", document.len()),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the document at `data/{path}` and everything below it.
#[utoipa::path(delete, path = "/v1/data/{path}", tag = "policy", params(("path" = String, Path, description = "Slash-separated path under `data`")), security(("bearer" = [])), responses((status = 204, description = "Deleted"), OpaErrors))]
pub async fn delete_data(
    State(c): C,
    ctx: RequestContext,
    Path(path): Path<String>,
) -> OpaResult<StatusCode> {
    const ACTION: &str = "policy.data.delete";
    let resource = format!("data/{}", path.trim_matches('/'));
    let actor = authorize_write(&c, &ctx, ACTION, &resource).await?;
    let path =
        data_path(&path).ok_or_else(|| OpaFailure::not_found("storage_not_found_error: path"))?;
    let change = Change::DeleteData { path: path.clone() };
    let revision = write(&c, &ctx, &actor, ACTION, &resource, change, |store, _| {
        let path = path.clone();
        Box::pin(async move { store.delete_policy_data(&path).await })
    })
    .await?;
    revision.ok_or_else(|| {
        OpaFailure::not_found(format!(
            "storage_not_found_error: {resource}: document does not exist"
        ))
    })?;
    audit(&c, &ctx, &actor, ACTION, &resource, Outcome::Allow, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- the Policy API ------------------------------------------------------------------

/// Every stored module.
#[utoipa::path(get, path = "/v1/policies", tag = "policy", security(("bearer" = []), ("mtls" = [])), responses((status = 200, description = "The modules in force", body = PolicyListResponse), OpaErrors))]
pub async fn list_policies(
    State(c): C,
    ctx: RequestContext,
) -> OpaResult<Json<PolicyListResponse>> {
    authorize_read(&c, &ctx, "policy.list").await?;
    let loaded = c.policies.current();
    Ok(Json(PolicyListResponse {
        result: loaded
            .modules
            .iter()
            .map(|(id, raw)| PolicyModule {
                id: id.clone(),
                raw: raw.clone(),
            })
            .collect(),
    }))
}

/// One module, as uploaded.
#[utoipa::path(get, path = "/v1/policies/{id}", tag = "policy", params(("id" = String, Path)), security(("bearer" = []), ("mtls" = [])), responses((status = 200, description = "The module", body = PolicyResponse), OpaErrors))]
pub async fn get_policy(
    State(c): C,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> OpaResult<Json<PolicyResponse>> {
    authorize_read(&c, &ctx, "policy.get").await?;
    let loaded = c.policies.current();
    let raw = loaded.modules.get(&id).ok_or_else(|| {
        OpaFailure::not_found(format!("storage_not_found_error: policy id {id:?}"))
    })?;
    Ok(Json(PolicyResponse {
        result: PolicyModule {
            id,
            raw: raw.clone(),
        },
    }))
}

/// Creates or replaces a module (raw Rego, v1 or v0 syntax). Refused with
/// the error's position when the set it would make does not compile; the
/// set in force then stays.
#[utoipa::path(put, path = "/v1/policies/{id}", tag = "policy", params(("id" = String, Path, description = "Any 1-256 printable characters, e.g. `authz` or `team/authz.rego`")), request_body(content = String, content_type = "text/plain", description = "The Rego module"), security(("bearer" = [])), responses((status = 200, description = "Stored and in force on this controller (others follow within `api.event_poll_ms`)", body = Object), OpaErrors))]
pub async fn put_policy(
    State(c): C,
    ctx: RequestContext,
    Path(id): Path<String>,
    Body(body): Body,
) -> OpaResult<Json<Value>> {
    const ACTION: &str = "policy.put";
    let resource = format!("policy:{id}");
    let actor = authorize_write(&c, &ctx, ACTION, &resource).await?;
    if !valid_id(&id) {
        return Err(OpaFailure::invalid(
            "id: 1-256 printable ASCII characters, no spaces or backslashes",
        ));
    }
    if body.len() > MAX_MODULE_BYTES {
        return Err(OpaFailure::too_large(format!(
            "a module is at most {MAX_MODULE_BYTES} bytes"
        )));
    }
    let raw = String::from_utf8(body.to_vec())
        .map_err(|_| OpaFailure::invalid("the module is not UTF-8 text"))?;
    let change = Change::PutModule {
        id: id.clone(),
        raw: raw.clone(),
    };
    write(&c, &ctx, &actor, ACTION, &resource, change, |store, now| {
        let (id, raw) = (id.clone(), raw.clone());
        Box::pin(async move { store.put_policy(&id, &raw, now).await.map(Some) })
    })
    .await?;
    let package = c
        .policies
        .current()
        .set
        .modules()
        .iter()
        .find(|m| m.file == id)
        .map(|m| m.package.clone())
        .unwrap_or_default();
    audit(
        &c,
        &ctx,
        &actor,
        ACTION,
        &resource,
        Outcome::Allow,
        &format!("package {package}, {} bytes", raw.len()),
    )
    .await?;
    Ok(Json(json!({})))
}

/// Deletes a module. Refused when the modules left would not compile
/// (another module imports it).
#[utoipa::path(delete, path = "/v1/policies/{id}", tag = "policy", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Deleted", body = Object), OpaErrors))]
pub async fn delete_policy(
    State(c): C,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> OpaResult<Json<Value>> {
    const ACTION: &str = "policy.delete";
    let resource = format!("policy:{id}");
    let actor = authorize_write(&c, &ctx, ACTION, &resource).await?;
    let change = Change::DeleteModule { id: id.clone() };
    let revision = write(&c, &ctx, &actor, ACTION, &resource, change, |store, _| {
        let id = id.clone();
        Box::pin(async move { store.delete_policy(&id).await })
    })
    .await?;
    revision.ok_or_else(|| {
        OpaFailure::not_found(format!("storage_not_found_error: policy id {id:?}"))
    })?;
    audit(&c, &ctx, &actor, ACTION, &resource, Outcome::Allow, "").await?;
    Ok(Json(json!({})))
}

type StoreWrite =
    std::pin::Pin<Box<dyn std::future::Future<Output = umbra_store::Result<Option<i64>>> + Send>>;

/// Checks `change` by building the whole set it makes from what the store
/// holds now, stores it, and swaps the new set in. A set that does not
/// build is refused (400, audited) and nothing is stored. Returns the new
/// revision, or `None` when the store had nothing to delete.
async fn write(
    c: &Arc<Controller>,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    resource: &str,
    change: Change,
    store_it: impl FnOnce(Arc<dyn umbra_store::Store>, i64) -> StoreWrite,
) -> OpaResult<Option<i64>> {
    let _serial = c.policies.write.lock().await;
    let snapshot = c.store.policy_snapshot().await?;
    let base = snapshot.revision;
    let was_umbras = snapshot
        .policies
        .iter()
        .any(|p| crate::policies::is_umbra_module(&p.raw));
    let built = tokio::task::spawn_blocking(move || build(&snapshot, Some(change)))
        .await
        .map_err(|_| OpaFailure::from(Failure::internal()))?;
    let mut loaded = match built {
        Ok(loaded) => loaded,
        Err(BuildError::Load(e)) => {
            audit(
                c,
                ctx,
                actor,
                action,
                resource,
                Outcome::Deny,
                &e.to_string(),
            )
            .await?;
            return Err(OpaFailure::load(&e));
        }
        Err(BuildError::Corrupt(message)) => {
            tracing::error!(%message, "stored policy data is unreadable");
            return Err(Failure::internal().into());
        }
    };
    let Some(revision) = store_it(c.store.clone(), c.now()).await? else {
        return Ok(None);
    };
    let is_umbras = loaded
        .modules
        .values()
        .any(|raw| crate::policies::is_umbra_module(raw));
    if revision == base + 1 {
        loaded.revision = revision;
        c.policies.install(loaded);
    } else {
        // Another controller wrote in between: read everything back.
        c.reload_policies().await?;
    }
    // The gateways decide with Umbra's own package: when it is (or was)
    // there, every change may change their decisions.
    if was_umbras || is_umbras {
        c.publish(&umbra_proto::control::Event::PolicyChanged { revision })
            .await?;
        // Gateways re-decide every live connection with the new policy
        // (their periodic re-check); the sessions are judged here too.
        c.reevaluation.trigger(
            crate::reevaluate::Trigger::All,
            &format!("policy revision {revision}"),
        );
    }
    Ok(Some(revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths() {
        assert!(valid_id("authz") && valid_id("team/authz.rego"));
        assert!(!valid_id("") && !valid_id("a b") && !valid_id("a\\b"));
        assert!(!valid_id(&"x".repeat(257)));
        assert_eq!(data_path("/a/b/").as_deref(), Some("a/b"));
        assert_eq!(data_path("a//b"), None);
        assert_eq!(data_path("/"), None);
    }
}
