//! The dashboard at `/ui/`: server-rendered HTML, no script, its one
//! stylesheet compiled into the binary, figures read from the store at
//! each view ([`crate::dashboard`]).
//!
//! Who may see it: a browser session (the login page's cookie) of a user
//! with the admin role. No session: to the login page, back here after.
//! A session of anyone else: 403, audited. Every view is audited as an
//! admin read, as the API's are.
//!
//! Actions (revoke a session; suspend, resume, unlock a user or reset
//! their TOTP; lift a source block) are form POSTs that run the admin
//! API's own code under the admin's name, so they are audited alike.
//! CSRF: each form carries a token that is a MAC, under a key derived from
//! the KEK, of the browser session's id (a synchronizer token nobody
//! without the key can make, the same in every tab, and worthless once the
//! session ends), and a POST whose `Origin` is another host is refused.
//! The session cookie is SameSite=Lax, so another site's POST arrives
//! without it anyway.
//!
//! The pages forbid scripts, frames and foreign resources by CSP; askama
//! escapes everything they show (user names, host names, posture
//! messages, alert reasons all come from outside).

use std::borrow::Borrow;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde::Deserialize;
use umbra_proto::api::{DeviceStatus, Role, UserStatus};
use umbra_store::{Outcome, SessionRecord, UserRecord};

use super::forwarded::client_ip;
use super::guard::Admin;
use super::login::{BrowserSession, browser_session, same_origin};
use crate::Controller;
use crate::context::RequestContext;
use crate::dashboard::{self, Compliance, Dashboard, Figures, RISK_BANDS};
use crate::error::Failure;

/// The stylesheet and the icon, in the binary.
const CSS: &str = include_str!("../../assets/ui.css");
const ICON: &str = include_str!("../../assets/favicon.svg");
/// The pages' CSP: nothing but this origin's stylesheet and forms.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const CSRF_CONTEXT: &str = "umbra-ui-csrf-v1";

/// The signed-in admin behind a dashboard request.
pub struct UiAdmin {
    admin: Admin,
    session: BrowserSession,
}

impl FromRequestParts<Arc<Controller>> for UiAdmin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Controller>,
    ) -> Result<Self, Self::Rejection> {
        let mut ctx = RequestContext::from_request_parts(parts, c)
            .await
            .map_err(IntoResponse::into_response)?;
        ctx.ip = client_ip(&c.config.browser, ctx.ip, &parts.headers);
        let resource = format!("{} {}", parts.method, parts.uri.path());
        let session = match browser_session(c, &parts.headers).await {
            Ok(s) => s,
            Err(reason) => {
                if reason == "store_unavailable" {
                    return Err(failure_page(&Failure::unavailable()));
                }
                // A missing cookie is an ordinary first visit; anything
                // else (forged, revoked, expired) is worth a record.
                if reason != "no_session_cookie" {
                    c.audit_denial(&ctx, "ui.authenticate", &resource, reason)
                        .await;
                }
                return Err(see_other("/auth/login?rd=%2Fui%2F"));
            }
        };
        let actor = format!("user:{}", session.user.name);
        if session.user.role != Role::Admin {
            let _ = c
                .audit_event(
                    &actor,
                    Some(ctx.ip),
                    "ui.authenticate",
                    &resource,
                    Outcome::Deny,
                    "not_an_admin",
                    &ctx.request_id,
                )
                .await;
            return Err(message_page(
                StatusCode::FORBIDDEN,
                "Administrators only",
                "This dashboard is for administrators. You are signed in, but not as one.",
                None,
            ));
        }
        if parts.method == http::Method::GET {
            let path = parts.uri.path_and_query().map_or("-", |p| p.as_str());
            c.audit_event(
                &actor,
                Some(ctx.ip),
                "admin.read",
                path,
                Outcome::Allow,
                "dashboard",
                &ctx.request_id,
            )
            .await
            .map_err(|f| failure_page(&f))?;
        }
        Ok(Self {
            admin: Admin { actor, ctx },
            session,
        })
    }
}

impl UiAdmin {
    fn csrf(&self, c: &Controller) -> String {
        c.config
            .kek
            .mac(CSRF_CONTEXT, self.session.session.id.as_bytes())
    }

    /// The form's token is this session's, and the POST comes from this
    /// origin; a refusal is audited with its reason.
    async fn check_form(
        &self,
        c: &Controller,
        headers: &HeaderMap,
        uri: &Uri,
        token: &str,
        resource: &str,
    ) -> Result<(), Response> {
        let expected = self.csrf(c);
        let reason = if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            token.as_bytes(),
        )) {
            Some("csrf_token_mismatch")
        } else {
            same_origin(headers, uri).err()
        };
        let Some(reason) = reason else {
            return self.check_fresh_mfa(c, resource).await;
        };
        let _ = self.refused(c, resource, reason).await;
        Err(message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is not valid for your session. Reload the dashboard and try again.",
            Some(("/ui/", "Back to the dashboard")),
        ))
    }
}

impl UiAdmin {
    /// An action needs a TOTP entered recently (at login or a step-up,
    /// `[browser] action_mfa_seconds`): an older session is sent to the
    /// step-up page and back, to press the button again. A stolen cookie
    /// alone then shows the dashboard but acts only within that window.
    async fn check_fresh_mfa(&self, c: &Controller, resource: &str) -> Result<(), Response> {
        let now = c.now();
        let max = i64::from(c.config.browser.action_mfa_seconds);
        let age = self.session.session.mfa_at.map(|at| now - at);
        if age.is_some_and(|age| (0..=max).contains(&age)) {
            return Ok(());
        }
        let reason = match age {
            Some(age) => format!("step_up_required: last TOTP {age} s ago, at most {max} s"),
            None => "step_up_required: no TOTP in this session".to_owned(),
        };
        if let Err(f) = self.refused(c, resource, &reason).await {
            return Err(failure_page(&f));
        }
        Err(see_other(STEP_UP))
    }

    /// The audit record of an action refused before anything was done.
    async fn refused(&self, c: &Controller, resource: &str, reason: &str) -> Result<(), Failure> {
        c.audit_event(
            &self.admin.actor,
            Some(self.admin.ctx.ip),
            "ui.action",
            resource,
            Outcome::Deny,
            reason,
            &self.admin.ctx.request_id,
        )
        .await
    }
}

/// Where an action without a recent TOTP goes: the step-up page, back to
/// the dashboard with a notice to press the button again.
const STEP_UP: &str = "/auth/step-up?rd=%2Fui%2F%3Fdone%3Dconfirmed";

fn see_other(to: &'static str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A rendered page with headers that keep it out of frames, caches and
/// referrers.
fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "dashboard template failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    super::page::html_response(status, body, CSP)
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    link: Option<(&'a str, &'a str)>,
}

fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    html(
        status,
        MessagePage {
            title,
            message,
            link,
        }
        .render(),
    )
}

/// A failure as a page: its status, and the API's public message (never
/// more than a peer of the API would see).
fn failure_page(f: &Failure) -> Response {
    let status = f.status_override.unwrap_or_else(|| {
        StatusCode::from_u16(f.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    });
    message_page(
        status,
        "Not done",
        &f.message,
        Some(("/ui/", "Back to the dashboard")),
    )
}

/// One bar of the risk distribution (SVG user units).
struct RiskBar {
    label: String,
    count: u64,
    x: u32,
    y: u32,
    h: u32,
}

/// One hour of the access trend: the allowed part at the bottom, the
/// refused part stacked on it.
struct TrendBar {
    label: String,
    allowed: u64,
    refused: u64,
    x: u32,
    allowed_y: u32,
    allowed_h: u32,
    refused_y: u32,
    refused_h: u32,
}

/// Scales `n` of `max` onto `height` units; anything above zero shows.
fn scale(n: u64, max: u64, height: u32) -> u32 {
    if n == 0 || max == 0 {
        return 0;
    }
    let h = (u128::from(n) * u128::from(height) / u128::from(max)) as u32;
    h.clamp(1, height)
}

fn risk_bars(f: &Figures) -> Vec<RiskBar> {
    const BASE: u32 = 150;
    const HEIGHT: u32 = 125;
    let max = f.risk_bands.iter().copied().max().unwrap_or(0);
    RISK_BANDS
        .iter()
        .zip(f.risk_bands)
        .enumerate()
        .map(|(i, (&(lo, hi), count))| {
            let h = scale(count, max, HEIGHT);
            RiskBar {
                label: format!("{lo}-{hi}"),
                count,
                x: 18 + 60 * i as u32,
                y: BASE - h,
                h,
            }
        })
        .collect()
}

fn trend_bars(f: &Figures) -> Vec<TrendBar> {
    const BASE: u32 = 160;
    const HEIGHT: u32 = 140;
    let max = f
        .trend
        .iter()
        .map(|h| h.allowed + h.refused)
        .max()
        .unwrap_or(0);
    f.trend
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let allowed_h = scale(h.allowed, max, HEIGHT);
            let refused_h = scale(h.refused, max, HEIGHT).min(HEIGHT - allowed_h);
            let label = dashboard::when(h.start);
            TrendBar {
                // `HH:00`, from `YYYY-MM-DD HH:MM:SS UTC`.
                label: label.get(11..16).unwrap_or("-").to_owned(),
                allowed: h.allowed,
                refused: h.refused,
                x: 24 + 28 * i as u32,
                allowed_y: BASE - allowed_h,
                allowed_h,
                refused_y: BASE - allowed_h - refused_h,
                refused_h,
            }
        })
        .collect()
}

/// A Unix time however many references deep: askama passes a template's
/// arguments as written, and bindings in its loops are references.
trait Seconds {
    fn seconds(&self) -> i64;
}

impl Seconds for i64 {
    fn seconds(&self) -> i64 {
        *self
    }
}

impl<T: Seconds + ?Sized> Seconds for &T {
    fn seconds(&self) -> i64 {
        (**self).seconds()
    }
}

#[derive(Template)]
#[template(path = "ui/dashboard.html")]
struct DashboardPage<'a> {
    me: &'a str,
    csrf: &'a str,
    notice: Option<&'static str>,
    as_of: String,
    average_risk: String,
    policy: Option<&'a str>,
    f: &'a Figures,
    d: &'a Dashboard,
    risk_bars: Vec<RiskBar>,
    trend_bars: Vec<TrendBar>,
    trend_allowed: u64,
    trend_refused: u64,
}

impl DashboardPage<'_> {
    fn when(&self, unix: impl Seconds) -> String {
        dashboard::when(unix.seconds())
    }

    fn current_risk(&self, s: &SessionRecord) -> u8 {
        dashboard::current_risk(s)
    }

    fn device_status(&self, s: impl Borrow<DeviceStatus>) -> &'static str {
        match s.borrow() {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Revoked => "revoked",
        }
    }

    fn locked(&self, u: &UserRecord) -> bool {
        u.is_locked(self.d.now)
    }

    fn user_state(&self, u: &UserRecord) -> &'static str {
        if u.status == UserStatus::Suspended {
            "suspended"
        } else if self.locked(u) {
            "locked"
        } else {
            "active"
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    #[serde(default)]
    done: String,
}

/// What an action's redirect may announce: fixed texts only, so the query
/// string cannot put words on the page.
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "revoke" => "The session was revoked; the gateways were told.",
        "suspend" => "The user was suspended and their sessions ended.",
        "resume" => "The user was resumed.",
        "unlock" => "The user's lockout and failed-login count were cleared.",
        "lift" => "The block was lifted at every gateway.",
        "confirmed" => "Identity confirmed. Press the button again to do what you asked.",
        _ => return None,
    })
}

/// `GET /ui`: to `/ui/`.
#[utoipa::path(get, path = "/ui", tag = "dashboard", responses((status = 303, description = "To `/ui/`")))]
pub async fn root() -> Response {
    see_other("/ui/")
}

/// `GET /ui/ui.css`: the stylesheet.
#[utoipa::path(get, path = "/ui/ui.css", tag = "dashboard", responses((status = 200, description = "The dashboard's stylesheet", content_type = "text/css", body = String)))]
pub async fn stylesheet() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET /ui/favicon.svg`: the icon (the login pages use it too).
#[utoipa::path(get, path = "/ui/favicon.svg", tag = "dashboard", responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = String)))]
pub async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /ui/`: the dashboard.
#[utoipa::path(get, path = "/ui/", tag = "dashboard", params(("done" = Option<String>, Query, description = "The action just done, for its notice: revoke, suspend, resume, unlock, lift, or confirmed (a step-up before an action)")), responses((status = 200, description = "The dashboard (HTML)", content_type = "text/html", body = String), (status = 303, description = "No browser session: to the login page, back here after"), (status = 403, description = "A session of a user who is not an admin (HTML)", content_type = "text/html", body = String), (status = 503, description = "The store is unavailable (HTML)", content_type = "text/html", body = String)))]
pub async fn index(
    State(c): State<Arc<Controller>>,
    ui: UiAdmin,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let d = match dashboard::gather(&c).await {
        Ok(d) => d,
        Err(f) => return failure_page(&f),
    };
    let csrf = ui.csrf(&c);
    let f = &d.figures;
    let page = DashboardPage {
        me: &ui.session.user.name,
        csrf: &csrf,
        notice: notice(&q.done),
        as_of: dashboard::when(d.now),
        average_risk: f
            .average_risk
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
        policy: d.policy.as_deref(),
        f,
        d: &d,
        risk_bars: risk_bars(f),
        trend_bars: trend_bars(f),
        trend_allowed: f.trend.iter().map(|h| h.allowed).sum(),
        trend_refused: f.trend.iter().map(|h| h.refused).sum(),
    };
    html(StatusCode::OK, page.render())
}

/// A dashboard action's form (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ActionFormDoc {
    /// The session's form token, from the dashboard page.
    csrf: String,
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

fn done(action: &str) -> Response {
    let to = format!("/ui/?done={action}");
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `POST /ui/sessions/{id}/revoke`.
#[utoipa::path(post, path = "/ui/sessions/{id}/revoke", tag = "dashboard", params(("id" = String, Path)), request_body(content = ActionFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 303, description = "Revoked: to `/ui/?done=revoke`; no session: to the login page; no TOTP within `[browser] action_mfa_seconds`: to the step-up page, back to the dashboard after"), (status = 400, description = "Not a form"), (status = 403, description = "Not an admin, or the form's token or origin is not this session's (HTML)", content_type = "text/html", body = String), (status = 404, description = "No such session (HTML)", content_type = "text/html", body = String), (status = 415, description = "Not a form"), (status = 422, description = "Not a form"), (status = 503, description = "The store is unavailable (HTML)", content_type = "text/html", body = String)))]
pub async fn revoke_session(
    State(c): State<Arc<Controller>>,
    ui: UiAdmin,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let resource = format!("session:{id}");
    if let Err(r) = ui
        .check_form(&c, &headers, &uri, &form.csrf, &resource)
        .await
    {
        return r;
    }
    match super::admin::revoke_session_as(&c, &ui.admin, &id).await {
        Ok(_) => done("revoke"),
        Err(f) => failure_page(&f),
    }
}

/// `POST /ui/users/{name}/{action}`: suspend, resume, unlock, reset-totp.
#[utoipa::path(post, path = "/ui/users/{name}/{action}", tag = "dashboard", params(("name" = String, Path), ("action" = String, Path, description = "suspend, resume, unlock or reset-totp")), request_body(content = ActionFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "reset-totp: the new secret and its QR code, shown once (HTML)", content_type = "text/html", body = String), (status = 303, description = "Done: to `/ui/?done=<action>`; no session: to the login page; no TOTP within `[browser] action_mfa_seconds`: to the step-up page, back to the dashboard after"), (status = 400, description = "Not a form"), (status = 403, description = "Not an admin, or the form's token or origin is not this session's (HTML)", content_type = "text/html", body = String), (status = 404, description = "No such user or action (HTML)", content_type = "text/html", body = String), (status = 415, description = "Not a form"), (status = 422, description = "Not a form"), (status = 503, description = "The store is unavailable (HTML)", content_type = "text/html", body = String)))]
pub async fn user_action(
    State(c): State<Arc<Controller>>,
    ui: UiAdmin,
    headers: HeaderMap,
    uri: Uri,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let resource = format!("user:{name}");
    if let Err(r) = ui
        .check_form(&c, &headers, &uri, &form.csrf, &resource)
        .await
    {
        return r;
    }
    if !["suspend", "resume", "unlock", "reset-totp"].contains(&action.as_str()) {
        return failure_page(&Failure::not_found("action"));
    }
    let user = match c.store.user_by_name(&name).await {
        Ok(Some(u)) => u,
        Ok(None) => return failure_page(&Failure::not_found("user")),
        Err(e) => return failure_page(&e.into()),
    };
    match super::admin::act_on_user(&c, &ui.admin, &user, &action).await {
        Ok(Some(p)) => {
            // The QR code is our own SVG (no script, no style); the XML
            // prologue means nothing inside HTML.
            let svg = p
                .qr_svg
                .find("<svg")
                .map_or(p.qr_svg.as_str(), |at| &p.qr_svg[at..]);
            html(
                StatusCode::OK,
                TotpPage {
                    user: &user.name,
                    secret: &p.secret,
                    uri: &p.uri,
                    qr_svg: svg,
                }
                .render(),
            )
        }
        Ok(None) => done(&action),
        Err(f) => failure_page(&f),
    }
}

#[derive(Template)]
#[template(path = "ui/totp.html")]
struct TotpPage<'a> {
    user: &'a str,
    secret: &'a str,
    uri: &'a str,
    qr_svg: &'a str,
}

/// `POST /ui/blocks/{address}/lift`.
#[utoipa::path(post, path = "/ui/blocks/{address}/lift", tag = "dashboard", params(("address" = String, Path)), request_body(content = ActionFormDoc, content_type = "application/x-www-form-urlencoded"), responses((status = 303, description = "Lifted: to `/ui/?done=lift`; no session: to the login page; no TOTP within `[browser] action_mfa_seconds`: to the step-up page, back to the dashboard after"), (status = 400, description = "Not a form, or not an IP address (HTML)", content_type = "text/html", body = String), (status = 403, description = "Not an admin, or the form's token or origin is not this session's (HTML)", content_type = "text/html", body = String), (status = 404, description = "No such block (HTML)", content_type = "text/html", body = String), (status = 415, description = "Not a form"), (status = 422, description = "Not a form"), (status = 503, description = "The store is unavailable (HTML)", content_type = "text/html", body = String)))]
pub async fn lift_block(
    State(c): State<Arc<Controller>>,
    ui: UiAdmin,
    headers: HeaderMap,
    uri: Uri,
    Path(address): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let resource = format!("source:{address}");
    if let Err(r) = ui
        .check_form(&c, &headers, &uri, &form.csrf, &resource)
        .await
    {
        return r;
    }
    match super::blocks::lift_as(&c, &ui.admin, &address).await {
        Ok(_) => done("lift"),
        Err(f) => failure_page(&f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::{HourCount, Ratio};

    fn figures() -> Figures {
        let mut trend: Vec<HourCount> = (0..24)
            .map(|i| HourCount {
                start: 1_800_000_000 / 3600 * 3600 + i * 3600,
                ..HourCount::default()
            })
            .collect();
        trend[5].allowed = 100;
        trend[5].refused = 100;
        trend[6].allowed = 1;
        Figures {
            active_sessions: 3,
            auth: Ratio::default(),
            average_risk: None,
            compliant: Ratio::default(),
            risk_bands: [4, 0, 1, 0, 2],
            trend,
        }
    }

    #[test]
    fn bars_scale_to_the_tallest_and_small_counts_still_show() {
        let f = figures();
        let r = risk_bars(&f);
        assert_eq!(r[0].h, 125, "the tallest fills the chart");
        assert_eq!(r[1].h, 0);
        assert_eq!(r[2].h, 31);
        assert_eq!(r[0].label, "0-20");
        assert_eq!(r[4].label, "81-100");
        let t = trend_bars(&f);
        assert_eq!(t.len(), 24);
        assert_eq!((t[5].allowed_h, t[5].refused_h), (70, 70));
        assert_eq!(t[5].refused_y + t[5].refused_h, t[5].allowed_y, "stacked");
        assert_eq!(t[6].allowed_h, 1, "one request is visible");
        assert!(
            t.iter()
                .all(|b| b.label.len() == 5 && b.label.ends_with(":00"))
        );
    }

    #[test]
    fn notices_are_fixed_texts() {
        assert!(notice("revoke").is_some());
        assert_eq!(notice("<script>"), None);
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let page = MessagePage {
            title: "t",
            message: "<script>alert(1)</script>",
            link: None,
        }
        .render()
        .expect("render");
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
            "{page}"
        );
    }
}
