//! The agent's calls to the controller: enrollment (trusting the CA pinned
//! in the token), then everything else over mTLS with the device
//! certificate and the CA kept at enrollment.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use umbra_proto::ErrorBody;
use umbra_proto::api::{EnrollRequest, EnrollResponse, LoginRequest, LoginResponse, Session};
use zeroize::Zeroizing;

use crate::AgentError;
use crate::dir::{AgentDir, AgentState, write_file};

fn client(tls: rustls::ClientConfig) -> Result<reqwest::Client, AgentError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| AgentError::Network(e.to_string()))
}

async fn call<T: DeserializeOwned>(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&impl Serialize>,
) -> Result<T, AgentError> {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| AgentError::Network(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| AgentError::Network(e.to_string()))?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => AgentError::Refused {
                code: b.error.code.as_str().to_owned(),
                message: b.error.message,
            },
            Err(_) => AgentError::Network(format!("{url}: HTTP {status}")),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| AgentError::Network(format!("{url}: unexpected response: {e}")))
}

/// The CA pin inside an enrollment token `ue1.<pin>.<secret>`.
fn token_pin(token: &str) -> Result<[u8; 32], AgentError> {
    let bad = || AgentError::State("not an enrollment token (ue1.…)".into());
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ue1"), Some(pin), Some(_), None) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(pin)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Enrolls this device: a fresh key (kept in `dir`, mode 0600), a CSR and
/// the posture report, sent with the one-time token.
pub async fn enroll(
    dir: &AgentDir,
    controller_url: &str,
    token: &str,
) -> Result<EnrollResponse, AgentError> {
    let controller_url = controller_url.trim_end_matches('/');
    if !controller_url.starts_with("https://") {
        return Err(AgentError::State(
            "the controller URL must start with https://".into(),
        ));
    }
    let pin = token_pin(token)?;
    let http = client(umbra_pki::tls::pinned_client_config(pin)?)?;
    dir.create()?;
    let posture = crate::device::local_posture("pending");
    let key = crate::device::new_key_and_csr(&posture.hostname)?;
    let url = format!("{controller_url}/api/v1/enroll");
    let enrolled: EnrollResponse = call(
        &http,
        reqwest::Method::POST,
        &url,
        None,
        Some(&EnrollRequest {
            token: token.to_owned(),
            csr_pem: key.csr_pem,
            posture,
        }),
    )
    .await?;
    let ca = rustls_pki_types::pem::PemObject::from_pem_slice(enrolled.ca_pem.as_bytes())
        .map_err(|e| AgentError::State(format!("CA certificate: {e}")))?;
    if umbra_pki::tls::ca_pin(&ca) != pin {
        return Err(AgentError::State(
            "the controller returned a CA that does not match the token's pin".into(),
        ));
    }
    write_file(&dir.file("device.key"), &key.key_pem, true)?;
    write_file(&dir.file("device.crt"), &enrolled.certificate_pem, false)?;
    write_file(&dir.file("ca.pem"), &enrolled.ca_pem, false)?;
    if !enrolled.spa_secret.is_empty() {
        write_file(&dir.file("spa.key"), &enrolled.spa_secret, true)?;
    }
    let state = AgentState {
        controller_url: controller_url.to_owned(),
        device_id: enrolled.device_id.clone(),
        spiffe_id: enrolled.spiffe_id.clone(),
        dark: enrolled.dark,
    };
    let text =
        serde_json::to_string_pretty(&state).map_err(|e| AgentError::State(e.to_string()))?;
    write_file(&dir.file("agent.json"), &text, false)?;
    dir.clear_session()?;
    // The enrollment carried this posture: the schedule starts from it.
    let now = crate::posture::unix_now();
    if let Some(p) =
        crate::posture::schedule::pending(dir, &enrolled.device_id, std::path::Path::new("/"), now)
    {
        p.mark_sent(dir, now)?;
    }
    Ok(enrolled)
}

/// A client with the device certificate, the agent's state and the base
/// URL of the controller's login surface, knocked open first if the
/// controller is dark.
async fn mtls(dir: &AgentDir) -> Result<(reqwest::Client, AgentState, String), AgentError> {
    let state = dir.state()?;
    let tls = umbra_pki::tls::client_config(&dir.ca()?, Some(dir.identity()?))?;
    let base = crate::knock::ensure_controller(dir, &state).await?;
    Ok((client(tls)?, state, base))
}

/// The device certificate's validity (Unix seconds).
pub fn validity(dir: &AgentDir) -> Result<(i64, i64), AgentError> {
    let cert = dir.certificate()?;
    let (_, c) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| AgentError::State(format!("device certificate: {e}")))?;
    Ok((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// Renewal is due at two thirds of the certificate's life.
pub fn renewal_due(dir: &AgentDir, now: i64) -> Result<bool, AgentError> {
    let (not_before, not_after) = validity(dir)?;
    Ok(now >= not_before + (not_after - not_before) * 2 / 3)
}

/// Renews the device certificate with a fresh key, over mTLS with the
/// current one. The saved session is bound to the old certificate, so it
/// is dropped: the next login binds to the new one.
pub async fn renew(dir: &AgentDir) -> Result<EnrollResponse, AgentError> {
    let (http, state, base) = mtls(dir).await?;
    let hostname = crate::device::local_posture(&state.device_id).hostname;
    let key = crate::device::new_key_and_csr(&hostname)?;
    let url = format!("{base}/api/v1/devices/renew");
    let renewed: EnrollResponse = call(
        &http,
        reqwest::Method::POST,
        &url,
        None,
        Some(&umbra_proto::api::RenewRequest {
            csr_pem: key.csr_pem,
        }),
    )
    .await?;
    if renewed.device_id != state.device_id {
        return Err(AgentError::State(format!(
            "the controller renewed device {}, not {}",
            renewed.device_id, state.device_id
        )));
    }
    // Each file is replaced atomically; a crash between the two leaves a
    // pair that fails the next handshake loudly (enroll again), never a
    // device that silently presents someone else's identity.
    write_file(&dir.file("device.key"), &key.key_pem, true)?;
    write_file(&dir.file("device.crt"), &renewed.certificate_pem, false)?;
    dir.clear_session()?;
    Ok(renewed)
}

/// Logs `user` in with this device; the session is kept in `dir` (0600).
/// A device certificate past two thirds of its life is renewed first.
pub async fn login(
    dir: &AgentDir,
    user: &str,
    password: Zeroizing<String>,
    totp: Option<String>,
    recovery_code: Option<String>,
) -> Result<LoginResponse, AgentError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if renewal_due(dir, now)? {
        match renew(dir).await {
            Ok(r) => {
                tracing::info!(serial = %r.serial, not_after = %r.not_after, "device certificate renewed");
            }
            // The current certificate still has a third of its life: log in
            // with it and renew next time.
            Err(e) if validity(dir)?.1 > now + 300 => {
                tracing::warn!(error = %e, "device certificate renewal failed; logging in with the current one");
            }
            Err(e) => return Err(e),
        }
    }
    let (http, _, base) = mtls(dir).await?;
    let url = format!("{base}/api/v1/auth/login");
    let request = LoginRequest {
        user: user.to_owned(),
        password: password.to_string(),
        totp,
        recovery_code,
    };
    let session: LoginResponse =
        call(&http, reqwest::Method::POST, &url, None, Some(&request)).await?;
    dir.save_session(&session)?;
    Ok(session)
}

/// Step-up MFA: a fresh TOTP code for the live session; the new token
/// (same session, fresh MFA time) replaces the saved one, so `connect`
/// uses it from its next request.
pub async fn step_up(
    dir: &AgentDir,
    totp: &str,
) -> Result<umbra_proto::api::StepUpResponse, AgentError> {
    let mut session = dir.session()?.ok_or_else(|| {
        AgentError::State("not logged in; run `umbra agent login --user NAME`".into())
    })?;
    let (http, _, base) = mtls(dir).await?;
    let url = format!("{base}/api/v1/auth/step-up");
    let request = umbra_proto::api::StepUpRequest {
        totp: totp.trim().to_owned(),
    };
    let stepped: umbra_proto::api::StepUpResponse = call(
        &http,
        reqwest::Method::POST,
        &url,
        Some(&session.token),
        Some(&request),
    )
    .await?;
    session.token.clone_from(&stepped.token);
    session.expires_at.clone_from(&stepped.expires_at);
    dir.save_session(&session)?;
    Ok(stepped)
}

/// Ends the session at the controller (which revokes it at every gateway)
/// and forgets it here.
pub async fn logout(dir: &AgentDir) -> Result<Option<Session>, AgentError> {
    let Some(session) = dir.session()? else {
        return Ok(None);
    };
    let (http, _, base) = mtls(dir).await?;
    let url = format!("{base}/api/v1/auth/logout");
    let result: Result<Session, _> = call(
        &http,
        reqwest::Method::POST,
        &url,
        Some(&session.token),
        None::<&()>,
    )
    .await;
    dir.clear_session()?;
    match result {
        Ok(s) => Ok(Some(s)),
        // Already expired or revoked: nothing left to end.
        Err(AgentError::Refused { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The session as the controller sees it now, if there is one.
pub async fn session(dir: &AgentDir) -> Result<Option<Session>, AgentError> {
    let Some(saved) = dir.session()? else {
        return Ok(None);
    };
    let (http, _, base) = mtls(dir).await?;
    let url = format!("{base}/api/v1/auth/session");
    match call(
        &http,
        reqwest::Method::GET,
        &url,
        Some(&saved.token),
        None::<&()>,
    )
    .await
    {
        Ok(s) => Ok(Some(s)),
        Err(AgentError::Refused { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends this device's posture if it changed or the last report is old
/// (see [`crate::posture::schedule`]); `Ok(None)` when nothing was due.
pub async fn report_posture(
    dir: &AgentDir,
    root: &std::path::Path,
) -> Result<Option<umbra_proto::api::PostureReceipt>, AgentError> {
    let now = crate::posture::unix_now();
    let state = dir.state()?;
    let Some(pending) = crate::posture::schedule::pending(dir, &state.device_id, root, now) else {
        return Ok(None);
    };
    let (http, _, base) = mtls(dir).await?;
    let url = format!("{base}/api/v1/devices/posture");
    let receipt: umbra_proto::api::PostureReceipt = call(
        &http,
        reqwest::Method::POST,
        &url,
        None,
        Some(&umbra_proto::api::PostureUpdate {
            posture: pending.report.clone(),
        }),
    )
    .await?;
    pending.mark_sent(dir, now)?;
    Ok(Some(receipt))
}

/// Reports posture every `every` (when due) until `shutdown`; failures are
/// logged and retried at the next tick.
pub async fn report_posture_periodically(
    dir: AgentDir,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match report_posture(&dir, std::path::Path::new("/")).await {
            Ok(Some(r)) => tracing::info!(device = %r.device_id, "posture reported"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "posture report failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
