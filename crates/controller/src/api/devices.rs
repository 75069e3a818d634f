//! Certificate renewal: a device presents its current, unexpired and
//! unrevoked certificate over mTLS with a new CSR, and gets a fresh
//! certificate for the same device id. The old certificate stays valid until
//! it expires (sessions bound to it live no longer than it does), so a
//! renewal never cuts a working device off; revoking the device ends both.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use umbra_pki::PeerCertificate;
use umbra_proto::ErrorCode;
use umbra_proto::api::{DeviceStatus, EnrollResponse, RenewRequest};
use umbra_store::{CertificateRecord, Outcome};

use super::ApiJson;
use crate::Controller;
use crate::api::openapi::ApiErrors;
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::{ApiResult, Failure};

#[utoipa::path(post, path = "/api/v1/devices/renew", tag = "devices", request_body = RenewRequest, security(("mtls" = [])), responses((status = 200, description = "A renewed device certificate", body = EnrollResponse), ApiErrors))]
pub async fn renew(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    ApiJson(req): ApiJson<RenewRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    const ACTION: &str = "device.renew";
    let Some(der) = ctx.cert.as_ref() else {
        c.audit_denial(&ctx, ACTION, "-", "no_client_certificate")
            .await;
        return Err(Failure::new(
            ErrorCode::ClientCertificateRequired,
            "a device certificate is required",
        ));
    };
    let peer = match PeerCertificate::parse(der, c.ca.trust_domain()) {
        Ok(p) => p,
        Err(e) => {
            c.audit_denial(&ctx, ACTION, "-", &format!("certificate_not_a_device: {e}"))
                .await;
            return Err(Failure::auth());
        }
    };
    let resource = format!("device:{}", peer.device_id);
    let refuse = |reason: &'static str| {
        let (c, ctx, resource) = (c.clone(), ctx.clone(), resource.clone());
        async move {
            c.audit_denial(&ctx, ACTION, &resource, reason).await;
            Failure::auth()
        }
    };
    match c.store.certificate(&peer.serial).await? {
        None => return Err(refuse("certificate_unknown").await),
        Some(r) if r.revoked_at.is_some() => return Err(refuse("certificate_revoked").await),
        Some(r) if r.device_id != peer.device_id => {
            return Err(refuse("certificate_device_mismatch").await);
        }
        Some(_) => {}
    }
    let Some(device) = c.store.device(&peer.device_id).await? else {
        return Err(refuse("device_unknown").await);
    };
    if device.status == DeviceStatus::Revoked {
        return Err(refuse("device_revoked").await);
    }
    let now = c.now();
    let issued = match c.ca.sign_device_csr(
        &req.csr_pem,
        &device.id,
        now,
        c.config.device_cert_lifetime_secs,
    ) {
        Ok(issued) => issued,
        Err(e) => {
            c.audit_denial(&ctx, ACTION, &resource, &format!("invalid_csr: {e}"))
                .await;
            return Err(Failure::new(ErrorCode::InvalidCsr, e.to_string()));
        }
    };
    let record = CertificateRecord {
        serial: issued.serial.clone(),
        device_id: device.id.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        created_at: now,
        revoked_at: None,
        revoked_reason: None,
    };
    // Checked again in the same statement as the insert: a revocation that
    // landed since the reads above wins.
    if !c
        .store
        .add_renewed_certificate(&peer.serial, &record)
        .await?
    {
        return Err(refuse("revoked_during_renewal").await);
    }
    c.audit_event(
        &format!("user:{}", device.user_name),
        Some(ctx.ip),
        ACTION,
        &resource,
        Outcome::Allow,
        &format!("serial {} replaces {}", issued.serial, peer.serial),
        &ctx.request_id,
    )
    .await?;
    Ok(Json(EnrollResponse {
        spiffe_id: c.ca.trust_domain().device_id(&device.id),
        device_id: device.id,
        status: device.status,
        certificate_pem: issued.pem,
        ca_pem: c.ca.cert_pem().to_owned(),
        serial: issued.serial,
        not_after: rfc3339(issued.not_after),
    }))
}
