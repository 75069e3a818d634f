//! `GET /auth/verify` on the controller: forward authentication for a
//! reverse proxy in front of web apps (nginx `auth_request`, Traefik
//! `forwardAuth`, Envoy HTTP `ext_authz`), for browsers holding the login
//! page's session cookie.
//!
//! 200 with `X-Auth-User`, `X-Auth-Groups`, `X-Risk-Score`,
//! `X-Session-ID` allows; 401 with `Location` (the login page, or the
//! step-up page, with the user's URL as `rd`) asks for a login; 403
//! denies. The service is the one `[browser.services]` names for the
//! original host, and the controller's policy (native rules, grants, and
//! Umbra's Rego package when stored) decides, with the session's risk and
//! MFA time from the store, not from the cookie. Every answer is audited
//! (`auth.verify`); a denial is durable before the reply.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use umbra_policy::access::with_grants;
use umbra_policy::decision::{
    Context, Decision, DecisionInput, DecisionPoint, RegoPolicy, Request, Risk, Subject,
};
use umbra_proto::control::Grant;
use umbra_proto::{ApiError, ErrorBody, ErrorCode};
use umbra_store::Outcome;

use super::forwarded::{Original, original};
use super::login::{BrowserSession, browser_session};
use super::page::urlencode;
use crate::Controller;
use crate::context::RequestContext;
use crate::error::Failure;

pub const VERIFY_PATH: &str = "/auth/verify";

struct Verdict {
    status: StatusCode,
    code: Option<ErrorCode>,
    reason: String,
    headers: Vec<(&'static str, String)>,
}

impl Verdict {
    fn refuse(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN),
            code: Some(code),
            reason: reason.into(),
            headers: Vec::new(),
        }
    }
}

#[utoipa::path(get, path = "/auth/verify", tag = "browser", responses((status = 200, description = "Allowed: X-Auth-User, X-Auth-Groups, X-Risk-Score, X-Session-ID"), (status = 400, description = "A trusted proxy's forwarded headers are missing or ambiguous", body = ErrorBody), (status = 401, description = "Not signed in (Location: the login page) or a step-up is due (Location: the step-up page)", body = ErrorBody), (status = 403, description = "Denied", body = ErrorBody), (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn verify(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut actor = "-".to_owned();
    let mut resource = "forward-auth".to_owned();
    let mut ip = ctx.ip;
    let verdict = match original(&c.config.browser, ctx.ip, &method, &uri, &headers) {
        Err(why) => Verdict::refuse(ErrorCode::InvalidRequest, why),
        Ok(o) => {
            ip = o.client;
            resource = format!("{}{} {}", o.host, o.path, o.method);
            decide(&c, &o, &headers, &mut actor, &mut resource).await
        }
    };
    let outcome = if verdict.code.is_none() {
        Outcome::Allow
    } else {
        Outcome::Deny
    };
    // The record is written before the answer; one that cannot be written
    // turns an allow into a refusal (fail closed).
    if c.audit_event(
        &actor,
        Some(ip),
        "auth.verify",
        &resource,
        outcome,
        &verdict.reason,
        &ctx.request_id,
    )
    .await
    .is_err()
    {
        return Failure::unavailable().into_response();
    }
    reply(verdict, &ctx.request_id)
}

/// Envoy's HTTP `ext_authz`: the original path after the verify path.
#[utoipa::path(get, path = "/auth/verify/{original}", tag = "browser", params(("original" = String, Path, description = "The original request's path (from a trusted proxy)")), responses((status = 200, description = "Allowed: X-Auth-User, X-Auth-Groups, X-Risk-Score, X-Session-ID"), (status = 400, description = "A trusted proxy's forwarded headers are missing or ambiguous", body = ErrorBody), (status = 401, description = "Not signed in or a step-up is due", body = ErrorBody), (status = 403, description = "Denied", body = ErrorBody), (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn verify_envoy(
    state: State<Arc<Controller>>,
    ctx: RequestContext,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    verify(state, ctx, method, uri, headers).await
}

fn reply(v: Verdict, request_id: &str) -> Response {
    let mut r = match v.code {
        None => v.status.into_response(),
        Some(code) => {
            let message = match code {
                ErrorCode::StepUpRequired => "this request needs a fresh one-time code",
                ErrorCode::AuthenticationFailed => "authentication required",
                ErrorCode::Forbidden => "access denied",
                ErrorCode::InvalidRequest => "the proxy did not forward the original request",
                _ => "refused",
            };
            let body = ErrorBody {
                error: ApiError {
                    code,
                    message: message.to_owned(),
                    request_id: Some(request_id.to_owned()),
                },
            };
            (v.status, axum::Json(body)).into_response()
        }
    };
    for (name, value) in v.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, value);
        }
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A 401 sending the user to `page` (login or step-up) with `rd`.
fn to_page(code: ErrorCode, reason: String, page: &str, o: &Original, challenge: &str) -> Verdict {
    let mut v = Verdict::refuse(code, reason);
    v.status = StatusCode::UNAUTHORIZED;
    v.headers
        .push(("location", format!("{page}?rd={}", urlencode(&o.url()))));
    v.headers.push(("www-authenticate", challenge.to_owned()));
    v
}

async fn decide(
    c: &Controller,
    o: &Original,
    headers: &HeaderMap,
    actor: &mut String,
    resource: &mut String,
) -> Verdict {
    let ignored = if o.forwarded {
        ""
    } else {
        " (forwarded headers ignored: not a trusted proxy)"
    };
    let s = match browser_session(c, headers).await {
        Ok(s) => s,
        Err(reason) => {
            return to_page(
                ErrorCode::AuthenticationFailed,
                format!("{reason}{ignored}"),
                "/auth/login",
                o,
                "Cookie realm=\"umbra\"",
            );
        }
    };
    *actor = format!("user:{}", s.user.name);
    let Some(service) = c.config.browser.service_for(&o.host) else {
        return Verdict::refuse(
            ErrorCode::Forbidden,
            format!(
                "no_service: no [browser.services] entry for {:?}{ignored}",
                o.host
            ),
        );
    };
    *resource = format!("service:{service} {} {}", o.method, o.path);
    let decision = match decision(c, &s, service, o).await {
        Ok(d) => d,
        Err(_) => return Verdict::refuse(ErrorCode::Unavailable, "store_unavailable"),
    };
    let explanation = explain(&decision);
    if decision.needs_step_up() {
        return to_page(
            ErrorCode::StepUpRequired,
            format!("step_up_required: {explanation}"),
            "/auth/step-up",
            o,
            "Umbra error=\"step_up_required\"",
        );
    }
    if !decision.allowed() {
        return Verdict::refuse(ErrorCode::Forbidden, format!("{explanation}{ignored}"));
    }
    Verdict {
        status: StatusCode::OK,
        code: None,
        reason: format!("session {}; {explanation}{ignored}", s.session.id),
        headers: vec![
            ("x-auth-user", s.user.name.clone()),
            ("x-auth-groups", s.user.groups.join(",")),
            ("x-risk-score", s.session.risk.to_string()),
            ("x-session-id", s.session.id.clone()),
            ("x-umbra-service", service.to_owned()),
        ],
    }
}

/// Decides with the policy in force: the native file with the admin API's
/// grants, and Umbra's Rego package when one is stored. A browser has no
/// device: rules that ask for a posture find none.
async fn decision(
    c: &Controller,
    s: &BrowserSession,
    service: &str,
    o: &Original,
) -> Result<Decision, Failure> {
    let grants: Vec<Grant> = c
        .store
        .list_services()
        .await?
        .into_iter()
        .map(|s| Grant {
            service: s.name,
            allow_users: s.allow_users,
            allow_groups: s.allow_groups,
        })
        .collect();
    let loaded = c.policies.current();
    let rego = loaded
        .modules
        .values()
        .any(|m| crate::policies::is_umbra_module(m))
        .then(|| RegoPolicy {
            set: (*loaded.set).clone(),
            query: umbra_policy::decision::DECISION_QUERY.to_owned(),
            exclusive: false,
        });
    let point = DecisionPoint {
        config: with_grants(&c.config.policy.config, &grants),
        rego,
    };
    let now = c.now();
    let age = |t: i64| u64::try_from(now.saturating_sub(t)).ok();
    Ok(point.decide(&DecisionInput {
        subject: Subject {
            user: Some(s.user.name.clone()),
            groups: s.user.groups.clone(),
            ..Subject::default()
        },
        device: None,
        request: Request {
            service: service.to_owned(),
            method: Some(o.method.as_str().to_owned()),
            path: Some(o.path.clone()),
            port: None,
            sensitivity: None,
        },
        context: Context {
            source_address: Some(o.client),
            now_s: now,
            session_age_s: age(s.session.created_at),
            mfa_age_s: s.session.mfa_at.map(|t| age(t).unwrap_or(0)),
        },
        risk: Risk {
            score: s.session.risk,
            factors: Vec::new(),
        },
    }))
}

fn explain(d: &Decision) -> String {
    let mut parts: Vec<String> = d.reasons.clone();
    if !d.conditions.is_empty() {
        let conditions: Vec<&str> = d.conditions.iter().map(|c| c.as_str()).collect();
        parts.push(format!("conditions: {}", conditions.join(", ")));
    }
    parts.push(format!("risk {}", d.risk.score));
    parts.join("; ")
}
