//! Registration and the control channel, seen from the gateway.
//!
//! The gateway registers (URL, routes, assertion key), then opens
//! `GET /api/v1/gateway/control?after=SEQ` and applies frames as they
//! arrive. On any break it reconnects with a bounded backoff and resumes
//! after the last applied sequence number; the controller answers with a
//! snapshot instead when the gap is older than its retained log. Once per
//! `resync_interval` it asks for a full snapshot anyway, a safety net under
//! the pushed events, not the way they arrive.
//!
//! Fail closed, bounded: while disconnected the gateway serves only the
//! sessions it has already seen (a new one could have been revoked where
//! it cannot hear), and the view ages; past `max_staleness` it refuses
//! every request and ends every live connection
//! ([`crate::view::View::is_fresh`]). Each outage is logged once as it
//! begins, once when the bound passes, and once when the channel is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use umbra_proto::control::{
    CONTROL_PATH, ControlFrame, Event, GatewayRegisterRequest, GatewayRegisterResponse, Route,
};

use crate::Gateway;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A single control line larger than this is a broken or hostile peer.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a session of the channel ended.
enum End {
    Shutdown,
    /// Reconnect and resume after the last applied event.
    Resume(String),
    /// Reconnect and ask for a full snapshot.
    Resync(String),
    Revoked,
}

pub async fn register(gw: &Gateway) -> Result<GatewayRegisterResponse, String> {
    let body = GatewayRegisterRequest {
        spa_port: gw.spa_port,
        url: gw.config.public_url.clone(),
        routes: gw
            .config
            .routes
            .iter()
            .map(|r| Route {
                service: r.service.clone(),
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                protocol: r.protocol,
            })
            .collect(),
        assertion_jwk: serde_json::to_value(&gw.identity.assertion.jwk)
            .map_err(|e| e.to_string())?,
    };
    let url = format!("{}/api/v1/gateway/register", gw.config.controller_url);
    let resp = gw
        .controller()
        .post(&url)
        .timeout(Duration::from_secs(15))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "registration refused (HTTP {status}): {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let reg: GatewayRegisterResponse =
        serde_json::from_slice(&bytes).map_err(|e| format!("registration response: {e}"))?;
    *gw.issuer
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reg.token_issuer.clone());
    Ok(reg)
}

/// Keeps the view in sync until `shutdown`.
pub async fn run(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    // `umbra dev` registers before serving; a gateway process registers here.
    let mut registered = gw
        .issuer
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some();
    let mut want_snapshot = true;
    // Said once per outage, not at every retry.
    let mut stale_logged = false;
    loop {
        if !registered {
            match register(&gw).await {
                Ok(reg) => {
                    tracing::info!(name = %reg.name, "registered with the controller");
                    registered = true;
                }
                Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
            }
        }
        let end = if registered {
            session(&gw, &shutdown, want_snapshot).await
        } else {
            End::Resume("not registered".into())
        };
        // Whether this break ends a working channel (said once per outage).
        let was_connected =
            gw.view.seq().is_some() && gw.view.read().connected.swap(false, Ordering::Relaxed);
        match end {
            End::Shutdown => return,
            End::Revoked => {
                tracing::error!("this gateway was revoked by the controller; refusing all traffic");
                gw.revoked.store(true, Ordering::SeqCst);
                return;
            }
            End::Resume(why) => {
                let fresh_for = gw.view.fresh_for();
                if was_connected {
                    tracing::warn!(
                        reason = %why,
                        fresh_for_secs = fresh_for,
                        "control channel lost; serving sessions already seen, refusing new \
                         ones, and everything once the view is stale; reconnecting"
                    );
                } else if fresh_for <= 0 && !stale_logged {
                    tracing::error!(
                        reason = %why,
                        "controller unreachable past the staleness bound: refusing every \
                         request until it is back"
                    );
                    stale_logged = true;
                }
                want_snapshot = false;
            }
            End::Resync(why) => {
                tracing::info!(reason = %why, "control channel: full resync");
                want_snapshot = true;
                backoff = Duration::ZERO;
            }
        }
        if gw.view.is_fresh() {
            // The channel was working: a fresh break gets a quick retry.
            backoff = backoff.min(BACKOFF_MIN);
            stale_logged = false;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        if gw.view.seq().is_none() {
            want_snapshot = true;
        }
    }
}

async fn session(gw: &Gateway, shutdown: &CancellationToken, snapshot: bool) -> End {
    let after = if snapshot { None } else { gw.view.seq() };
    let mut url = format!("{}{CONTROL_PATH}", gw.config.controller_url);
    if let Some(seq) = after {
        url.push_str(&format!("?after={seq}"));
    }
    let resp = tokio::select! {
        () = shutdown.cancelled() => return End::Shutdown,
        r = gw.controller().get(&url).send() => r,
    };
    let mut resp = match resp {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return End::Resume(format!("HTTP {}", r.status())),
        Err(e) => return End::Resume(e.to_string()),
    };
    let resync = tokio::time::sleep(gw.config.resync_interval);
    tokio::pin!(resync);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            () = shutdown.cancelled() => return End::Shutdown,
            () = &mut resync => return End::Resync("periodic".into()),
            c = resp.chunk() => c,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => return End::Resume("closed by the controller".into()),
            Err(e) => return End::Resume(e.to_string()),
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Some(end) = apply_line(gw, &line[..line.len() - 1]) {
                return end;
            }
        }
        if buf.len() > MAX_LINE {
            return End::Resync("oversized control line".into());
        }
    }
}

/// Cuts the live connections the view now lists as revoked, and closes
/// the pinholes of revoked devices and suspended users.
fn cut_revoked(gw: &Gateway) {
    let cut = gw.live.cut_revoked(&gw.view.read(), gw.now());
    if cut > 0 {
        tracing::info!(sessions = cut, "live connections cut on revocation");
    }
    crate::spa::close_revoked(gw);
}

fn apply_line(gw: &Gateway, line: &[u8]) -> Option<End> {
    if line.is_empty() {
        return None;
    }
    // A revocation's latency at this gateway counts from here.
    let received = tokio::time::Instant::now();
    if gw.view.seq().is_some() && !gw.view.read().connected.load(Ordering::Relaxed) {
        tracing::info!("control channel restored; new sessions are served again");
    }
    let frame: ControlFrame = match serde_json::from_slice(line) {
        Ok(f) => f,
        // A kind this gateway does not know: do not guess, start over from
        // a snapshot (which reflects the event's effect).
        Err(e) => return Some(End::Resync(format!("unreadable frame: {e}"))),
    };
    match frame {
        ControlFrame::Snapshot { seq, state } => {
            tracing::info!(seq, grants = state.grants.len(), "snapshot applied");
            gw.view.apply_snapshot(seq, &state);
            // It may carry revocations this gateway never saw as events.
            cut_revoked(gw);
        }
        ControlFrame::Event { seq, event } => {
            if let Err(e) = gw.view.apply_event(seq, &event) {
                return Some(End::Resume(e.to_string()));
            }
            tracing::info!(seq, kind = event.kind(), "event applied");
            if matches!(
                event,
                Event::SessionRevoked { .. }
                    | Event::UserSuspended { .. }
                    | Event::DeviceRevoked { .. }
                    | Event::CertificateRevoked { .. }
                    | Event::SourceBlocked { .. }
            ) {
                cut_revoked(gw);
                gw.metrics.revocation_applied(received);
            }
            crate::spa::firewall_block(gw, &event);
            match &event {
                Event::SessionRevoked { session } => gw.assertions.forget(session),
                Event::GatewayRevoked { name } if name == gw.name() => {
                    return Some(End::Revoked);
                }
                // The new policy comes with a snapshot (unless the last
                // one already carried it).
                Event::PolicyChanged { revision } if gw.view.read().policy.revision < *revision => {
                    return Some(End::Resync(format!("policy revision {revision}")));
                }
                _ => {}
            }
        }
        ControlFrame::Heartbeat { .. } => gw.view.touch(),
    }
    None
}
