//! The gateways' side of the API: enrollment (public; a one-time token
//! authenticates), then, over mTLS with the gateway's own certificate,
//! registration, the control channel and audit uploads.
//!
//! A gateway is authenticated by its certificate's SPIFFE ID *and* serial:
//! the store records the one certificate each gateway enrolled with, so a
//! re-enrolled or revoked gateway's old certificate opens nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use umbra_pki::GatewayCertificate;
use umbra_proto::ErrorCode;
use umbra_proto::control::{
    AuditBatch, ControlFrame, GatewayEnrollRequest, GatewayEnrollResponse, GatewayRegisterRequest,
    GatewayRegisterResponse, GatewayRenewRequest, Grant, HEARTBEAT_SECS, RevocationLists, Snapshot,
};
use umbra_store::{
    AuditEvent, EnrollOutcome, GatewayRecord, GatewayRegistration, GatewayStatus, Outcome,
    RouteRecord,
};

use super::{ApiJson, ApiQuery};
use crate::api::openapi::ApiErrors;
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::{ApiResult, Failure};
use crate::events::Pushed;
use crate::{Controller, secrets};

type C = State<Arc<Controller>>;

/// Gateway certificates live longer than device ones (a gateway is a
/// server an operator tends), but not forever.
pub const GATEWAY_CERT_LIFETIME_SECS: i64 = 30 * 86400;
const MAX_ROUTES: usize = 256;
const MAX_AUDIT_BATCH: usize = 1000;

#[utoipa::path(post, path = "/api/v1/gateways/enroll", tag = "gateways", request_body = GatewayEnrollRequest, responses((status = 200, description = "The gateway certificate", body = GatewayEnrollResponse), ApiErrors))]
pub async fn enroll(
    State(c): C,
    ctx: RequestContext,
    ApiJson(req): ApiJson<GatewayEnrollRequest>,
) -> ApiResult<Json<GatewayEnrollResponse>> {
    let refuse = |reason: &'static str, resource: String| {
        let c = c.clone();
        let ctx = ctx.clone();
        async move {
            c.audit_denial(&ctx, "gateway.enroll", &resource, reason)
                .await;
            Failure::new(ErrorCode::EnrollmentRefused, "enrollment refused")
        }
    };
    if let Err(retry) = c.admit_attempt(ctx.ip).await {
        c.audit_denial(&ctx, "gateway.enroll", "-", "rate_limited")
            .await;
        let mut f = Failure::new(ErrorCode::RateLimited, "too many attempts");
        f.retry_after = Some(retry);
        return Err(f);
    }
    let Some(parts) = secrets::split(secrets::GATEWAY_PREFIX, &req.token) else {
        return Err(refuse("token_malformed", "-".into()).await);
    };
    let pin = secrets::pin_text(&c.ca.pin());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        parts.middle.as_bytes(),
        pin.as_bytes(),
    )) {
        return Err(refuse("token_for_another_ca", "-".into()).await);
    }
    let hash = secrets::hash_secret(parts.secret);
    let now = c.now();
    let Some(gateway) = c.store.gateway_by_token(&hash).await? else {
        return Err(refuse("token_unknown", "-".into()).await);
    };
    let resource = format!("gateway:{}", gateway.name);
    if gateway.token_expires_at.is_none_or(|e| e <= now) {
        return Err(refuse("token_expired", resource).await);
    }
    let issued = match c.ca.sign_gateway_csr(
        &req.csr,
        &gateway.name,
        &gateway.sans,
        now,
        GATEWAY_CERT_LIFETIME_SECS,
    ) {
        Ok(issued) => issued,
        Err(e) => {
            let reason = format!("invalid_csr: {e}");
            c.audit_denial(&ctx, "gateway.enroll", &resource, &reason)
                .await;
            return Err(Failure::new(ErrorCode::InvalidCsr, e.to_string()));
        }
    };
    match c
        .store
        .enroll_gateway(&hash, now, &issued.serial, issued.not_after)
        .await?
    {
        EnrollOutcome::Enrolled => {}
        EnrollOutcome::TokenExpired => return Err(refuse("token_expired", resource).await),
        EnrollOutcome::TokenUsed | EnrollOutcome::TokenUnknown => {
            return Err(refuse("token_used", resource).await);
        }
    }
    c.audit_event(
        &resource,
        Some(ctx.ip),
        "gateway.enroll",
        &resource,
        Outcome::Allow,
        &format!("serial {}", issued.serial),
        &ctx.request_id,
    )
    .await?;
    Ok(Json(GatewayEnrollResponse {
        name: gateway.name,
        certificate: issued.pem,
        ca_certificate: c.ca.cert_pem().to_owned(),
        expires_at: rfc3339(issued.not_after),
    }))
}

/// An authenticated, active gateway.
pub struct GatewayPeer {
    pub record: GatewayRecord,
    pub ctx: RequestContext,
}

impl FromRequestParts<Arc<Controller>> for GatewayPeer {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Controller>,
    ) -> Result<Self, Self::Rejection> {
        let ctx = RequestContext::from_request_parts(parts, c).await?;
        match check_gateway(c, &ctx).await {
            Ok(record) => Ok(Self { record, ctx }),
            Err(reason) => {
                let resource = format!("{} {}", parts.method, parts.uri.path());
                c.audit_denial(&ctx, "gateway.authenticate", &resource, &reason)
                    .await;
                Err(Failure::auth())
            }
        }
    }
}

pub(super) async fn check_gateway(
    c: &Controller,
    ctx: &RequestContext,
) -> Result<GatewayRecord, String> {
    let der = ctx.cert.as_ref().ok_or("no_client_certificate")?;
    let peer = GatewayCertificate::parse(der, c.ca.trust_domain())
        .map_err(|e| format!("certificate_not_a_gateway: {e}"))?;
    let record = c
        .store
        .gateway(&peer.name)
        .await
        .map_err(|_| "store_unavailable")?
        .ok_or("gateway_unknown")?;
    if record.status != GatewayStatus::Active {
        return Err(format!("gateway_{}", record.status.as_str()));
    }
    if record.cert_serial.as_deref() != Some(peer.serial.as_str()) {
        return Err("gateway_certificate_superseded".into());
    }
    Ok(record)
}

#[utoipa::path(post, path = "/api/v1/gateway/register", tag = "gateways", request_body = GatewayRegisterRequest, security(("mtls" = [])), responses((status = 200, description = "Registered", body = GatewayRegisterResponse), ApiErrors))]
pub async fn register(
    State(c): C,
    gw: GatewayPeer,
    ApiJson(req): ApiJson<GatewayRegisterRequest>,
) -> ApiResult<Json<GatewayRegisterResponse>> {
    if req.routes.len() > MAX_ROUTES {
        return Err(Failure::invalid(format!("at most {MAX_ROUTES} routes")));
    }
    let url_ok = req.url.starts_with("https://") && req.url.len() <= 2048;
    if !url_ok {
        return Err(Failure::invalid("url: must be an https:// URL"));
    }
    for r in &req.routes {
        if !super::valid_name(&r.service) || r.host.is_empty() || r.host.len() > 255 {
            return Err(Failure::invalid(format!(
                "route for {:?}: invalid service name or host",
                r.service
            )));
        }
    }
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(req.assertion_jwk)
        .map_err(|e| Failure::invalid(format!("assertion_jwk: {e}")))?;
    let expected = expected_kid(&gw.record.name, &jwk)
        .ok_or_else(|| Failure::invalid("assertion_jwk: a P-256 public key (x, y) is required"))?;
    if jwk.common.key_id.as_deref() != Some(expected.as_str()) {
        return Err(Failure::invalid(format!(
            "assertion_jwk: the kid must be {expected} (gateway name and key hash)"
        )));
    }
    let reg = GatewayRegistration {
        url: req.url.clone(),
        routes: req
            .routes
            .iter()
            .map(|r| RouteRecord {
                service: r.service.clone(),
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                protocol: r.protocol.as_str().to_owned(),
            })
            .collect(),
        assertion_jwk: serde_json::to_string(&jwk).map_err(|_| Failure::internal())?,
        spa_port: req.spa_port,
        now: c.now(),
    };
    let name = gw.record.name.clone();
    if !c.store.register_gateway(&name, &reg).await? {
        return Err(Failure::auth());
    }
    c.audit_event(
        &format!("gateway:{name}"),
        Some(gw.ctx.ip),
        "gateway.register",
        &format!("gateway:{name}"),
        Outcome::Allow,
        &format!("url {} routes {}", req.url, req.routes.len()),
        &gw.ctx.request_id,
    )
    .await?;
    Ok(Json(GatewayRegisterResponse {
        name,
        trust_domain: c.ca.trust_domain().to_string(),
        token_issuer: c.signer.issuer().to_owned(),
    }))
}

/// A new certificate for the gateway's current one (same name and SANs),
/// over mTLS with the current certificate. The old certificate stops
/// opening anything at the controller at once.
#[utoipa::path(post, path = "/api/v1/gateway/renew", tag = "gateways", request_body = GatewayRenewRequest, security(("mtls" = [])), responses((status = 200, description = "A renewed gateway certificate", body = GatewayEnrollResponse), ApiErrors))]
pub async fn renew(
    State(c): C,
    gw: GatewayPeer,
    ApiJson(req): ApiJson<GatewayRenewRequest>,
) -> ApiResult<Json<GatewayEnrollResponse>> {
    let name = gw.record.name.clone();
    let resource = format!("gateway:{name}");
    let now = c.now();
    let issued = match c.ca.sign_gateway_csr(
        &req.csr,
        &name,
        &gw.record.sans,
        now,
        GATEWAY_CERT_LIFETIME_SECS,
    ) {
        Ok(issued) => issued,
        Err(e) => {
            c.audit_denial(
                &gw.ctx,
                "gateway.renew",
                &resource,
                &format!("invalid_csr: {e}"),
            )
            .await;
            return Err(Failure::new(ErrorCode::InvalidCsr, e.to_string()));
        }
    };
    let old = gw.record.cert_serial.clone().unwrap_or_default();
    if !c
        .store
        .renew_gateway_certificate(&name, &old, &issued.serial, issued.not_after, now)
        .await?
    {
        c.audit_denial(
            &gw.ctx,
            "gateway.renew",
            &resource,
            "certificate_superseded",
        )
        .await;
        return Err(Failure::auth());
    }
    c.audit_event(
        &resource,
        Some(gw.ctx.ip),
        "gateway.renew",
        &resource,
        Outcome::Allow,
        &format!("serial {} replaces {old}", issued.serial),
        &gw.ctx.request_id,
    )
    .await?;
    Ok(Json(GatewayEnrollResponse {
        name,
        certificate: issued.pem,
        ca_certificate: c.ca.cert_pem().to_owned(),
        expires_at: rfc3339(issued.not_after),
    }))
}

/// The only key id a gateway's assertion key is registered under:
/// `gw-<name>-<first 8 bytes of SHA-256 of the uncompressed point, hex>`.
/// It ties the key to one gateway (an upstream matches it with the
/// assertion's `iss`) and cannot collide with any other key in the JWKS.
fn expected_kid(name: &str, jwk: &jsonwebtoken::jwk::Jwk) -> Option<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        return None;
    };
    if ec.curve != jsonwebtoken::jwk::EllipticCurve::P256 {
        return None;
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (x, y) = (b64.decode(&ec.x).ok()?, b64.decode(&ec.y).ok()?);
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut point = vec![4u8];
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(format!(
        "gw-{name}-{}",
        hex::encode(&sha2::Sha256::digest(&point)[..8])
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ControlQuery {
    /// The last sequence number the gateway applied.
    after: Option<i64>,
}

/// The control channel: newline-delimited [`ControlFrame`]s until either
/// side goes away.
#[utoipa::path(get, path = "/api/v1/gateway/control", tag = "gateways", params(ControlQuery), security(("mtls" = [])), responses((status = 200, description = "A long-lived stream of newline-delimited ControlFrame JSON objects", content_type = "application/x-ndjson", body = ControlFrame), ApiErrors))]
pub async fn control(
    State(c): C,
    gw: GatewayPeer,
    ApiQuery(q): ApiQuery<ControlQuery>,
) -> ApiResult<Response> {
    // Subscribe before reading the log, so nothing falls between the two.
    let rx = c.events.subscribe();
    let (tx, body) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let name = gw.record.name.clone();
    tracing::info!(gateway = %name, after = ?q.after, "control channel opened");
    tokio::spawn(async move {
        if let Err(e) = stream(&c, &name, q.after, rx, &tx).await {
            tracing::info!(gateway = %name, reason = e, "control channel closed");
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body));
    Ok((
        [
            (http::header::CONTENT_TYPE, "application/x-ndjson"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

type Tx = mpsc::Sender<Result<Bytes, Infallible>>;

async fn send(tx: &Tx, line: String) -> Result<(), &'static str> {
    let mut line = line.into_bytes();
    line.push(b'\n');
    tx.send(Ok(Bytes::from(line)))
        .await
        .map_err(|_| "gateway went away")
}

fn frame(f: &ControlFrame) -> Result<String, &'static str> {
    serde_json::to_string(f).map_err(|_| "encoding failed")
}

/// A stored event as a frame; its JSON is passed through as stored.
fn event_line(seq: i64, json: &str) -> String {
    format!(r#"{{"type":"event","seq":{seq},"event":{json}}}"#)
}

async fn stream(
    c: &Controller,
    name: &str,
    after: Option<i64>,
    mut rx: broadcast::Receiver<Pushed>,
    tx: &Tx,
) -> Result<(), &'static str> {
    let store_err = |_| "store unavailable";
    let window = c.store.event_window().await.map_err(store_err)?;
    let resumable = after.is_some_and(|a| a >= window.first - 1 && a <= window.last);
    let mut sent = match after {
        Some(a) if resumable => a,
        _ => {
            let state = snapshot(c, name).await.map_err(store_err)?;
            send(
                tx,
                frame(&ControlFrame::Snapshot {
                    seq: window.last,
                    state,
                })?,
            )
            .await?;
            window.last
        }
    };
    sent = catch_up(c, name, sent, tx).await?;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = c.events.stopped() => return Err("controller shutting down"),
            () = tx.closed() => return Err("gateway went away"),
            _ = heartbeat.tick() => {
                send(tx, frame(&ControlFrame::Heartbeat { seq: sent })?).await?;
            }
            pushed = rx.recv() => match pushed {
                Ok(p) if p.seq <= sent => {}
                Ok(p) if p.seq == sent + 1 => {
                    send(tx, event_line(p.seq, &crate::spa::personalize(c, name, &p.json))).await?;
                    sent = p.seq;
                    if is_own_revocation(&p.json, name) {
                        return Err("gateway revoked");
                    }
                }
                // A gap: read what is missing from the log, in order.
                Ok(_) => sent = catch_up(c, name, sent, tx).await?,
                // Too slow: close; the gateway resumes from its last seq.
                Err(broadcast::error::RecvError::Lagged(_)) => return Err("gateway lagged"),
                Err(broadcast::error::RecvError::Closed) => return Err("hub closed"),
            },
        }
    }
}

async fn catch_up(c: &Controller, name: &str, mut sent: i64, tx: &Tx) -> Result<i64, &'static str> {
    loop {
        let batch = c
            .store
            .events_after(sent, 256)
            .await
            .map_err(|_| "store unavailable")?;
        if batch.is_empty() {
            return Ok(sent);
        }
        for e in batch {
            send(
                tx,
                event_line(e.seq, &crate::spa::personalize(c, name, &e.payload)),
            )
            .await?;
            sent = e.seq;
        }
    }
}

fn is_own_revocation(json: &str, name: &str) -> bool {
    matches!(
        serde_json::from_str(json),
        Ok(umbra_proto::control::Event::GatewayRevoked { name: n }) if n == name
    )
}

async fn snapshot(c: &Controller, gateway: &str) -> Result<Snapshot, umbra_store::StoreError> {
    let now = c.now();
    let devices = c.store.list_devices().await?;
    let r = c.store.revocations(now).await?;
    let grants = c
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
    Ok(Snapshot {
        revocations: RevocationLists {
            sessions: r.sessions,
            certificates: r.certificates,
            devices: r.devices,
            users: r.users,
        },
        grants,
        jwks: serde_json::to_value(c.signer.jwks(now)).unwrap_or_default(),
        spa_devices: crate::spa::devices_for(c, gateway, &devices).await?,
        policy: crate::policies::gateway_bundle(
            &c.store.policy_snapshot().await?,
            &c.config.policy.text,
        )
        .map_err(|e| umbra_store::StoreError::Corrupt(e.to_string()))?,
        postures: devices
            .iter()
            .filter(|d| d.status == umbra_proto::api::DeviceStatus::Approved)
            .filter_map(|d| {
                Some(umbra_proto::control::DevicePosture {
                    posture: serde_json::from_str(&d.posture).ok()?,
                    device: d.id.clone(),
                })
            })
            .collect(),
        blocked: c
            .store
            .blocked_sources(now)
            .await?
            .into_iter()
            .map(|b| umbra_proto::control::BlockedSource {
                address: b.address,
                until: b.until,
            })
            .collect(),
        verdicts: c
            .store
            .list_sessions(Some(now))
            .await?
            .into_iter()
            .filter_map(|s| {
                let v = s.verdict?;
                Some(umbra_proto::control::SessionVerdict {
                    session: s.id,
                    risk: v.risk,
                    step_up_at: v.step_up_at,
                })
            })
            .collect(),
    })
}

/// A gateway's batch of access decisions, appended to the audit trail.
#[utoipa::path(post, path = "/api/v1/gateway/audit", tag = "gateways", request_body = AuditBatch, security(("mtls" = [])), responses((status = 200, description = "Accepted", body = Object), ApiErrors))]
pub async fn audit(
    State(c): C,
    ctx: RequestContext,
    ApiJson(batch): ApiJson<AuditBatch>,
) -> ApiResult<Json<serde_json::Value>> {
    // The body (up to this route's 1 MiB limit) is read before the
    // credential is checked: answering early and closing on a client still
    // sending a large body looks like a network failure to it.
    let gw = match check_gateway(&c, &ctx).await {
        Ok(record) => GatewayPeer { record, ctx },
        Err(reason) => {
            c.audit_denial(
                &ctx,
                "gateway.authenticate",
                "POST /api/v1/gateway/audit",
                &reason,
            )
            .await;
            return Err(Failure::auth());
        }
    };
    if batch.records.len() > MAX_AUDIT_BATCH {
        return Err(Failure::invalid(format!(
            "at most {MAX_AUDIT_BATCH} records per batch"
        )));
    }
    let via = format!("gateway:{}", gw.record.name);
    let mut events = Vec::with_capacity(batch.records.len());
    for r in &batch.records {
        let outcome = match r.outcome.as_str() {
            "allow" => Outcome::Allow,
            "deny" => Outcome::Deny,
            _ => return Err(Failure::invalid("outcome: allow or deny")),
        };
        let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let event = AuditEvent {
            ts: r.ts,
            actor: clip(&r.actor, 128),
            source_ip: clip(&r.source_ip, 64),
            action: clip(&r.action, 64),
            resource: format!("{} via {via}", clip(&r.resource, 512)),
            outcome,
            reason: clip(&r.reason, 512),
            request_id: clip(&r.request_id, 128),
            count: i64::try_from(r.count).unwrap_or(i64::MAX).max(1),
        };
        events.push(event);
    }
    c.store.append_audit_batch(&events).await?;
    for (event, r) in events.into_iter().zip(&batch.records) {
        c.detector.offer(crate::detect::Observed {
            event,
            transfer: r.transfer.as_ref().map(|t| (t.session.clone(), t.bytes)),
        });
    }
    Ok(Json(serde_json::json!({ "accepted": batch.records.len() })))
}
