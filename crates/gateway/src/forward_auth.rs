//! `GET /auth/verify`: forward authentication for services that an
//! existing reverse proxy fronts (nginx `auth_request`, Traefik
//! `forwardAuth`). The proxy asks, the gateway decides with the same
//! token checks ([`crate::authn::verify`]) and the same decision point
//! ([`crate::policy::GatewayPolicy::decide`]) as a proxied request, and
//! answers 200 (with the identity headers), 401 (no valid session, or a
//! step-up) or 403 (denied).
//!
//! Why the proxy must pass the client certificate: session tokens are
//! bound to the device certificate (`cnf.x5t#S256`), and a bearer token
//! without that proof of possession would be a stolen-token replay away
//! from access. The proxy terminates the user's mTLS (`ssl_verify_client
//! on` with the Umbra CA) and forwards the certificate in `X-Client-Cert`
//! (nginx `$ssl_client_escaped_cert`) or `X-Forwarded-Tls-Client-Cert`
//! (Traefik `passTLSClientCert`); the gateway checks it again (chain,
//! validity, revocation) and binds the token to it, exactly as on its own
//! listener.
//!
//! Browsers: a request with no bearer token but the controller's session
//! cookie (`__Host-umbra_session`, from its login page) is decided as a
//! browser session ([`crate::browser`]): no device certificate is asked
//! for. A 401 carries `Location`, the configured login page with the
//! user's URL as `rd` (the step-up page for a browser's step-up).
//!
//! Fail closed on the proxy's word: requests from addresses outside
//! `trusted_proxies` are refused outright (403), whatever they carry, and a
//! trusted proxy that leaves out the original method, URI or client
//! address gets 400 rather than a decision about the verify request itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use umbra_pki::PeerCertificate;
use umbra_pki::tls::ClientCertPolicy;
use umbra_proto::control::GatewayAuditRecord;
use umbra_proto::{ApiError, ErrorBody, ErrorCode};

use crate::forward_auth_config::ForwardAuthConfig;
use crate::metrics::Decision;
use crate::policy::{Ask, STEP_UP_CHALLENGE, STEP_UP_MESSAGE, explain};
use crate::{Gateway, path};

/// The path nginx and Traefik are pointed at.
pub const VERIFY_PATH: &str = "/auth/verify";
/// The header carrying the client certificate the proxy verified
/// (URL-escaped PEM, as nginx's `$ssl_client_escaped_cert`).
pub const CLIENT_CERT_HEADER: &str = "x-client-cert";
/// Traefik's `passTLSClientCert` header (with `pem = true`).
pub const TRAEFIK_CERT_HEADER: &str = "x-forwarded-tls-client-cert";
/// A certificate header longer than this is refused before decoding.
const MAX_CERT_HEADER: usize = 16 * 1024;
/// The challenge with a 401 for a missing or invalid session.
const LOGIN_CHALLENGE: &str = "Bearer realm=\"umbra\"";

type Reply = Response<Full<Bytes>>;

/// What the verify listener needs besides the gateway.
pub struct ForwardAuth {
    gw: Arc<Gateway>,
    config: ForwardAuthConfig,
    /// Chain and validity checks for forwarded certificates (Umbra CA).
    certs: Arc<dyn ClientCertVerifier>,
    admission: crate::authn::DeviceAdmission,
}

impl ForwardAuth {
    pub fn new(gw: Arc<Gateway>, config: ForwardAuthConfig) -> Result<Self, crate::GatewayError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(gw.identity.ca.clone())
            .map_err(|e| crate::GatewayError::Identity(format!("CA certificate: {e}")))?;
        let certs = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            umbra_pki::tls::provider(),
        )
        .build()
        .map_err(|e| crate::GatewayError::Identity(format!("certificate verifier: {e}")))?;
        let admission = crate::authn::DeviceAdmission {
            view: gw.view.clone(),
            trust_domain: gw.trust_domain.clone(),
            refused: Box::new(|_| {}),
        };
        Ok(Self {
            gw,
            config,
            certs,
            admission,
        })
    }
}

/// Serves the verify listener until `shutdown`.
pub async fn serve(fa: Arc<ForwardAuth>, listener: TcpListener, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "forward-auth listening (plain HTTP, trusted proxies only)");
    }
    let limits = fa.gw.config.limits.clone();
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "forward-auth accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let fa = fa.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let fa = fa.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&fa, addr, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes)
                .serve_connection(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "forward-auth connection ended with an error");
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

/// One verdict: the status the proxy acts on, and what the audit says.
struct Verdict<'a> {
    code: Option<ErrorCode>,
    reason: String,
    headers: Vec<(&'static str, HeaderValue)>,
    /// The service decided on, once the original request is routed.
    service: Option<&'a str>,
    /// A browser's step-up: sent to the step-up page, not the login.
    browser_step_up: bool,
    /// The user's URL, for the login page to return to.
    return_url: Option<String>,
}

impl<'a> Verdict<'a> {
    fn refuse(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
            headers: Vec::new(),
            service: None,
            browser_step_up: false,
            return_url: None,
        }
    }

    fn about(mut self, service: &'a str) -> Self {
        self.service = Some(service);
        self
    }
}

/// What the proxy says about the original request.
struct Original {
    method: http::Method,
    path: String,
    host: String,
    client: IpAddr,
    /// The user's URL as the proxy named it (scheme, host, URI).
    url: String,
}

async fn handle(fa: &ForwardAuth, addr: SocketAddr, req: Request<Incoming>) -> Reply {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut record = GatewayAuditRecord {
        ts: fa.gw.now(),
        actor: "-".into(),
        source_ip: addr.ip().to_string(),
        action: "gateway.verify".into(),
        resource: format!(
            "forward-auth {}",
            req.uri().path().chars().take(64).collect::<String>()
        ),
        outcome: "deny".into(),
        reason: String::new(),
        request_id: request_id.clone(),
        count: 1,
        transfer: None,
    };
    let verdict = decide(fa, addr, &req, &mut record);
    let counters = verdict
        .service
        .map_or(fa.gw.metrics.unrouted(), |s| fa.gw.metrics.service(s));
    counters.count(match verdict.code {
        None => Decision::Allow,
        Some(ErrorCode::StepUpRequired) => Decision::StepUp,
        Some(_) => Decision::Deny,
    });
    record.reason = verdict.reason.clone();
    match verdict.code {
        None => {
            record.outcome = "allow".into();
            fa.gw.audit.record(record);
        }
        // The controller no longer takes this gateway's records.
        Some(_) if fa.gw.revoked.load(std::sync::atomic::Ordering::SeqCst) => {
            fa.gw.audit.record(record);
        }
        Some(_) => fa.gw.audit.record_durable(record).await,
    }
    reply(fa, verdict, &request_id)
}

fn reply(fa: &ForwardAuth, verdict: Verdict, request_id: &str) -> Reply {
    let (status, body) = match verdict.code {
        None => (StatusCode::OK, Bytes::new()),
        Some(code) => {
            let message = match code {
                ErrorCode::StepUpRequired => STEP_UP_MESSAGE,
                ErrorCode::AuthenticationFailed => "authentication required",
                ErrorCode::Forbidden => "access denied",
                ErrorCode::InvalidRequest => "the proxy did not forward the original request",
                ErrorCode::Unavailable => "service unavailable, retry later",
                _ => "refused",
            };
            let body = ErrorBody {
                error: ApiError {
                    code,
                    message: message.to_owned(),
                    request_id: Some(request_id.to_owned()),
                },
            };
            (
                StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN),
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            )
        }
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if status != StatusCode::OK {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if verdict.code == Some(ErrorCode::AuthenticationFailed) {
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(LOGIN_CHALLENGE),
        );
    }
    // Where to log in (or step up), with the user's URL to come back to;
    // the login page checks that URL against its allowed hosts.
    let page = match verdict.code {
        Some(ErrorCode::AuthenticationFailed) => fa.config.login_url.as_ref(),
        Some(ErrorCode::StepUpRequired) if verdict.browser_step_up => {
            fa.config.step_up_url.as_ref()
        }
        _ => None,
    };
    if let Some(page) = page.and_then(|p| p.to_str().ok()) {
        let location = match &verdict.return_url {
            Some(rd) => crate::browser::with_return(page, rd),
            None => page.to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(http::header::LOCATION, v);
        }
    }
    for (name, value) in verdict.headers {
        h.insert(name, value);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    r
}

fn decide<'a, B>(
    fa: &'a ForwardAuth,
    addr: SocketAddr,
    req: &Request<B>,
    record: &mut GatewayAuditRecord,
) -> Verdict<'a> {
    let mut return_url = None;
    let mut v = decide_inner(fa, addr, req, record, &mut return_url);
    v.return_url = return_url;
    v
}

fn decide_inner<'a, B>(
    fa: &'a ForwardAuth,
    addr: SocketAddr,
    req: &Request<B>,
    record: &mut GatewayAuditRecord,
    return_url: &mut Option<String>,
) -> Verdict<'a> {
    if !fa.config.trusts(addr.ip()) {
        return Verdict::refuse(
            ErrorCode::Forbidden,
            format!(
                "untrusted_proxy: {} is not in forward_auth.trusted_proxies",
                addr.ip()
            ),
        );
    }
    if req.uri().path() != VERIFY_PATH {
        return Verdict::refuse(ErrorCode::NotFound, "not_found: not the verify path");
    }
    let gw = &fa.gw;
    if gw.revoked.load(std::sync::atomic::Ordering::SeqCst) {
        return Verdict::refuse(ErrorCode::Unavailable, "gateway_revoked");
    }
    if !gw.view.is_fresh() {
        return Verdict::refuse(ErrorCode::Unavailable, "gateway_state_stale");
    }
    let original = match original(req.headers()) {
        Ok(o) => o,
        Err(why) => return Verdict::refuse(ErrorCode::InvalidRequest, why),
    };
    record.source_ip = original.client.to_string();
    record.resource = format!("{}{} {}", original.host, original.path, original.method);
    *return_url = Some(original.url.clone());
    let now = gw.now();
    if bearer(req.headers()).is_none()
        && let Some(cookie) = crate::browser::session_cookie(req.headers())
    {
        return decide_browser(fa, &original, cookie, record, now);
    }
    let peer = match client_certificate(fa, req.headers(), now) {
        Ok(p) => p,
        Err(why) => return Verdict::refuse(ErrorCode::AuthenticationFailed, why),
    };
    record.actor = format!("device:{}", peer.device_id);
    let Some(token) = bearer(req.headers()) else {
        return Verdict::refuse(ErrorCode::AuthenticationFailed, "no_session_token");
    };
    let issuer = gw
        .issuer
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let view = gw.view.read();
    let claims = match crate::authn::verify(
        &view,
        issuer.as_deref().unwrap_or_default(),
        token,
        &peer,
        now,
    ) {
        Ok(c) => c,
        Err(reason) => return Verdict::refuse(ErrorCode::AuthenticationFailed, reason),
    };
    record.actor = format!("user:{}", claims.sub);
    let Some(route) = crate::proxy::route(&gw.config.routes, &original.host, &original.path) else {
        return Verdict::refuse(
            ErrorCode::Forbidden,
            format!("no_route: {}{}", original.host, original.path),
        );
    };
    record.resource = format!(
        "service:{} {} {}",
        route.service, original.method, original.path
    );
    let decision = view.decide(&Ask {
        claims: &claims,
        spiffe_id: &peer.spiffe_id,
        service: &route.service,
        method: Some(original.method.as_str()),
        path: Some(&original.path),
        port: None,
        source: original.client,
        now,
    });
    drop(view);
    let explanation = explain(&decision);
    if decision.needs_step_up() {
        let mut v = Verdict::refuse(
            ErrorCode::StepUpRequired,
            format!("step_up_required: {explanation}"),
        );
        v.headers.push((
            "www-authenticate",
            HeaderValue::from_static(STEP_UP_CHALLENGE),
        ));
        return v.about(&route.service);
    }
    if !decision.allowed() {
        return Verdict::refuse(ErrorCode::Forbidden, explanation).about(&route.service);
    }
    let mut headers = Vec::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.push((name, v));
        }
    };
    set("x-auth-user", &claims.sub);
    set("x-auth-groups", &claims.groups.join(","));
    set("x-risk-score", &decision.risk.score.to_string());
    set("x-device-id", &claims.device);
    set("x-session-id", &claims.sid);
    set("x-umbra-service", &route.service);
    match gw.assertions.assert(&claims, &route.service, now) {
        Ok(a) => set("x-umbra-jwt-assertion", &a),
        Err(e) => {
            tracing::error!(error = %e, "assertion signing failed");
            return Verdict::refuse(ErrorCode::Internal, "assertion_signing_failed")
                .about(&route.service);
        }
    }
    Verdict {
        code: None,
        reason: explanation,
        headers,
        service: Some(&route.service),
        browser_step_up: false,
        return_url: None,
    }
}

/// A browser session cookie from the controller's login page: no device
/// certificate, the same policy, with no device in its input.
fn decide_browser<'a>(
    fa: &'a ForwardAuth,
    original: &Original,
    cookie: &str,
    record: &mut GatewayAuditRecord,
    now: i64,
) -> Verdict<'a> {
    let gw = &fa.gw;
    let issuer = gw
        .issuer
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let view = gw.view.read();
    let claims = match crate::browser::verify(
        &view,
        issuer.as_deref().unwrap_or_default(),
        gw.trust_domain.as_str(),
        cookie,
        now,
    ) {
        Ok(c) => c,
        Err(reason) => {
            return Verdict::refuse(
                ErrorCode::AuthenticationFailed,
                format!("browser session: {reason}"),
            );
        }
    };
    record.actor = format!("user:{}", claims.sub);
    let Some(route) = crate::proxy::route(&gw.config.routes, &original.host, &original.path) else {
        return Verdict::refuse(
            ErrorCode::Forbidden,
            format!("no_route: {}{}", original.host, original.path),
        );
    };
    record.resource = format!(
        "service:{} {} {} (browser)",
        route.service, original.method, original.path
    );
    let decision = view.policy.decide_browser(
        &claims,
        &crate::policy::BrowserAsk {
            service: &route.service,
            method: original.method.as_str(),
            path: &original.path,
            source: original.client,
            now,
        },
        view.verdicts.get(&claims.sid),
    );
    drop(view);
    let explanation = explain(&decision);
    if decision.needs_step_up() {
        let mut v = Verdict::refuse(
            ErrorCode::StepUpRequired,
            format!("step_up_required: {explanation}"),
        );
        v.browser_step_up = true;
        v.headers.push((
            "www-authenticate",
            HeaderValue::from_static(STEP_UP_CHALLENGE),
        ));
        return v;
    }
    if !decision.allowed() {
        return Verdict::refuse(ErrorCode::Forbidden, explanation);
    }
    let mut headers = Vec::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.push((name, v));
        }
    };
    set("x-auth-user", &claims.sub);
    set("x-auth-groups", &claims.groups.join(","));
    set("x-risk-score", &decision.risk.score.to_string());
    set("x-session-id", &claims.sid);
    set("x-umbra-service", &route.service);
    let subject = crate::browser::assertion_subject(&claims);
    match gw.assertions.assert(&subject, &route.service, now) {
        Ok(a) => set("x-umbra-jwt-assertion", &a),
        Err(e) => {
            tracing::error!(error = %e, "assertion signing failed");
            return Verdict::refuse(ErrorCode::Internal, "assertion_signing_failed");
        }
    }
    Verdict {
        code: None,
        reason: format!("browser session; {explanation}"),
        headers,
        service: Some(&route.service),
        browser_step_up: false,
        return_url: None,
    }
}

/// Exactly one value of the first of `names` present; two values (a
/// client's copy next to the proxy's) are refused, not picked from.
fn single<'h>(h: &'h HeaderMap, names: &[&str]) -> Result<Option<&'h str>, String> {
    for name in names {
        let mut all = h.get_all(*name).iter();
        if let Some(v) = all.next() {
            if all.next().is_some() {
                return Err(format!("original_request_ambiguous: {name} sent twice"));
            }
            return v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| format!("original_request_invalid: {name} is not text"));
        }
    }
    Ok(None)
}

/// The one value of whichever spelling of a header was sent. Both nginx's
/// and Traefik's spellings at once mean a client added one the proxy did
/// not replace (Traefik passes `X-Original-URI` through, nginx
/// `X-Forwarded-Uri` unless told otherwise): refused, since picking one
/// would let the client choose what is decided.
fn exclusive<'h>(h: &'h HeaderMap, names: &[&str]) -> Result<Option<&'h str>, String> {
    if names.iter().filter(|n| h.contains_key(**n)).count() > 1 {
        return Err(format!(
            "original_request_ambiguous: more than one of {}",
            names.join(", ")
        ));
    }
    single(h, names)
}

fn original(h: &HeaderMap) -> Result<Original, String> {
    let method = exclusive(h, &["x-original-method", "x-forwarded-method"])?
        .ok_or("original_request_missing: no X-Original-Method or X-Forwarded-Method")?;
    let method = http::Method::from_bytes(method.as_bytes())
        .map_err(|_| "original_request_invalid: method".to_owned())?;
    let uri = exclusive(h, &["x-original-uri", "x-forwarded-uri"])?
        .ok_or("original_request_missing: no X-Original-URI or X-Forwarded-Uri")?;
    // Origin form only: an absolute URI would name a host of its own.
    if !uri.starts_with('/') {
        return Err("original_request_invalid: the URI must start with /".into());
    }
    let raw_path = uri.split(['?', '#']).next().unwrap_or_default();
    let path =
        path::normalize(raw_path).map_err(|e| format!("original_request_invalid: path: {e}"))?;
    let host = single(h, &["x-forwarded-host"])?
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .ok_or("original_request_missing: no valid X-Forwarded-Host")?;
    let client = match single(h, &["x-real-ip"])? {
        Some(ip) => ip.parse::<IpAddr>().ok(),
        // The last entry is the one the trusted proxy added itself.
        None => single(h, &["x-forwarded-for"])?
            .and_then(|l| l.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok()),
    }
    .ok_or("original_request_missing: no valid X-Real-IP or X-Forwarded-For")?;
    let proto = match single(h, &["x-forwarded-proto"])? {
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ => "https",
    };
    let authority = single(h, &["x-forwarded-host"])?.unwrap_or_default();
    Ok(Original {
        method,
        path,
        host,
        client,
        url: format!("{proto}://{authority}{uri}"),
    })
}

/// The device certificate the proxy verified, checked again here.
fn client_certificate(
    fa: &ForwardAuth,
    h: &HeaderMap,
    now: i64,
) -> Result<PeerCertificate, String> {
    let raw = exclusive(h, &[CLIENT_CERT_HEADER, TRAEFIK_CERT_HEADER])?
        .filter(|v| !v.is_empty())
        .ok_or("no_client_certificate: the proxy sent no X-Client-Cert")?;
    let der = parse_certificate(raw)?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or_default(),
    ));
    fa.certs
        .verify_client_cert(&der, &[], at)
        .map_err(|e| format!("client_certificate_refused: {e}"))?;
    fa.admission
        .admit(&der)
        .map_err(|e| format!("client_certificate_refused: {e:?}"))?;
    PeerCertificate::parse(&der, &fa.gw.trust_domain)
        .map_err(|e| format!("client_certificate_refused: {e}"))
}

/// URL-escaped PEM (nginx), or URL-escaped base64 DER without the PEM
/// lines, leaf first and comma-separated from its chain (Traefik).
fn parse_certificate(raw: &str) -> Result<CertificateDer<'static>, String> {
    if raw.len() > MAX_CERT_HEADER {
        return Err("client_certificate_malformed: too long".into());
    }
    let decoded = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
    if decoded.starts_with(b"-----BEGIN") {
        return CertificateDer::from_pem_slice(&decoded)
            .map_err(|e| format!("client_certificate_malformed: {e}"));
    }
    let leaf = decoded.split(|b| *b == b',').next().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(leaf)
        .map(CertificateDer::from)
        .map_err(|e| format!("client_certificate_malformed: {e}"))
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const BASE: &[(&str, &str)] = &[
        ("x-original-method", "GET"),
        ("x-original-uri", "/v1/charges/../charges/x?y=1"),
        ("x-forwarded-host", "Billing:8443"),
        ("x-real-ip", "192.0.2.7"),
    ];

    #[test]
    fn the_original_request_is_read_and_normalized() {
        let o = original(&headers(BASE)).expect("original");
        assert_eq!(o.method, http::Method::GET);
        assert_eq!(o.path, "/v1/charges/x");
        assert_eq!(o.host, "billing");
        assert_eq!(o.client, "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn traefik_headers_work_too() {
        let o = original(&headers(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/a"),
            ("x-forwarded-host", "demo"),
            ("x-forwarded-for", "203.0.113.9, 192.0.2.1"),
        ]))
        .expect("original");
        assert_eq!(o.method, http::Method::POST);
        assert_eq!(o.client, "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn certificates_are_read_as_nginx_and_traefik_forward_them() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let escape = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let nginx = escape(&cert.pem());
        assert_eq!(parse_certificate(&nginx).expect("pem"), *cert.der());
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let traefik = escape(&format!("{b64},{b64}"));
        assert_eq!(parse_certificate(&traefik).expect("der"), *cert.der());
        assert!(parse_certificate("%%%").is_err());
        assert!(parse_certificate("-----BEGIN%20CERTIFICATE-----").is_err());
        assert!(parse_certificate(&"A".repeat(MAX_CERT_HEADER + 1)).is_err());
    }

    #[test]
    fn missing_duplicated_or_odd_headers_are_refused() {
        for drop in ["x-original-method", "x-original-uri", "x-real-ip"] {
            let pairs: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert!(original(&headers(&pairs)).is_err(), "without {drop}");
        }
        let mut twice = BASE.to_vec();
        twice.push(("x-original-uri", "/"));
        assert!(original(&headers(&twice)).is_err());
        for other in [("x-forwarded-uri", "/"), ("x-forwarded-method", "GET")] {
            let mut both = BASE.to_vec();
            both.push(other);
            assert!(original(&headers(&both)).is_err(), "{other:?}");
        }
        // Host is the verify request's own (the proxy's upstream name).
        let mut host_only = BASE.to_vec();
        host_only[2] = ("host", "billing");
        assert!(original(&headers(&host_only)).is_err());
        let mut absolute = BASE.to_vec();
        absolute[1] = ("x-original-uri", "http://evil/");
        assert!(original(&headers(&absolute)).is_err());
        let mut escape = BASE.to_vec();
        escape[1] = ("x-original-uri", "/../../etc");
        assert!(original(&headers(&escape)).is_err());
    }
}
