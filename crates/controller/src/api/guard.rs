//! Credential checks. Each returns a precise reason on refusal; the caller
//! audits that reason and shows the peer only `authentication_failed`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use umbra_pki::PeerCertificate;
use umbra_proto::api::{Role, UserStatus};
use umbra_store::{AdminTokenKind, Outcome, SessionRecord, UserRecord};

use crate::Controller;
use crate::context::RequestContext;
use crate::error::Failure;
use crate::secrets;

/// A live session presented with the device certificate it is bound to.
pub struct VerifiedSession {
    pub session: SessionRecord,
    pub user: UserRecord,
}

pub async fn verify_session(
    c: &Controller,
    ctx: &RequestContext,
) -> Result<VerifiedSession, &'static str> {
    let token = ctx.bearer.as_deref().ok_or("no_credential")?;
    let now = c.now();
    let claims = match c.signer.verify(token, now) {
        // A key this controller has not seen: another controller sharing the
        // store may have rotated. Re-read the keys (at most once a second).
        Err(crate::tokens::TokenError::UnknownKey) if c.may_reload_signing_keys() => {
            c.reload_signing_keys()
                .await
                .map_err(|_| "store_unavailable")?;
            c.signer.verify(token, now)
        }
        other => other,
    }
    .map_err(|e| e.reason())?;
    let cert = ctx.cert.as_ref().ok_or("client_certificate_required")?;
    let peer = PeerCertificate::parse(cert, c.ca.trust_domain())
        .map_err(|_| "certificate_not_a_device")?;
    let bound =
        subtle::ConstantTimeEq::ct_eq(peer.thumbprint.as_bytes(), claims.cnf.x5t_s256.as_bytes());
    if !bool::from(bound) {
        return Err("token_not_bound_to_certificate");
    }
    let store_err = |_| "store_unavailable";
    let session = c
        .store
        .session(&claims.sid)
        .await
        .map_err(store_err)?
        .ok_or("session_unknown")?;
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
        .map_err(store_err)?
        .ok_or("user_unknown")?;
    if user.status != UserStatus::Active {
        return Err("user_suspended");
    }
    Ok(VerifiedSession { session, user })
}

/// An authenticated administrator: an API admin token, or a live session
/// of a user with the admin role (over mTLS, bound to its device).
pub struct Admin {
    pub actor: String,
    pub ctx: RequestContext,
}

impl FromRequestParts<Arc<Controller>> for Admin {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Controller>,
    ) -> Result<Self, Self::Rejection> {
        let ctx = RequestContext::from_request_parts(parts, c).await?;
        match check_admin(c, &ctx).await {
            Ok(actor) => {
                // Changes are audited by their handlers; reads are audited
                // here, so every admin action leaves a record.
                if parts.method == http::Method::GET {
                    let resource = parts.uri.path_and_query().map_or("-", |p| p.as_str());
                    c.audit_event(
                        &actor,
                        Some(ctx.ip),
                        "admin.read",
                        resource,
                        Outcome::Allow,
                        "",
                        &ctx.request_id,
                    )
                    .await?;
                }
                Ok(Self { actor, ctx })
            }
            Err(reason) => {
                let resource = format!("{} {}", parts.method, parts.uri.path());
                c.audit_denial(&ctx, "admin.authenticate", &resource, reason)
                    .await;
                Err(Failure::auth())
            }
        }
    }
}

pub(super) async fn check_admin(
    c: &Controller,
    ctx: &RequestContext,
) -> Result<String, &'static str> {
    let token = ctx.bearer.as_deref().ok_or("no_credential")?;
    if token.starts_with(secrets::BOOTSTRAP_PREFIX) {
        return Err("bootstrap_token_must_be_exchanged");
    }
    if token.starts_with(secrets::ADMIN_PREFIX) {
        let parts = secrets::split(secrets::ADMIN_PREFIX, token).ok_or("admin_token_malformed")?;
        let record = c
            .store
            .admin_token(parts.middle)
            .await
            .map_err(|_| "store_unavailable")?
            .ok_or("admin_token_unknown")?;
        if record.kind != AdminTokenKind::Api
            || !secrets::hash_matches(parts.secret, &record.secret_hash)
        {
            return Err("admin_token_bad_secret");
        }
        if record.revoked_at.is_some() {
            return Err("admin_token_revoked");
        }
        if record.expires_at <= c.now() {
            return Err("admin_token_expired");
        }
        return Ok(format!("admin_token:{}", record.name));
    }
    let verified = verify_session(c, ctx).await?;
    if verified.user.role != Role::Admin {
        return Err("not_an_admin");
    }
    Ok(format!("user:{}", verified.user.name))
}
