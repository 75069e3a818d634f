//! Device enrollment: one-time token + CSR + posture report → device record
//! and a short-lived device certificate.
//!
//! Checks run cheapest first: token shape and CA pin, then the token's
//! record, then the CSR's signature. Nothing is written until all pass, and
//! the write (token use + device + certificate) is one transaction, so a
//! refused enrollment leaves the token usable and no half-made device.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use umbra_proto::ErrorCode;
use umbra_proto::api::{DeviceStatus, EnrollRequest, EnrollResponse, UserStatus};
use umbra_store::{CertificateRecord, EnrollOutcome, NewDevice, Outcome};

use super::ApiJson;
use crate::api::openapi::ApiErrors;
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::{ApiResult, Failure};
use crate::{Controller, secrets};

#[utoipa::path(post, path = "/api/v1/enroll", tag = "devices", request_body = EnrollRequest, responses((status = 200, description = "Enrolled: the device certificate", body = EnrollResponse), ApiErrors))]
pub async fn enroll(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    let refuse = |reason: &'static str, resource: String| {
        let c = c.clone();
        let ctx = ctx.clone();
        async move {
            c.audit_denial(&ctx, "device.enroll", &resource, reason)
                .await;
            Failure::new(ErrorCode::EnrollmentRefused, "enrollment refused")
        }
    };
    if let Err(retry) = c.admit_attempt(ctx.ip).await {
        c.audit_denial(&ctx, "device.enroll", "-", "rate_limited")
            .await;
        let mut f = Failure::new(ErrorCode::RateLimited, "too many attempts");
        f.retry_after = Some(retry);
        return Err(f);
    }
    if let Err(field) = req.posture.validate() {
        return Err(Failure::invalid(format!(
            "posture.{field} is empty, too long or has control characters"
        )));
    }
    let Some(parts) = secrets::split(secrets::ENROLLMENT_PREFIX, &req.token) else {
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
    let Some(token) = c.store.enrollment_token(&hash).await? else {
        return Err(refuse("token_unknown", "-".into()).await);
    };
    let token_res = format!("enrollment_token:{}", token.id);
    if token.used_at.is_some() {
        return Err(refuse("token_used", token_res).await);
    }
    if token.expires_at <= now {
        return Err(refuse("token_expired", token_res).await);
    }
    let user = c
        .store
        .user_by_id(&token.user_id)
        .await?
        .ok_or_else(Failure::internal)?;
    if user.status != UserStatus::Active {
        return Err(refuse("user_suspended", token_res).await);
    }

    let device_id = uuid::Uuid::new_v4().to_string();
    let issued = match c.ca.sign_device_csr(
        &req.csr_pem,
        &device_id,
        now,
        c.config.device_cert_lifetime_secs,
    ) {
        Ok(issued) => issued,
        Err(e) => {
            let reason = format!("invalid_csr: {e}");
            c.audit_denial(&ctx, "device.enroll", &token_res, &reason)
                .await;
            return Err(Failure::new(ErrorCode::InvalidCsr, e.to_string()));
        }
    };
    let status = if c.config.require_device_approval {
        DeviceStatus::Pending
    } else {
        DeviceStatus::Approved
    };
    let posture = serde_json::to_string(&req.posture).map_err(|_| Failure::internal())?;
    let device = NewDevice {
        id: device_id.clone(),
        user_id: user.id.clone(),
        status,
        hostname: req.posture.hostname.clone(),
        posture,
    };
    let cert = CertificateRecord {
        serial: issued.serial.clone(),
        device_id: device_id.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        created_at: now,
        revoked_at: None,
        revoked_reason: None,
    };
    match c.store.enroll_device(&hash, now, &device, &cert).await? {
        EnrollOutcome::Enrolled => {}
        // Lost a race with a concurrent use of the same token.
        EnrollOutcome::TokenUsed => return Err(refuse("token_used", token_res).await),
        EnrollOutcome::TokenExpired => return Err(refuse("token_expired", token_res).await),
        EnrollOutcome::TokenUnknown => return Err(refuse("token_unknown", token_res).await),
    }
    c.audit_event(
        &format!("user:{}", user.name),
        Some(ctx.ip),
        "device.enroll",
        &format!("device:{device_id}"),
        Outcome::Allow,
        &format!("serial {} status {status:?}", issued.serial),
        &ctx.request_id,
    )
    .await?;
    if status == DeviceStatus::Approved {
        crate::spa::publish_approval(
            &c,
            &device_id,
            &user.name,
            &user.groups,
            Some(req.posture.clone()),
        )
        .await?;
    }
    let spa_secret = crate::spa::device_secret(&c, &device_id)
        .ok_or_else(Failure::internal)?
        .to_base64();
    Ok(Json(EnrollResponse {
        spiffe_id: c.ca.trust_domain().device_id(&device_id),
        device_id,
        status,
        certificate_pem: issued.pem,
        ca_pem: c.ca.cert_pem().to_owned(),
        serial: issued.serial,
        not_after: rfc3339(issued.not_after),
        spa_secret,
        dark: c.dark.get().copied(),
    }))
}
