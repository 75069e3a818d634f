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
use umbra_proto::api::{DeviceStatus, EnrollResponse, PostureReceipt, PostureUpdate, RenewRequest};
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
    let spa_secret = crate::spa::device_secret(&c, &device.id)
        .ok_or_else(Failure::internal)?
        .to_base64();
    Ok(Json(EnrollResponse {
        spa_secret,
        dark: c.dark.get().copied(),
        spiffe_id: c.ca.trust_domain().device_id(&device.id),
        device_id: device.id,
        status: device.status,
        certificate_pem: issued.pem,
        ca_pem: c.ca.cert_pem().to_owned(),
        serial: issued.serial,
        not_after: rfc3339(issued.not_after),
    }))
}

/// How often a device is expected to report posture (the agent sends on
/// change, and at least this often).
pub const POSTURE_REPORT_SECS: u64 = 3600;

/// A device's fresh posture report, over mTLS with its certificate. The
/// device is the certificate's, whatever the report's `device_id` says.
/// Rate-limited per device; audited with what changed.
#[utoipa::path(post, path = "/api/v1/devices/posture", tag = "devices", request_body = PostureUpdate, security(("mtls" = [])), responses((status = 200, description = "Stored", body = PostureReceipt), ApiErrors))]
pub async fn posture(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    ApiJson(req): ApiJson<PostureUpdate>,
) -> ApiResult<Json<PostureReceipt>> {
    const ACTION: &str = "device.posture";
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
    match c.store.certificate(&peer.serial).await? {
        Some(r) if r.revoked_at.is_none() && r.device_id == peer.device_id => {}
        _ => {
            c.audit_denial(&ctx, ACTION, &resource, "certificate_unknown_or_revoked")
                .await;
            return Err(Failure::auth());
        }
    }
    if let Err(field) = req.posture.validate() {
        return Err(Failure::invalid(format!(
            "posture.{field} is empty, too long or has control characters"
        )));
    }
    let now = c.now();
    // A device reports on change and hourly: a few a minute is plenty.
    let key = format!("posture:{}", peer.device_id);
    if !c.store.take_rate_token(&key, now, 6, 3).await? {
        let mut f = Failure::new(ErrorCode::RateLimited, "too many posture reports");
        f.retry_after = Some(10);
        return Err(f);
    }
    let Some(device) = c.store.device(&peer.device_id).await? else {
        return Err(Failure::auth());
    };
    let mut posture = req.posture;
    posture.device_id = device.id.clone();
    let previous: Option<umbra_proto::PostureReport> = serde_json::from_str(&device.posture).ok();
    let changed = describe_changes(previous.as_ref(), &posture);
    let differs = previous.as_ref() != Some(&posture);
    let json = serde_json::to_string(&posture).map_err(|_| Failure::internal())?;
    if !c
        .store
        .update_device_posture(&device.id, &json, now)
        .await?
    {
        c.audit_denial(&ctx, ACTION, &resource, "device_revoked")
            .await;
        return Err(Failure::auth());
    }
    c.audit_event(
        &format!("user:{}", device.user_name),
        Some(ctx.ip),
        ACTION,
        &resource,
        Outcome::Allow,
        &changed,
        &ctx.request_id,
    )
    .await?;
    // The gateways decide compliance from the last report: tell them, but
    // only of a change (a device reports hourly and at every `connect`).
    if differs && device.status == umbra_proto::api::DeviceStatus::Approved {
        c.publish(&umbra_proto::control::Event::PostureChanged {
            device: device.id.clone(),
            posture,
        })
        .await?;
        // The device's live sessions rest on its posture: judge them now.
        c.reevaluation.trigger(
            crate::reevaluate::Trigger::Device(device.id.clone()),
            &format!("posture changed ({changed})"),
        );
    }
    Ok(Json(PostureReceipt {
        device_id: device.id,
        received_at: rfc3339(now),
        next_report_secs: POSTURE_REPORT_SECS,
    }))
}

/// "unchanged", or the compliance fields that changed, for the audit trail.
fn describe_changes(
    old: Option<&umbra_proto::PostureReport>,
    new: &umbra_proto::PostureReport,
) -> String {
    let Some(old) = old else {
        return "first report".into();
    };
    let mut changed = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            changed.push(format!("{name}: {a} -> {b}"));
        }
    };
    diff("os_version", old.os_version.clone(), new.os_version.clone());
    diff(
        "patch_level",
        old.patch_level.clone(),
        new.patch_level.clone(),
    );
    diff(
        "antivirus",
        old.antivirus_status.to_string(),
        new.antivirus_status.to_string(),
    );
    diff(
        "firewall",
        old.firewall_enabled.to_string(),
        new.firewall_enabled.to_string(),
    );
    diff(
        "disk_encryption",
        old.disk_encryption.to_string(),
        new.disk_encryption.to_string(),
    );
    diff("last_scan", old.last_scan.clone(), new.last_scan.clone());
    diff(
        "measured",
        serde_json::to_string(&old.measured).unwrap_or_default(),
        serde_json::to_string(&new.measured).unwrap_or_default(),
    );
    if changed.is_empty() {
        "unchanged".into()
    } else {
        changed.join("; ")
    }
}
