//! `/api/v1/admin/…`: users, enrollment tokens, devices, certificates,
//! sessions and admin credentials (the audit trail is in `audit`). Every
//! call is made by an authenticated [`Admin`] and every change is audited
//! with that actor.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use umbra_proto::ErrorCode;
use umbra_proto::api::{
    AdminTokenResponse, CreateAdminTokenRequest, CreateEnrollmentTokenRequest,
    CreateGatewayRequest, CreateUserRequest, CreateUserResponse, Device, DeviceStatus,
    EnrollmentToken, Gateway, GatewayToken, List, PutServiceRequest, RecoveryCodes,
    ResetTotpResponse, Service, Session, TotpProvisioning, User, UserStatus,
};
use umbra_proto::control::{Event, Grant, Route};
use umbra_store::{
    AdminTokenKind, DeviceRecord, GatewayRecord, NewEnrollmentToken, NewGateway, NewUser, Outcome,
    ServiceRecord, UserRecord,
};
use zeroize::Zeroizing;

use super::guard::Admin;
use super::{ApiJson, ApiQuery, valid_name};
use crate::api::openapi::{ApiErrors, UserActionResult};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::{ApiResult, Failure};
use crate::password::MAX_PASSWORD_LEN;
use crate::state::{BOOTSTRAP_FILE, new_admin_token};
use crate::{Controller, recovery, secrets, totp};

type C = State<Arc<Controller>>;

impl Admin {
    pub(super) async fn audit(
        &self,
        c: &Controller,
        action: &str,
        resource: &str,
        reason: &str,
    ) -> ApiResult<()> {
        c.audit_event(
            &self.actor,
            Some(self.ctx.ip),
            action,
            resource,
            Outcome::Allow,
            reason,
            &self.ctx.request_id,
        )
        .await
    }
}

pub fn user_view(u: &UserRecord, now: i64) -> User {
    User {
        id: u.id.clone(),
        name: u.name.clone(),
        role: u.role,
        groups: u.groups.clone(),
        status: u.status,
        locked_until: u.locked_until.filter(|&t| t > now).map(rfc3339),
        failed_logins: u.failed_logins,
        created_at: rfc3339(u.created_at),
    }
}

fn device_view(d: &DeviceRecord, c: &Controller) -> ApiResult<Device> {
    Ok(Device {
        id: d.id.clone(),
        user: d.user_name.clone(),
        spiffe_id: c.ca.trust_domain().device_id(&d.id),
        hostname: d.hostname.clone(),
        status: d.status,
        posture: serde_json::from_str(&d.posture).map_err(|_| Failure::internal())?,
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    })
}

fn provisioning(c: &Controller, secret: &[u8], user: &str) -> ApiResult<TotpProvisioning> {
    let p = totp::provisioning(secret, &c.config.totp_issuer, user).map_err(|e| {
        tracing::error!(error = %e, "TOTP provisioning failed");
        Failure::internal()
    })?;
    Ok(TotpProvisioning {
        secret: p.secret_base32,
        uri: p.uri,
        qr_svg: p.qr_svg,
    })
}

fn seal_totp(c: &Controller, user_id: &str, secret: &[u8]) -> ApiResult<String> {
    c.config
        .kek
        .seal(&format!("totp:{user_id}"), secret)
        .map_err(|_| Failure::internal())
}

async fn user_named(c: &Controller, name: &str) -> ApiResult<UserRecord> {
    c.store
        .user_by_name(name)
        .await?
        .ok_or_else(|| Failure::not_found("user"))
}

// ---- bootstrap ---------------------------------------------------------------

/// Exchanges the one-time bootstrap credential for an API admin token.
#[utoipa::path(post, path = "/api/v1/admin/bootstrap", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "An admin token for the one-time bootstrap credential", body = AdminTokenResponse), ApiErrors))]
pub async fn bootstrap(State(c): C, ctx: RequestContext) -> ApiResult<Json<AdminTokenResponse>> {
    let refuse = |reason: &'static str| {
        let (c, ctx) = (c.clone(), ctx.clone());
        async move {
            c.audit_denial(&ctx, "admin.bootstrap.exchange", "-", reason)
                .await;
            Failure::auth()
        }
    };
    let Some(parts) = ctx
        .bearer
        .as_deref()
        .and_then(|t| secrets::split(secrets::BOOTSTRAP_PREFIX, t))
    else {
        return Err(refuse("bootstrap_token_malformed").await);
    };
    let Some(record) = c.store.admin_token(parts.middle).await? else {
        return Err(refuse("bootstrap_token_unknown").await);
    };
    if record.kind != AdminTokenKind::Bootstrap
        || !secrets::hash_matches(parts.secret, &record.secret_hash)
    {
        return Err(refuse("bootstrap_token_bad_secret").await);
    }
    let now = c.now();
    let (replacement, token) = new_admin_token(
        AdminTokenKind::Api,
        "bootstrap-admin",
        "bootstrap",
        now,
        c.config.admin_token_ttl_secs,
    );
    if !c
        .store
        .exchange_bootstrap_token(&record.id, now, &replacement)
        .await?
    {
        let reason = if record.used_at.is_some() {
            "bootstrap_token_used"
        } else if record.revoked_at.is_some() {
            "bootstrap_token_revoked"
        } else {
            "bootstrap_token_expired"
        };
        return Err(refuse(reason).await);
    }
    // The file's credential is spent; remove it so it is not mistaken for a
    // live one.
    let _ = std::fs::remove_file(c.config.data_dir.join(BOOTSTRAP_FILE));
    c.audit_event(
        "bootstrap",
        Some(ctx.ip),
        "admin.bootstrap.exchange",
        &format!("admin_token:{}", replacement.id),
        Outcome::Allow,
        "",
        &ctx.request_id,
    )
    .await?;
    Ok(Json(AdminTokenResponse {
        id: replacement.id,
        name: replacement.name,
        token,
        expires_at: rfc3339(replacement.expires_at),
    }))
}

// ---- users -------------------------------------------------------------------

#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", request_body = CreateUserRequest, security(("bearer" = [])), responses((status = 200, description = "The user, a generated password if none was given, and TOTP provisioning", body = CreateUserResponse), ApiErrors))]
pub async fn create_user(
    State(c): C,
    admin: Admin,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<Json<CreateUserResponse>> {
    if !valid_name(&req.name) {
        return Err(Failure::invalid(
            "name: 1-64 characters of letters, digits and ._@-, starting with a letter or digit",
        ));
    }
    if let Some(bad) = req.groups.iter().find(|g| !valid_name(g)) {
        return Err(Failure::invalid(format!(
            "groups: {bad:?} is not a valid group name"
        )));
    }
    if req.groups.len() > 64 {
        return Err(Failure::invalid("groups: at most 64"));
    }
    let (password, generated) = match req.password {
        Some(p) => {
            let len = p.chars().count();
            if len < c.config.password_min_length || p.len() > MAX_PASSWORD_LEN {
                return Err(Failure::invalid(format!(
                    "password: must be {}..={MAX_PASSWORD_LEN} characters",
                    c.config.password_min_length
                )));
            }
            (Zeroizing::new(p), false)
        }
        None => (
            Zeroizing::new(secrets::random_secret()[..24].to_owned()),
            true,
        ),
    };
    let returned = generated.then(|| password.to_string());
    let hash = c.passwords.hash(password).await.map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        Failure::internal()
    })?;
    let id = uuid::Uuid::new_v4().to_string();
    let secret = totp::generate_secret();
    let totp_view = provisioning(&c, &secret, &req.name)?;
    let now = c.now();
    c.store
        .create_user(&NewUser {
            id: id.clone(),
            name: req.name.clone(),
            role: req.role,
            groups: req.groups.clone(),
            password_hash: hash,
            sealed_totp_secret: seal_totp(&c, &id, &secret)?,
            now,
        })
        .await?;
    admin
        .audit(
            &c,
            "user.create",
            &format!("user:{}", req.name),
            &format!("role {}", req.role.as_str()),
        )
        .await?;
    let user = user_named(&c, &req.name).await?;
    Ok(Json(CreateUserResponse {
        user: user_view(&user, now),
        password: returned,
        totp: totp_view,
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "All users", body = List<User>), ApiErrors))]
pub async fn list_users(State(c): C, _admin: Admin) -> ApiResult<Json<List<User>>> {
    let now = c.now();
    let items = c
        .store
        .list_users()
        .await?
        .iter()
        .map(|u| user_view(u, now))
        .collect();
    Ok(Json(List { items }))
}

#[utoipa::path(get, path = "/api/v1/admin/users/{name}", tag = "admin", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The user", body = User), ApiErrors))]
pub async fn get_user(
    State(c): C,
    _admin: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<User>> {
    Ok(Json(user_view(&user_named(&c, &name).await?, c.now())))
}

/// `suspend`, `resume`, `unlock`, `reset-totp` or `recovery-codes`.
#[utoipa::path(post, path = "/api/v1/admin/users/{name}/{action}", tag = "admin", params(("name" = String, Path), ("action" = String, Path, description = "suspend, resume, unlock, reset-totp or recovery-codes")), security(("bearer" = [])), responses((status = 200, description = "The user; with reset-totp also the new TOTP provisioning; with recovery-codes the new codes", body = UserActionResult), ApiErrors))]
pub async fn user_action(
    State(c): C,
    admin: Admin,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let user = user_named(&c, &name).await?;
    let now = c.now();
    let resource = format!("user:{name}");
    if action == "recovery-codes" {
        let codes = recovery::generate();
        let hashes: Vec<String> = codes
            .iter()
            .map(|code| recovery::hash(&c.config.kek, &user.id, code).ok_or_else(Failure::internal))
            .collect::<ApiResult<_>>()?;
        c.store
            .replace_recovery_codes(&user.id, &hashes, now)
            .await?;
        admin
            .audit(
                &c,
                "user.recovery-codes",
                &resource,
                &format!("{} codes issued", codes.len()),
            )
            .await?;
        return serde_json::to_value(RecoveryCodes {
            user: user.name,
            codes,
        })
        .map(Json)
        .map_err(|_| Failure::internal());
    }
    let totp = act_on_user(&c, &admin, &user, &action).await?;
    let user = user_view(&user_named(&c, &name).await?, now);
    Ok(Json(
        match totp {
            Some(totp) => serde_json::to_value(ResetTotpResponse { user, totp }),
            None => serde_json::to_value(user),
        }
        .map_err(|_| Failure::internal())?,
    ))
}

/// `suspend`, `resume`, `unlock` or `reset-totp` (the API's and the
/// dashboard's), audited as `user.<action>`; reset-totp returns the new
/// secret's provisioning, shown once.
pub(super) async fn act_on_user(
    c: &Controller,
    admin: &Admin,
    user: &UserRecord,
    action: &str,
) -> ApiResult<Option<TotpProvisioning>> {
    let now = c.now();
    let totp = match action {
        "suspend" => {
            c.suspend_user(user).await?;
            None
        }
        "resume" => {
            c.resume_user(user).await?;
            None
        }
        "unlock" => {
            c.store.unlock_user(&user.id, now).await?;
            None
        }
        "reset-totp" => {
            let secret = totp::generate_secret();
            c.store
                .reset_totp(&user.id, &seal_totp(c, &user.id, &secret)?, now)
                .await?;
            Some(provisioning(c, &secret, &user.name)?)
        }
        _ => return Err(Failure::not_found("action")),
    };
    admin
        .audit(
            c,
            &format!("user.{action}"),
            &format!("user:{}", user.name),
            "",
        )
        .await?;
    Ok(totp)
}

// ---- enrollment tokens ---------------------------------------------------------

#[utoipa::path(post, path = "/api/v1/admin/enrollment-tokens", tag = "admin", request_body = CreateEnrollmentTokenRequest, security(("bearer" = [])), responses((status = 200, description = "A one-time enrollment token", body = EnrollmentToken), ApiErrors))]
pub async fn create_enrollment_token(
    State(c): C,
    admin: Admin,
    ApiJson(req): ApiJson<CreateEnrollmentTokenRequest>,
) -> ApiResult<Json<EnrollmentToken>> {
    let user = user_named(&c, &req.user).await?;
    if user.status != UserStatus::Active {
        return Err(Failure::new(ErrorCode::Conflict, "user is suspended"));
    }
    let ttl = match req.ttl_seconds {
        None => c.config.enrollment_token_ttl_secs,
        Some(t) if (60..=30 * 86400).contains(&t) => t as i64,
        Some(_) => return Err(Failure::invalid("ttl_seconds: must be 60..=2592000")),
    };
    let now = c.now();
    let secret = secrets::random_secret();
    let record = NewEnrollmentToken {
        id: secrets::random_id(),
        token_hash: secrets::hash_secret(&secret),
        user_id: user.id.clone(),
        created_by: admin.actor.clone(),
        created_at: now,
        expires_at: now + ttl,
    };
    c.store.create_enrollment_token(&record).await?;
    admin
        .audit(
            &c,
            "enrollment_token.create",
            &format!("enrollment_token:{}", record.id),
            &format!("for user {}", user.name),
        )
        .await?;
    let token = format!(
        "{}.{}.{secret}",
        secrets::ENROLLMENT_PREFIX,
        secrets::pin_text(&c.ca.pin())
    );
    Ok(Json(EnrollmentToken {
        token,
        user: user.name,
        expires_at: rfc3339(record.expires_at),
    }))
}

// ---- devices and certificates ------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/admin/devices", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "All devices", body = List<Device>), ApiErrors))]
pub async fn list_devices(State(c): C, _admin: Admin) -> ApiResult<Json<List<Device>>> {
    let items = c
        .store
        .list_devices()
        .await?
        .iter()
        .map(|d| device_view(d, &c))
        .collect::<ApiResult<_>>()?;
    Ok(Json(List { items }))
}

/// `approve` or `revoke`.
#[utoipa::path(post, path = "/api/v1/admin/devices/{id}/{action}", tag = "admin", params(("id" = String, Path), ("action" = String, Path, description = "approve or revoke")), security(("bearer" = [])), responses((status = 200, description = "The device", body = Device), ApiErrors))]
pub async fn device_action(
    State(c): C,
    admin: Admin,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Device>> {
    let status = match action.as_str() {
        "approve" => DeviceStatus::Approved,
        "revoke" => DeviceStatus::Revoked,
        _ => return Err(Failure::not_found("action")),
    };
    let device = c
        .store
        .device(&id)
        .await?
        .ok_or_else(|| Failure::not_found("device"))?;
    if !c
        .store
        .set_device_status(&device.id, status, c.now())
        .await?
    {
        return Err(Failure::new(
            ErrorCode::Conflict,
            "device is revoked; enroll it again",
        ));
    }
    if status == DeviceStatus::Revoked {
        c.publish(&Event::DeviceRevoked {
            device: device.id.clone(),
        })
        .await?;
    } else if device.status != DeviceStatus::Approved {
        let groups = c
            .store
            .user_by_id(&device.user_id)
            .await?
            .map(|u| u.groups)
            .unwrap_or_default();
        crate::spa::publish_approval(
            &c,
            &device.id,
            &device.user_name,
            &groups,
            serde_json::from_str(&device.posture).ok(),
        )
        .await?;
    }
    admin
        .audit(&c, &format!("device.{action}"), &format!("device:{id}"), "")
        .await?;
    let device = c.store.device(&id).await?.ok_or_else(Failure::internal)?;
    Ok(Json(device_view(&device, &c)?))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevokeBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/admin/certificates/{serial}/revoke", tag = "admin", params(("serial" = String, Path), RevokeBody), security(("bearer" = [])), responses((status = 200, description = "Revoked", body = Object), ApiErrors))]
pub async fn revoke_certificate(
    State(c): C,
    admin: Admin,
    Path(serial): Path<String>,
    ApiQuery(q): ApiQuery<RevokeBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let serial = serial.to_ascii_lowercase();
    let reason = q
        .reason
        .unwrap_or_else(|| "revoked by administrator".into());
    if reason.len() > 256 {
        return Err(Failure::invalid("reason: at most 256 bytes"));
    }
    c.store
        .certificate(&serial)
        .await?
        .ok_or_else(|| Failure::not_found("certificate"))?;
    let changed = c
        .store
        .revoke_certificate(&serial, c.now(), &reason)
        .await?;
    c.publish(&Event::CertificateRevoked {
        serial: serial.clone(),
    })
    .await?;
    admin
        .audit(
            &c,
            "certificate.revoke",
            &format!("certificate:{serial}"),
            &reason,
        )
        .await?;
    Ok(Json(
        serde_json::json!({ "serial": serial, "revoked": true, "changed": changed }),
    ))
}

// ---- sessions -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    #[serde(default)]
    pub all: bool,
}

#[utoipa::path(get, path = "/api/v1/admin/sessions", tag = "admin", params(SessionQuery), security(("bearer" = [])), responses((status = 200, description = "Live sessions (all with all=true)", body = List<Session>), ApiErrors))]
pub async fn list_sessions(
    State(c): C,
    _admin: Admin,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> ApiResult<Json<List<Session>>> {
    let live_at = (!q.all).then(|| c.now());
    let items = c
        .store
        .list_sessions(live_at)
        .await?
        .iter()
        .map(super::auth::session_view)
        .collect();
    Ok(Json(List { items }))
}

#[utoipa::path(post, path = "/api/v1/admin/sessions/{id}/revoke", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The revoked session", body = Session), ApiErrors))]
pub async fn revoke_session(
    State(c): C,
    admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Session>> {
    let s = revoke_session_as(&c, &admin, &id).await?;
    Ok(Json(super::auth::session_view(&s)))
}

/// Ends a session everywhere (the gateways are told), audited as
/// `session.revoke`; returns it as it is now.
pub(super) async fn revoke_session_as(
    c: &Controller,
    admin: &Admin,
    id: &str,
) -> ApiResult<umbra_store::SessionRecord> {
    c.store
        .session(id)
        .await?
        .ok_or_else(|| Failure::not_found("session"))?;
    c.store
        .revoke_session(id, c.now(), "revoked by administrator")
        .await?;
    c.publish(&Event::SessionRevoked {
        session: id.to_owned(),
    })
    .await?;
    admin
        .audit(c, "session.revoke", &format!("session:{id}"), "")
        .await?;
    c.store.session(id).await?.ok_or_else(Failure::internal)
}

// ---- admin credentials ------------------------------------------------------------------

#[utoipa::path(post, path = "/api/v1/admin/tokens", tag = "admin", request_body = CreateAdminTokenRequest, security(("bearer" = [])), responses((status = 200, description = "A new admin token (shown once)", body = AdminTokenResponse), ApiErrors))]
pub async fn create_admin_token(
    State(c): C,
    admin: Admin,
    ApiJson(req): ApiJson<CreateAdminTokenRequest>,
) -> ApiResult<Json<AdminTokenResponse>> {
    if !valid_name(&req.name) {
        return Err(Failure::invalid(
            "name: 1-64 characters of letters, digits and ._@-",
        ));
    }
    let ttl = match req.ttl_seconds {
        None => c.config.admin_token_ttl_secs,
        Some(t) if (60..=365 * 86400).contains(&t) => t as i64,
        Some(_) => return Err(Failure::invalid("ttl_seconds: must be 60..=31536000")),
    };
    let (record, token) =
        new_admin_token(AdminTokenKind::Api, &req.name, &admin.actor, c.now(), ttl);
    c.store.create_admin_token(&record).await?;
    admin
        .audit(
            &c,
            "admin_token.create",
            &format!("admin_token:{}", record.id),
            &req.name,
        )
        .await?;
    Ok(Json(AdminTokenResponse {
        id: record.id,
        name: record.name,
        token,
        expires_at: rfc3339(record.expires_at),
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/tokens", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Admin credentials (never their secrets)", body = Object), ApiErrors))]
pub async fn list_admin_tokens(State(c): C, _admin: Admin) -> ApiResult<Json<serde_json::Value>> {
    let items: Vec<_> = c
        .store
        .list_admin_tokens()
        .await?
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id, "name": t.name, "kind": t.kind.as_str(), "created_by": t.created_by,
                "created_at": rfc3339(t.created_at), "expires_at": rfc3339(t.expires_at),
                "used_at": t.used_at.map(rfc3339), "revoked_at": t.revoked_at.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

#[utoipa::path(post, path = "/api/v1/admin/tokens/{id}/revoke", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Revoked", body = Object), ApiErrors))]
pub async fn revoke_admin_token(
    State(c): C,
    admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    c.store
        .admin_token(&id)
        .await?
        .ok_or_else(|| Failure::not_found("admin token"))?;
    let changed = c.store.revoke_admin_token(&id, c.now()).await?;
    admin
        .audit(&c, "admin_token.revoke", &format!("admin_token:{id}"), "")
        .await?;
    Ok(Json(
        serde_json::json!({ "id": id, "revoked": true, "changed": changed }),
    ))
}

// ---- token-signing keys -------------------------------------------------------------------

/// Starts signing session tokens with a new key; the old keys stay in the
/// JWKS and keep verifying until every token they signed has expired.
#[utoipa::path(post, path = "/api/v1/admin/signing-keys/rotate", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "The new key id and when the old keys retire", body = Object), ApiErrors))]
pub async fn rotate_signing_key(State(c): C, admin: Admin) -> ApiResult<Json<serde_json::Value>> {
    let (kid, retire_at) = c.rotate_signing_key().await?;
    admin
        .audit(
            &c,
            "signing_key.rotate",
            &format!("signing_key:{kid}"),
            &format!("previous keys retire at {}", rfc3339(retire_at)),
        )
        .await?;
    Ok(Json(
        serde_json::json!({ "kid": kid, "previous_keys_retire_at": rfc3339(retire_at) }),
    ))
}

// ---- services and their grants -----------------------------------------------------------

const MAX_ALLOW_ENTRIES: usize = 1000;

fn service_view(s: &ServiceRecord, gateways: &[GatewayRecord]) -> Service {
    Service {
        name: s.name.clone(),
        allow_users: s.allow_users.clone(),
        allow_groups: s.allow_groups.clone(),
        gateways: gateways
            .iter()
            .filter(|g| g.routes.iter().any(|r| r.service == s.name))
            .map(|g| g.name.clone())
            .collect(),
        updated_at: rfc3339(s.updated_at),
    }
}

#[utoipa::path(get, path = "/api/v1/admin/services", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Services and their allow lists", body = List<Service>), ApiErrors))]
pub async fn list_services(State(c): C, _admin: Admin) -> ApiResult<Json<List<Service>>> {
    let gateways = c.store.list_gateways().await?;
    let items = c
        .store
        .list_services()
        .await?
        .iter()
        .map(|s| service_view(s, &gateways))
        .collect();
    Ok(Json(List { items }))
}

#[utoipa::path(put, path = "/api/v1/admin/services/{name}", tag = "admin", params(("name" = String, Path)), request_body = PutServiceRequest, security(("bearer" = [])), responses((status = 200, description = "The service", body = Service), ApiErrors))]
pub async fn put_service(
    State(c): C,
    admin: Admin,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutServiceRequest>,
) -> ApiResult<Json<Service>> {
    if !valid_name(&name) {
        return Err(Failure::invalid("service name: 1-64 of [A-Za-z0-9._@-]"));
    }
    let mut allow_users = req.allow_users;
    let mut allow_groups = req.allow_groups;
    for list in [&mut allow_users, &mut allow_groups] {
        if list.len() > MAX_ALLOW_ENTRIES || list.iter().any(|n| !valid_name(n)) {
            return Err(Failure::invalid(format!(
                "allow lists: at most {MAX_ALLOW_ENTRIES} valid names"
            )));
        }
        list.sort();
        list.dedup();
    }
    let now = c.now();
    let record = ServiceRecord {
        name: name.clone(),
        allow_users,
        allow_groups,
        created_at: now,
        updated_at: now,
    };
    c.store.put_service(&record).await?;
    c.publish(&Event::GrantChanged {
        service: name.clone(),
        grant: Some(Grant {
            service: name.clone(),
            allow_users: record.allow_users.clone(),
            allow_groups: record.allow_groups.clone(),
        }),
    })
    .await?;
    admin
        .audit(
            &c,
            "service.put",
            &format!("service:{name}"),
            &format!(
                "users [{}] groups [{}]",
                record.allow_users.join(","),
                record.allow_groups.join(",")
            ),
        )
        .await?;
    let gateways = c.store.list_gateways().await?;
    Ok(Json(service_view(&record, &gateways)))
}

#[utoipa::path(delete, path = "/api/v1/admin/services/{name}", tag = "admin", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Deleted", body = Object), ApiErrors))]
pub async fn delete_service(
    State(c): C,
    admin: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    if !c.store.delete_service(&name).await? {
        return Err(Failure::not_found("service"));
    }
    c.publish(&Event::GrantChanged {
        service: name.clone(),
        grant: None,
    })
    .await?;
    admin
        .audit(&c, "service.delete", &format!("service:{name}"), "")
        .await?;
    Ok(Json(serde_json::json!({ "name": name, "deleted": true })))
}

// ---- gateways ------------------------------------------------------------------------------

fn gateway_view(g: &GatewayRecord) -> Gateway {
    Gateway {
        name: g.name.clone(),
        status: g.status.as_str().to_owned(),
        sans: g.sans.clone(),
        url: g.url.clone(),
        routes: g
            .routes
            .iter()
            .map(|r| Route {
                service: r.service.clone(),
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                protocol: if r.protocol == "tcp" {
                    umbra_proto::control::Protocol::Tcp
                } else {
                    umbra_proto::control::Protocol::Http
                },
            })
            .collect(),
        certificate_serial: g.cert_serial.clone(),
        certificate_expires_at: g.cert_not_after.map(rfc3339),
        updated_at: rfc3339(g.updated_at),
    }
}

#[utoipa::path(get, path = "/api/v1/admin/gateways", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "All gateways", body = List<Gateway>), ApiErrors))]
pub async fn list_gateways(State(c): C, _admin: Admin) -> ApiResult<Json<List<Gateway>>> {
    let items = c
        .store
        .list_gateways()
        .await?
        .iter()
        .map(gateway_view)
        .collect();
    Ok(Json(List { items }))
}

/// A SAN is a DNS name or an IP address; wildcards are refused.
fn valid_san(san: &str) -> bool {
    san.parse::<std::net::IpAddr>().is_ok()
        || ((1..=253).contains(&san.len())
            && san.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

#[utoipa::path(post, path = "/api/v1/admin/gateways", tag = "admin", request_body = CreateGatewayRequest, security(("bearer" = [])), responses((status = 200, description = "A one-time gateway enrollment token", body = GatewayToken), ApiErrors))]
pub async fn create_gateway(
    State(c): C,
    admin: Admin,
    ApiJson(req): ApiJson<CreateGatewayRequest>,
) -> ApiResult<Json<GatewayToken>> {
    if !umbra_pki::spiffe::valid_gateway_name(&req.name) {
        return Err(Failure::invalid(
            "name: 1-63 lowercase letters, digits and '-'",
        ));
    }
    if req.sans.is_empty() || req.sans.len() > 32 || !req.sans.iter().all(|s| valid_san(s)) {
        return Err(Failure::invalid(
            "sans: 1-32 DNS names or IP addresses (no wildcards)",
        ));
    }
    let ttl = match req.ttl_seconds {
        None => c.config.enrollment_token_ttl_secs,
        Some(t) if (60..=30 * 86400).contains(&t) => t as i64,
        Some(_) => return Err(Failure::invalid("ttl_seconds: must be 60..=2592000")),
    };
    let now = c.now();
    let secret = secrets::random_secret();
    let record = NewGateway {
        name: req.name.clone(),
        sans: req.sans.clone(),
        token_hash: secrets::hash_secret(&secret),
        token_expires_at: now + ttl,
        created_by: admin.actor.clone(),
        now,
    };
    if !c.store.put_gateway_token(&record).await? {
        return Err(Failure::new(
            ErrorCode::Conflict,
            "gateway is revoked; choose another name",
        ));
    }
    admin
        .audit(
            &c,
            "gateway.token",
            &format!("gateway:{}", req.name),
            &format!("sans [{}]", req.sans.join(",")),
        )
        .await?;
    Ok(Json(GatewayToken {
        name: req.name,
        token: format!(
            "{}.{}.{secret}",
            secrets::GATEWAY_PREFIX,
            secrets::pin_text(&c.ca.pin())
        ),
        expires_at: rfc3339(record.token_expires_at),
    }))
}

#[utoipa::path(post, path = "/api/v1/admin/gateways/{name}/revoke", tag = "admin", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The revoked gateway", body = Gateway), ApiErrors))]
pub async fn revoke_gateway(
    State(c): C,
    admin: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Gateway>> {
    if c.store.gateway(&name).await?.is_none() {
        return Err(Failure::not_found("gateway"));
    }
    if !c.store.revoke_gateway(&name, c.now()).await? {
        return Err(Failure::new(
            ErrorCode::Conflict,
            "gateway is already revoked",
        ));
    }
    c.publish(&Event::GatewayRevoked { name: name.clone() })
        .await?;
    admin
        .audit(&c, "gateway.revoke", &format!("gateway:{name}"), "")
        .await?;
    let g = c
        .store
        .gateway(&name)
        .await?
        .ok_or_else(Failure::internal)?;
    Ok(Json(gateway_view(&g)))
}
