//! The login page: password + TOTP in a browser, a session cookie out.
//!
//! The same account checks, lockout and per-address rate limit as the
//! agent's login (`auth::check_credentials`, `Controller::admit_attempt`),
//! the same risk engine (with an unknown device), and a session in the
//! store that the admin API lists and revokes like any other.
//!
//! CSRF: the form carries a random token that must equal the one in a
//! `__Host-` cookie set with the form (double submit; SameSite=Strict, so
//! another site's page can neither read it nor send it), and a POST whose
//! `Origin` names another host is refused. The session cookie is
//! SameSite=Lax: another site's POST (to step-up, to logout) arrives
//! without it.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde::Deserialize;
use umbra_proto::token::{BrowserClaims, SESSION_COOKIE, browser_audience, cookie};
use umbra_store::{Outcome, SessionKind, SessionRecord, UserRecord};
use zeroize::Zeroizing;

use super::auth::{SecondFactor, account_refusal, check_credentials, check_totp, record_failure};
use super::forwarded::client_ip;
use super::page;
use crate::Controller;
use crate::context::RequestContext;
use crate::error::Failure;

#[derive(Debug, Default, Deserialize)]
pub struct ReturnQuery {
    #[serde(default)]
    pub rd: String,
}

/// The login form's fields (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LoginFormDoc {
    user: String,
    password: String,
    /// The one-time code.
    totp: String,
    /// The form's CSRF token (equal to the `__Host-umbra_csrf` cookie).
    csrf: String,
    rd: Option<String>,
}

/// The step-up form's fields (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StepUpFormDoc {
    totp: String,
    csrf: String,
    rd: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    totp: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rd: String,
}

#[derive(Deserialize)]
pub struct StepUpForm {
    #[serde(default)]
    totp: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rd: String,
}

pub(super) fn cookie_value<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie(v, name));
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// A live browser session, from the request's cookie.
pub struct BrowserSession {
    pub session: SessionRecord,
    pub user: UserRecord,
}

/// Checks the session cookie: signature, kind and audience (this trust
/// domain), then the session in the store (a browser one, live) and its
/// user (active). The reason on refusal goes to the audit trail.
pub async fn browser_session(
    c: &Controller,
    h: &HeaderMap,
) -> Result<BrowserSession, &'static str> {
    let token = cookie_value(h, SESSION_COOKIE).ok_or("no_session_cookie")?;
    let now = c.now();
    let audience = browser_audience(c.ca.trust_domain().as_str());
    let claims = match c.signer.verify_browser(token, &audience, now) {
        // Another controller sharing the store may have rotated keys.
        Err(crate::tokens::TokenError::UnknownKey) if c.may_reload_signing_keys() => {
            c.reload_signing_keys()
                .await
                .map_err(|_| "store_unavailable")?;
            c.signer.verify_browser(token, &audience, now)
        }
        other => other,
    }
    .map_err(|e| e.reason())?;
    let session = c
        .store
        .session(&claims.sid)
        .await
        .map_err(|_| "store_unavailable")?
        .ok_or("session_unknown")?;
    if session.kind != SessionKind::Browser {
        return Err("session_not_a_browser_session");
    }
    if session.revoked_at.is_some() {
        return Err("session_revoked");
    }
    if session.expires_at <= now {
        return Err("session_expired");
    }
    let user = c
        .store
        .user_by_id(&session.user_id)
        .await
        .map_err(|_| "store_unavailable")?
        .ok_or("user_unknown")?;
    if user.name != claims.sub {
        return Err("session_user_mismatch");
    }
    if user.status != umbra_proto::api::UserStatus::Active {
        return Err("user_suspended");
    }
    Ok(BrowserSession { session, user })
}

fn with_cookies(mut r: Response, cookies: &[HeaderValue]) -> Response {
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    r
}

fn redirect(to: &str, cookies: &[HeaderValue]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_cookies(r, cookies)
}

/// A page with its form and a fresh CSRF cookie for it.
fn form_page(status: StatusCode, title: &str, body: impl FnOnce(&str) -> String) -> Response {
    let csrf = crate::secrets::random_secret();
    with_cookies(
        page::html(status, title, &body(&csrf)),
        &[page::csrf_cookie(&csrf)],
    )
}

/// The form's token equals the cookie's, and the `Origin` (when the
/// browser sends one) is this host.
fn csrf_ok(h: &HeaderMap, uri: &Uri, form_token: &str) -> Result<(), &'static str> {
    let cookie = cookie_value(h, page::CSRF_COOKIE).ok_or("csrf_cookie_missing")?;
    if cookie.is_empty()
        || !bool::from(subtle::ConstantTimeEq::ct_eq(
            cookie.as_bytes(),
            form_token.as_bytes(),
        ))
    {
        return Err("csrf_token_mismatch");
    }
    same_origin(h, uri)
}

/// A browser's POST names the page's origin; it must be the host the
/// request is for: the `Host` header over HTTP/1.1, the `:authority`
/// (which hyper puts in the URI) over HTTP/2, where browsers send no
/// `Host`.
pub(super) fn same_origin(h: &HeaderMap, uri: &Uri) -> Result<(), &'static str> {
    let Some(origin) = h.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "origin_mismatch")?;
    let origin_host = origin
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_ascii_lowercase()));
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .map(str::to_ascii_lowercase);
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => Ok(()),
        _ => Err("origin_mismatch"),
    }
}

/// `GET /auth/login?rd=URL`: the form (or, with a live session, where it
/// was going).
#[utoipa::path(get, path = "/auth/login", tag = "browser", params(("rd" = Option<String>, Query, description = "Where to return after the login: an https URL on a `[browser] return_hosts` host, or a path")), responses((status = 200, description = "The login form (HTML), with a CSRF cookie", content_type = "text/html", body = String), (status = 303, description = "Already signed in: to `rd`")))]
pub async fn login_page(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Query(q): Query<ReturnQuery>,
) -> Response {
    let rd = page::return_to(&c.config.browser, &q.rd);
    if let Ok(s) = browser_session(&c, &headers).await {
        return match rd {
            Some(to) => redirect(&to, &[]),
            None => page::html(StatusCode::OK, "Umbra", &page::signed_in(&s.user.name)),
        };
    }
    form_page(StatusCode::OK, "Sign in", |csrf| {
        page::login_form(csrf, rd.as_deref(), None)
    })
}

/// `POST /auth/login`: checks the form, opens a browser session, sets its
/// cookie and returns to `rd` (when it is allowed).
#[utoipa::path(post, path = "/auth/login", tag = "browser", request_body(content = LoginFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "Signed in, no return URL: the signed-in page (HTML) and the session cookie", content_type = "text/html", body = String), (status = 303, description = "Signed in: to `rd`, with the session cookie"), (status = 400, description = "Not a form"), (status = 401, description = "Refused: the form again (HTML)", content_type = "text/html", body = String), (status = 403, description = "CSRF check failed: the form again (HTML)", content_type = "text/html", body = String), (status = 415, description = "Not a form"), (status = 422, description = "Not a form"), (status = 429, description = "Rate-limited: the form again (HTML)", content_type = "text/html", body = String), (status = 503, description = "The store is unavailable")))]
pub async fn login_submit(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<LoginForm>,
) -> Response {
    const ACTION: &str = "auth.browser_login";
    let ip = client_ip(&c.config.browser, ctx.ip, &headers);
    let rd = page::return_to(&c.config.browser, &form.rd);
    let actor = format!("user:{}", form.user.chars().take(64).collect::<String>());
    let refuse = |reason: String, message: &'static str| {
        let c = c.clone();
        let actor = actor.clone();
        let rd = rd.clone();
        let request_id = ctx.request_id.clone();
        async move {
            let audited = c
                .audit_event(
                    &actor,
                    Some(ip),
                    ACTION,
                    "browser",
                    Outcome::Deny,
                    &reason,
                    &request_id,
                )
                .await;
            if audited.is_err() {
                return Failure::unavailable().into_response();
            }
            let status = if reason.starts_with("csrf") || reason.starts_with("origin") {
                StatusCode::FORBIDDEN
            } else if reason == "rate_limited" {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            };
            form_page(status, "Sign in", |csrf| {
                page::login_form(csrf, rd.as_deref(), Some(message))
            })
        }
    };
    const FAILED: &str = "Sign-in failed. Check your user name, password and code.";
    if let Err(reason) = csrf_ok(&headers, &uri, &form.csrf) {
        return refuse(reason.into(), "The form expired. Please try again.").await;
    }
    if c.admit_attempt(ip).await.is_err() {
        return refuse("rate_limited".into(), "Too many attempts. Wait a minute.").await;
    }
    if form.user.len() > 64 || form.password.len() > crate::password::MAX_PASSWORD_LEN {
        return refuse("input_too_long".into(), FAILED).await;
    }
    if form.totp.len() > 16 {
        return refuse("input_too_long".into(), FAILED).await;
    }
    let now = c.now();
    let password = Zeroizing::new(form.password);
    let user = match super::auth::login_account(&c, &form.user, &password).await {
        Ok(Ok(user)) => user,
        Ok(Err(reason)) => return refuse(reason.into(), FAILED).await,
        Err(f) => return f.into_response(),
    };
    if let Some(reason) = account_refusal(&user, now) {
        return refuse(reason.into(), FAILED).await;
    }
    match check_credentials(&c, &user, password, SecondFactor::Totp(&form.totp), now).await {
        Ok(None) => {}
        Ok(Some(reason)) => return refuse(reason, FAILED).await,
        Err(f) => return f.into_response(),
    }
    match open_browser_session(&c, &user, ip, now, &ctx.request_id).await {
        Ok(Ok((token, lifetime))) => {
            let cookies = [
                page::session_cookie(&token, lifetime),
                page::clear_csrf_cookie(),
            ];
            match rd {
                Some(to) => redirect(&to, &cookies),
                None => with_cookies(
                    page::html(StatusCode::OK, "Umbra", &page::signed_in(&user.name)),
                    &cookies,
                ),
            }
        }
        Ok(Err(reason)) => refuse(reason, "Sign-in is not allowed now.").await,
        Err(f) => f.into_response(),
    }
}

/// Scores the login, records the session and signs its cookie:
/// `Ok(Err(reason))` when risk or a concurrent suspension refuses.
async fn open_browser_session(
    c: &Controller,
    user: &UserRecord,
    ip: std::net::IpAddr,
    now: i64,
    request_id: &str,
) -> Result<Result<(String, i64), String>, Failure> {
    let assessed = crate::risk::at_login(c, user, None, ip, now).await?;
    let risk = assessed.score;
    let factors = crate::risk::describe(&assessed);
    let Some(lifetime) = c.config.policy.config.risk.bands.session_lifetime(risk) else {
        return Ok(Err(format!("risk_too_high:{risk} ({factors})")));
    };
    let lifetime = i64::from(lifetime);
    let session = SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        kind: SessionKind::Browser,
        user_id: user.id.clone(),
        user_name: user.name.clone(),
        device_id: String::new(),
        cert_serial: String::new(),
        source_ip: ip.to_string(),
        risk,
        created_at: now,
        expires_at: now + lifetime,
        revoked_at: None,
        revoked_reason: None,
        mfa_at: Some(now),
        verdict: None,
    };
    let token = sign(c, user, &session, now)?;
    if !c.store.open_session(&session).await? {
        return Ok(Err("user_suspended_during_login".into()));
    }
    c.audit_event(
        &format!("user:{}", user.name),
        Some(ip),
        "auth.browser_login",
        "browser",
        Outcome::Allow,
        &format!("risk {risk} [{factors}], session {}", session.id),
        request_id,
    )
    .await?;
    Ok(Ok((token, lifetime)))
}

fn sign(
    c: &Controller,
    user: &UserRecord,
    session: &SessionRecord,
    mfa_at: i64,
) -> Result<String, Failure> {
    let now = c.now();
    let claims = BrowserClaims {
        iss: c.signer.issuer().to_owned(),
        aud: browser_audience(c.ca.trust_domain().as_str()),
        sub: user.name.clone(),
        sid: session.id.clone(),
        groups: user.groups.clone(),
        risk: session.risk,
        iat: now,
        nbf: now,
        exp: session.expires_at,
        mfa_at,
    };
    c.signer.sign_browser(&claims).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        Failure::internal()
    })
}

/// `GET /auth/step-up?rd=URL`: the one-time-code form for a live session.
#[utoipa::path(get, path = "/auth/step-up", tag = "browser", params(("rd" = Option<String>, Query, description = "Where to return after the step-up")), responses((status = 200, description = "The one-time-code form (HTML)", content_type = "text/html", body = String), (status = 303, description = "No session: to the login page")))]
pub async fn step_up_page(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Query(q): Query<ReturnQuery>,
) -> Response {
    let rd = page::return_to(&c.config.browser, &q.rd);
    match browser_session(&c, &headers).await {
        Ok(s) => form_page(StatusCode::OK, "Confirm it is you", |csrf| {
            page::step_up_form(&s.user.name, csrf, rd.as_deref(), None)
        }),
        Err(_) => {
            let to = match rd {
                Some(rd) => format!("/auth/login?rd={}", page::urlencode(&rd)),
                None => "/auth/login".to_owned(),
            };
            redirect(&to, &[])
        }
    }
}

/// `POST /auth/step-up`: a fresh TOTP moves the session's MFA time to
/// now. Failures count towards the lockout, as at login.
#[utoipa::path(post, path = "/auth/step-up", tag = "browser", request_body(content = StepUpFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "Stepped up, no return URL (HTML)", content_type = "text/html", body = String), (status = 303, description = "Stepped up: to `rd` with a new cookie; or no session: to the login page"), (status = 400, description = "Not a form"), (status = 401, description = "Refused: the form again (HTML)", content_type = "text/html", body = String), (status = 403, description = "CSRF check failed (HTML)", content_type = "text/html", body = String), (status = 415, description = "Not a form"), (status = 422, description = "Not a form"), (status = 503, description = "The store is unavailable")))]
pub async fn step_up_submit(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<StepUpForm>,
) -> Response {
    const ACTION: &str = "auth.browser_step_up";
    let ip = client_ip(&c.config.browser, ctx.ip, &headers);
    let rd = page::return_to(&c.config.browser, &form.rd);
    let s = match browser_session(&c, &headers).await {
        Ok(s) => s,
        Err(reason) => {
            c.audit_event(
                "-",
                Some(ip),
                ACTION,
                "-",
                Outcome::Deny,
                reason,
                &ctx.request_id,
            )
            .await
            .ok();
            return redirect("/auth/login", &[]);
        }
    };
    let actor = format!("user:{}", s.user.name);
    let resource = format!("session:{}", s.session.id);
    let now = c.now();
    let refusal = if let Err(reason) = csrf_ok(&headers, &uri, &form.csrf) {
        Some(reason.to_owned())
    } else if c.admit_attempt(ip).await.is_err() {
        Some("rate_limited".to_owned())
    } else if s.user.is_locked(now) {
        Some("account_locked".to_owned())
    } else if form.totp.len() > 16 {
        Some("input_too_long".to_owned())
    } else {
        match check_totp(&c, &s.user, &form.totp, now).await {
            Ok(None) => None,
            Ok(Some(reason)) => match record_failure(&c, &s.user, reason, now).await {
                Ok(r) => Some(r),
                Err(f) => return f.into_response(),
            },
            Err(f) => return f.into_response(),
        }
    };
    if let Some(reason) = refusal {
        if c.audit_event(
            &actor,
            Some(ip),
            ACTION,
            &resource,
            Outcome::Deny,
            &reason,
            &ctx.request_id,
        )
        .await
        .is_err()
        {
            return Failure::unavailable().into_response();
        }
        let status = if reason.starts_with("csrf") || reason.starts_with("origin") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        return form_page(status, "Confirm it is you", |csrf| {
            page::step_up_form(
                &s.user.name,
                csrf,
                rd.as_deref(),
                Some("That code did not work."),
            )
        });
    }
    let result = async {
        if !c.store.record_session_mfa(&s.session.id, now).await? {
            return Err(Failure::auth());
        }
        let token = sign(&c, &s.user, &s.session, now)?;
        c.audit_event(
            &actor,
            Some(ip),
            ACTION,
            &resource,
            Outcome::Allow,
            "fresh TOTP",
            &ctx.request_id,
        )
        .await?;
        Ok(token)
    }
    .await;
    match result {
        Ok(token) => {
            let cookies = [
                page::session_cookie(&token, s.session.expires_at - now),
                page::clear_csrf_cookie(),
            ];
            match rd {
                Some(to) => redirect(&to, &cookies),
                None => with_cookies(
                    page::html(StatusCode::OK, "Umbra", &page::signed_in(&s.user.name)),
                    &cookies,
                ),
            }
        }
        Err(f) => f.into_response(),
    }
}

/// `POST /auth/logout`: ends the session (the gateways are told) and
/// clears the cookie. Another site's POST carries no Lax cookie and a
/// foreign `Origin` is refused, so nobody is logged out from elsewhere.
#[utoipa::path(post, path = "/auth/logout", tag = "browser", responses((status = 200, description = "Signed out: the session revoked, the cookie cleared (HTML)", content_type = "text/html", body = String), (status = 403, description = "A foreign Origin (HTML)", content_type = "text/html", body = String), (status = 503, description = "The store is unavailable")))]
pub async fn logout(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    const ACTION: &str = "auth.browser_logout";
    let ip = client_ip(&c.config.browser, ctx.ip, &headers);
    let cleared = [page::clear_session_cookie()];
    if let Err(reason) = same_origin(&headers, &uri) {
        c.audit_event(
            "-",
            Some(ip),
            ACTION,
            "-",
            Outcome::Deny,
            reason,
            &ctx.request_id,
        )
        .await
        .ok();
        return page::html(StatusCode::FORBIDDEN, "Sign out", "<p>Refused.</p>");
    }
    let s = match browser_session(&c, &headers).await {
        Ok(s) => s,
        Err(_) => {
            return with_cookies(
                page::html(StatusCode::OK, "Signed out", "<p>You are signed out.</p>"),
                &cleared,
            );
        }
    };
    let result = async {
        c.store
            .revoke_session(&s.session.id, c.now(), "logout")
            .await?;
        c.publish(&umbra_proto::control::Event::SessionRevoked {
            session: s.session.id.clone(),
        })
        .await?;
        c.audit_event(
            &format!("user:{}", s.user.name),
            Some(ip),
            ACTION,
            &format!("session:{}", s.session.id),
            Outcome::Allow,
            "",
            &ctx.request_id,
        )
        .await
    }
    .await;
    match result {
        Ok(()) => with_cookies(
            page::html(StatusCode::OK, "Signed out", "<p>You are signed out.</p>"),
            &cleared,
        ),
        Err(f) => f.into_response(),
    }
}
