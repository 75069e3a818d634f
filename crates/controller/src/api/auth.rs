//! Login over mTLS: device certificate + password + TOTP → session token.
//!
//! Order of checks: client certificate present; per-IP rate limit; the
//! certificate's record (not revoked) and device (approved, enrolled for
//! this very user); the account (active, not locked); then the expensive
//! part, password and TOTP; then the TOTP step is consumed atomically in the
//! store (single use across controllers); then risk decides the lifetime.
//! Every refusal is audited with its precise reason; the peer always sees
//! the same `authentication_failed`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use umbra_pki::PeerCertificate;
use umbra_proto::api::{
    DeviceStatus, LoginRequest, LoginResponse, Session, StepUpRequest, StepUpResponse, UserStatus,
};
use umbra_proto::{ErrorCode, PostureReport};
use umbra_store::{Outcome, SessionRecord, UserRecord};
use zeroize::Zeroizing;

use super::ApiJson;
use super::guard::verify_session;
use crate::api::openapi::ApiErrors;
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::{ApiResult, Failure};
use crate::metrics::{AuthMethod, AuthResult};
use crate::password::MAX_PASSWORD_LEN;
use crate::tokens::{Confirmation, SessionClaims};
use crate::{Controller, totp};

struct Deny {
    reason: String,
    resource: String,
    code: ErrorCode,
    /// What `ztna_auth_attempts_total` counts it as.
    result: AuthResult,
}

fn deny(reason: impl Into<String>, resource: impl Into<String>) -> Deny {
    Deny {
        reason: reason.into(),
        resource: resource.into(),
        code: ErrorCode::AuthenticationFailed,
        result: AuthResult::Denied,
    }
}

/// Wrong credentials (not a refusal of the device or the account).
fn bad_credentials(reason: impl Into<String>, resource: impl Into<String>) -> Deny {
    Deny {
        result: AuthResult::Failure,
        ..deny(reason, resource)
    }
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "sessions", request_body = LoginRequest, security(("mtls" = [])), responses((status = 200, description = "A session bound to the device certificate", body = LoginResponse), ApiErrors))]
pub async fn login(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let actor = format!("user:{}", req.user.chars().take(64).collect::<String>());
    let method = match (&req.totp, &req.recovery_code) {
        (None, Some(_)) => AuthMethod::RecoveryCode,
        _ => AuthMethod::PasswordTotp,
    };
    let result = login_inner(&c, &ctx, req).await;
    c.metrics.auth(
        method,
        match &result {
            Ok(_) => AuthResult::Success,
            Err(LoginError::Fail(_)) => AuthResult::Error,
            Err(LoginError::Deny(d)) => d.result,
        },
    );
    match result {
        Ok(resp) => Ok(resp),
        Err(LoginError::Fail(failure)) => Err(failure),
        Err(LoginError::Deny(d)) => {
            c.audit_event(
                &actor,
                Some(ctx.ip),
                "auth.login",
                &d.resource,
                Outcome::Deny,
                &d.reason,
                &ctx.request_id,
            )
            .await
            .ok();
            Err(match d.code {
                ErrorCode::ClientCertificateRequired => {
                    Failure::new(d.code, "a device certificate is required")
                }
                ErrorCode::RateLimited => {
                    let mut f = Failure::new(d.code, "too many attempts");
                    f.retry_after = Some(60 / u64::from(c.config.login_rate_per_minute.max(1)) + 1);
                    f
                }
                _ => Failure::auth(),
            })
        }
    }
}

/// A refusal to audit, or an internal failure.
enum LoginError {
    Deny(Deny),
    Fail(Failure),
}

impl From<Deny> for LoginError {
    fn from(d: Deny) -> Self {
        Self::Deny(d)
    }
}

impl From<Failure> for LoginError {
    fn from(f: Failure) -> Self {
        Self::Fail(f)
    }
}

impl From<umbra_store::StoreError> for LoginError {
    fn from(e: umbra_store::StoreError) -> Self {
        Self::Fail(e.into())
    }
}

async fn login_inner(
    c: &Controller,
    ctx: &RequestContext,
    req: LoginRequest,
) -> Result<Json<LoginResponse>, LoginError> {
    let now = c.now();
    let Some(cert_der) = ctx.cert.as_ref() else {
        return Err(LoginError::Deny(Deny {
            code: ErrorCode::ClientCertificateRequired,
            ..deny("no_client_certificate", "-")
        }));
    };
    if c.admit_attempt(ctx.ip).await.is_err() {
        return Err(LoginError::Deny(Deny {
            code: ErrorCode::RateLimited,
            result: AuthResult::RateLimited,
            ..deny("rate_limited", "-")
        }));
    }
    let peer = PeerCertificate::parse(cert_der, c.ca.trust_domain())
        .map_err(|e| LoginError::Deny(deny(format!("certificate_not_a_device: {e}"), "-")))?;
    let resource = format!("device:{}", peer.device_id);
    let cert = c.store.certificate(&peer.serial).await?;
    match cert {
        None => return Err(LoginError::Deny(deny("certificate_unknown", resource))),
        Some(ref r) if r.revoked_at.is_some() => {
            return Err(LoginError::Deny(deny("certificate_revoked", resource)));
        }
        Some(ref r) if r.device_id != peer.device_id => {
            return Err(LoginError::Deny(deny(
                "certificate_device_mismatch",
                resource,
            )));
        }
        Some(_) => {}
    }
    let device = c
        .store
        .device(&peer.device_id)
        .await?
        .ok_or_else(|| deny("device_unknown", resource.clone()))?;
    match device.status {
        DeviceStatus::Approved => {}
        DeviceStatus::Pending => {
            return Err(LoginError::Deny(deny("device_pending_approval", resource)));
        }
        DeviceStatus::Revoked => return Err(LoginError::Deny(deny("device_revoked", resource))),
    }
    if req.user.len() > 64 || req.password.len() > MAX_PASSWORD_LEN {
        return Err(LoginError::Deny(bad_credentials(
            "input_too_long",
            resource,
        )));
    }
    let password = Zeroizing::new(req.password);
    let user = match login_account(c, &req.user, &password).await? {
        Ok(user) => user,
        Err(reason) => return Err(LoginError::Deny(bad_credentials(reason, resource))),
    };
    if device.user_id != user.id {
        return Err(LoginError::Deny(deny(
            format!("device_enrolled_for_other_user:{}", device.user_name),
            resource,
        )));
    }
    if let Some(reason) = account_refusal(&user, now) {
        let result = if reason == "account_locked" {
            AuthResult::Locked
        } else {
            AuthResult::Denied
        };
        return Err(LoginError::Deny(Deny {
            result,
            ..deny(reason, resource)
        }));
    }

    // Exactly one second factor: a TOTP code, or a one-time recovery code.
    let recovery_code = match (req.totp.as_deref(), req.recovery_code.as_deref()) {
        (Some(_), None) => None,
        (None, Some(code)) => Some(code),
        _ => {
            return Err(LoginError::Deny(bad_credentials(
                "second_factor_missing_or_ambiguous",
                resource,
            )));
        }
    };
    let second = match recovery_code {
        Some(code) => SecondFactor::Recovery(code),
        None => SecondFactor::Totp(req.totp.as_deref().unwrap_or_default()),
    };
    if let Some(reason) = check_credentials(c, &user, password, second, now).await? {
        return Err(LoginError::Deny(bad_credentials(reason, resource)));
    }

    let posture: PostureReport =
        serde_json::from_str(&device.posture).map_err(|_| Failure::internal())?;
    let assessed = crate::risk::at_login(c, &user, Some(&posture), ctx.ip, now).await?;
    let risk = assessed.score;
    c.metrics.risk_score(risk);
    let factors = crate::risk::describe(&assessed);
    let Some(lifetime) = c.config.policy.config.risk.bands.session_lifetime(risk) else {
        return Err(LoginError::Deny(deny(
            format!("risk_too_high:{risk} ({factors})"),
            resource,
        )));
    };
    let lifetime = i64::from(lifetime).min(peer.not_after - now).max(0);
    if lifetime < 60 {
        return Err(LoginError::Deny(deny(
            "certificate_expires_too_soon",
            resource,
        )));
    }
    let session = SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        kind: umbra_store::SessionKind::Device,
        user_id: user.id.clone(),
        user_name: user.name.clone(),
        device_id: device.id.clone(),
        cert_serial: peer.serial.clone(),
        source_ip: ctx.ip.to_string(),
        risk,
        created_at: now,
        expires_at: now + lifetime,
        revoked_at: None,
        revoked_reason: None,
        // Every login passes a second factor (TOTP or a recovery code).
        mfa_at: Some(now),
        verdict: None,
    };
    let claims = SessionClaims {
        iss: c.signer.issuer().to_owned(),
        sub: user.name.clone(),
        sid: session.id.clone(),
        device: device.id.clone(),
        groups: user.groups.clone(),
        risk,
        iat: now,
        nbf: now,
        exp: session.expires_at,
        cnf: Confirmation {
            x5t_s256: peer.thumbprint.clone(),
        },
        mfa_at: session.mfa_at,
    };
    let token = c.signer.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        Failure::internal()
    })?;
    if !c.store.open_session(&session).await? {
        return Err(LoginError::Deny(deny(
            "user_suspended_during_login",
            resource,
        )));
    }
    let mut reason = format!("risk {risk} [{factors}], session {}", session.id);
    if recovery_code.is_some() {
        let left = c.store.recovery_codes_left(&user.id).await?;
        reason.push_str(&format!("; recovery code used, {left} left"));
    }
    c.audit_event(
        &format!("user:{}", user.name),
        Some(ctx.ip),
        "auth.login",
        &resource,
        Outcome::Allow,
        &reason,
        &ctx.request_id,
    )
    .await?;
    let services = crate::access::granted_services(c, &user.name, &user.groups).await?;
    Ok(Json(LoginResponse {
        session_id: session.id,
        token,
        expires_at: rfc3339(session.expires_at),
        risk,
        user: user.name,
        services,
        groups: user.groups,
        device_id: device.id,
    }))
}

/// Looks up the account a login names. An unknown name costs a password
/// hash too, so timing does not reveal which names exist.
pub(super) async fn login_account(
    c: &Controller,
    name: &str,
    password: &Zeroizing<String>,
) -> Result<Result<UserRecord, &'static str>, Failure> {
    match c.store.user_by_name(name).await? {
        Some(user) => Ok(Ok(user)),
        None => {
            c.passwords.verify(password.clone(), None).await;
            Ok(Err("unknown_user"))
        }
    }
}

/// Why the account may not log in now (before any credential is checked).
pub(super) fn account_refusal(user: &UserRecord, now: i64) -> Option<&'static str> {
    if user.status != UserStatus::Active {
        Some("user_suspended")
    } else if user.is_locked(now) {
        Some("account_locked")
    } else {
        None
    }
}

/// The second factor a login presents.
pub(super) enum SecondFactor<'a> {
    Totp(&'a str),
    /// A one-time recovery code.
    Recovery(&'a str),
}

/// Checks the password and the second factor (consuming a TOTP step or a
/// recovery code); a failure counts towards the lockout. `Some(reason)`,
/// with the lockout count, when either fails. Shared by the agent's login
/// and the login page, so both draw from one lockout.
pub(super) async fn check_credentials(
    c: &Controller,
    user: &UserRecord,
    password: Zeroizing<String>,
    second: SecondFactor<'_>,
    now: i64,
) -> Result<Option<String>, Failure> {
    let password_ok = c
        .passwords
        .verify(password, Some(user.password_hash.clone()))
        .await;
    let failure = if !password_ok {
        Some("bad_password")
    } else {
        match second {
            SecondFactor::Recovery(code) => {
                match crate::recovery::hash(&c.config.kek, &user.id, code) {
                    Some(h) if c.store.consume_recovery_code(&user.id, &h, now).await? => None,
                    _ => Some("bad_recovery_code"),
                }
            }
            SecondFactor::Totp(code) => check_totp(c, user, code, now).await?,
        }
    };
    match failure {
        None => Ok(None),
        Some(reason) => record_failure(c, user, reason, now).await.map(Some),
    }
}

/// Checks a TOTP code against the user's secret and consumes its time step
/// (single use across controllers). `Some(reason)` when it fails.
pub(super) async fn check_totp(
    c: &Controller,
    user: &UserRecord,
    code: &str,
    now: i64,
) -> Result<Option<&'static str>, Failure> {
    let secret = c
        .config
        .kek
        .open(&format!("totp:{}", user.id), &user.sealed_totp_secret)
        .map_err(|e| {
            tracing::error!(error = %e, user = %user.name, "TOTP secret does not unseal");
            Failure::internal()
        })?;
    Ok(match totp::verify(&secret, code.trim(), now) {
        None => Some("bad_totp"),
        Some(step) if c.store.consume_totp_step(&user.id, step).await? => None,
        Some(_) => Some("totp_replayed"),
    })
}

/// Counts a failed second factor towards the lockout; the reason to audit.
pub(super) async fn record_failure(
    c: &Controller,
    user: &UserRecord,
    reason: &str,
    now: i64,
) -> Result<String, Failure> {
    let state = c
        .store
        .record_login_failure(
            &user.id,
            now,
            c.config.lockout_threshold,
            c.config.lockout_secs,
        )
        .await?;
    Ok(match state.locked_until {
        Some(_) if state.failed_logins >= c.config.lockout_threshold => {
            format!(
                "{reason}; account locked after {} failures",
                state.failed_logins
            )
        }
        _ => format!(
            "{reason}; failure {} of {}",
            state.failed_logins, c.config.lockout_threshold
        ),
    })
}

/// Step-up MFA: the live session's owner passes a fresh TOTP code, the
/// session's MFA time moves to now, and a new token says so. The gateway
/// asks for this (`step_up_required`) when a policy wants a fresher MFA
/// than the token carries. Failures count towards the lockout like failed
/// logins (a stolen session must not become a TOTP-guessing oracle), and a
/// locked account cannot step up.
#[utoipa::path(post, path = "/api/v1/auth/step-up", tag = "sessions", request_body = StepUpRequest, security(("mtls" = [], "bearer" = [])), responses((status = 200, description = "A new token for the same session, with a fresh MFA time", body = StepUpResponse), ApiErrors))]
pub async fn step_up(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
    ApiJson(req): ApiJson<StepUpRequest>,
) -> ApiResult<Json<StepUpResponse>> {
    let mut counted = AuthResult::Denied;
    let result = step_up_inner(&c, &ctx, req, &mut counted).await;
    let counted = if result.is_ok() {
        AuthResult::Success
    } else {
        counted
    };
    c.metrics.auth(AuthMethod::StepUp, counted);
    result
}

/// [`step_up`]; `counted` says what a refusal counts as in
/// `ztna_auth_attempts_total` (set before each step that can refuse).
async fn step_up_inner(
    c: &Controller,
    ctx: &RequestContext,
    req: StepUpRequest,
    counted: &mut AuthResult,
) -> ApiResult<Json<StepUpResponse>> {
    const ACTION: &str = "auth.step_up";
    let v = match verify_session(c, ctx).await {
        Ok(v) => v,
        Err(reason) => return Err(refuse(c, ctx, ACTION, reason).await),
    };
    let actor = format!("user:{}", v.user.name);
    let resource = format!("session:{}", v.session.id);
    let now = c.now();
    let (cr, ar, rr, xr) = (c, &actor, &resource, ctx);
    let denied = |reason: String| async move {
        cr.audit_event(
            ar,
            Some(xr.ip),
            ACTION,
            rr,
            Outcome::Deny,
            &reason,
            &xr.request_id,
        )
        .await
        .ok();
        Failure::auth()
    };
    if c.admit_attempt(ctx.ip).await.is_err() {
        *counted = AuthResult::RateLimited;
        let _ = denied("rate_limited".into()).await;
        let mut f = Failure::new(ErrorCode::RateLimited, "too many attempts");
        f.retry_after = Some(60 / u64::from(c.config.login_rate_per_minute.max(1)) + 1);
        return Err(f);
    }
    if v.user.is_locked(now) {
        *counted = AuthResult::Locked;
        return Err(denied("account_locked".into()).await);
    }
    *counted = AuthResult::Failure;
    if req.totp.len() > 16 {
        return Err(denied("input_too_long".into()).await);
    }
    *counted = AuthResult::Error;
    if let Some(reason) = check_totp(c, &v.user, &req.totp, now).await? {
        let reason = record_failure(c, &v.user, reason, now).await?;
        *counted = AuthResult::Failure;
        return Err(denied(reason).await);
    }
    // The token binds to the certificate of this connection, which
    // `verify_session` checked is the one the session's token names.
    let cert = ctx.cert.as_ref().ok_or_else(Failure::internal)?;
    let peer =
        PeerCertificate::parse(cert, c.ca.trust_domain()).map_err(|_| Failure::internal())?;
    if !c.store.record_session_mfa(&v.session.id, now).await? {
        *counted = AuthResult::Denied;
        return Err(denied("session_ended_during_step_up".into()).await);
    }
    *counted = AuthResult::Error;
    let claims = SessionClaims {
        iss: c.signer.issuer().to_owned(),
        sub: v.user.name.clone(),
        sid: v.session.id.clone(),
        device: v.session.device_id.clone(),
        groups: v.user.groups.clone(),
        risk: v.session.risk,
        iat: now,
        nbf: now,
        exp: v.session.expires_at,
        cnf: Confirmation {
            x5t_s256: peer.thumbprint,
        },
        mfa_at: Some(now),
    };
    let token = c.signer.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        Failure::internal()
    })?;
    c.audit_event(
        &actor,
        Some(ctx.ip),
        ACTION,
        &resource,
        Outcome::Allow,
        "fresh TOTP",
        &ctx.request_id,
    )
    .await?;
    Ok(Json(StepUpResponse {
        session_id: v.session.id,
        token,
        expires_at: rfc3339(v.session.expires_at),
        mfa_at: rfc3339(now),
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "sessions", security(("mtls" = [], "bearer" = [])), responses((status = 200, description = "The ended session", body = Session), ApiErrors))]
pub async fn logout(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
) -> ApiResult<Json<Session>> {
    let v = match verify_session(&c, &ctx).await {
        Ok(v) => v,
        Err(reason) => return Err(refuse(&c, &ctx, "auth.logout", reason).await),
    };
    c.store
        .revoke_session(&v.session.id, c.now(), "logout")
        .await?;
    c.publish(&umbra_proto::control::Event::SessionRevoked {
        session: v.session.id.clone(),
    })
    .await?;
    c.audit_event(
        &format!("user:{}", v.user.name),
        Some(ctx.ip),
        "auth.logout",
        &format!("session:{}", v.session.id),
        Outcome::Allow,
        "",
        &ctx.request_id,
    )
    .await?;
    let s = c
        .store
        .session(&v.session.id)
        .await?
        .ok_or_else(Failure::internal)?;
    Ok(Json(session_view(&s)))
}

#[utoipa::path(get, path = "/api/v1/auth/session", tag = "sessions", security(("mtls" = [], "bearer" = [])), responses((status = 200, description = "The live session", body = Session), ApiErrors))]
pub async fn session(
    State(c): State<Arc<Controller>>,
    ctx: RequestContext,
) -> ApiResult<Json<Session>> {
    match verify_session(&c, &ctx).await {
        Ok(v) => Ok(Json(session_view(&v.session))),
        Err(reason) => Err(refuse(&c, &ctx, "auth.session", reason).await),
    }
}

async fn refuse(c: &Controller, ctx: &RequestContext, action: &str, reason: &str) -> Failure {
    c.audit_denial(ctx, action, "-", reason).await;
    if reason == "client_certificate_required" {
        Failure::new(
            ErrorCode::ClientCertificateRequired,
            "a device certificate is required",
        )
    } else {
        Failure::auth()
    }
}

pub fn session_view(s: &SessionRecord) -> Session {
    Session {
        id: s.id.clone(),
        user: s.user_name.clone(),
        device_id: s.device_id.clone(),
        source_ip: s.source_ip.clone(),
        risk: s.risk,
        created_at: rfc3339(s.created_at),
        expires_at: rfc3339(s.expires_at),
        revoked_at: s.revoked_at.map(rfc3339),
        revoked_reason: s.revoked_reason.clone(),
        current_risk: s.verdict.map(|v| v.risk),
        evaluated_at: s.verdict.map(|v| rfc3339(v.at)),
        step_up_since: s.verdict.and_then(|v| v.step_up_at).map(rfc3339),
    }
}
