//! TCP tunnels: a TLS connection negotiated with ALPN `umbra-tunnel/1`
//! carries one TCP stream to a service (SSH, PostgreSQL, …).
//!
//! The agent's first line names the service and carries the session
//! token; the gateway checks it exactly as it checks an HTTP request (the
//! device certificate of this connection, the token bound to it, the deny
//! lists, the service's grant; an ungranted service and a nonexistent one
//! get the same refusal), connects to the upstream and answers with one
//! line. From then on bytes flow both ways with backpressure and half-close
//! (`copy_bidirectional`). While it flows, the tunnel is re-checked against
//! the view every 250 ms: a revoked session, device or user, a withdrawn
//! grant, the session's expiry, a stale view or a revoked gateway closes
//! it; so does the gateway's shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use umbra_proto::ErrorCode;
use umbra_proto::control::{
    GatewayAuditRecord, MAX_TUNNEL_FRAME, Protocol, TunnelOpen, TunnelReply,
};
use umbra_proto::token::SessionClaims;

use crate::Gateway;
use crate::live::Holder;
use crate::metrics::Decision;
use crate::policy::{STEP_UP_MESSAGE, Target, explain};
use crate::proxy::Conn;

/// How long an agent has to send its opening line.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a live tunnel is re-checked against the view.
const RECHECK: Duration = Duration::from_millis(250);

/// Reads one `\n`-terminated line of at most [`MAX_TUNNEL_FRAME`] bytes,
/// byte by byte so nothing after it is consumed.
pub async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(256);
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_TUNNEL_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "tunnel frame too long",
            ));
        }
        line.push(b);
    }
}

async fn reply<S: AsyncWrite + Unpin>(s: &mut S, r: &TunnelReply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    s.write_all(&line).await?;
    s.flush().await
}

fn refusal(code: ErrorCode, message: &str) -> TunnelReply {
    TunnelReply {
        ok: false,
        error: Some(code),
        message: message.into(),
    }
}

fn record(
    gw: &Gateway,
    conn: &Conn,
    actor: &str,
    resource: &str,
    outcome: &str,
    reason: &str,
) -> GatewayAuditRecord {
    GatewayAuditRecord {
        ts: gw.now(),
        actor: actor.into(),
        source_ip: conn.addr.ip().to_string(),
        action: "gateway.tunnel".into(),
        resource: resource.into(),
        outcome: outcome.into(),
        reason: reason.into(),
        request_id: String::new(),
        count: 1,
        transfer: None,
    }
}

/// Serves one tunnel connection to its end.
pub async fn serve<S>(gw: Arc<Gateway>, conn: Conn, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let device_actor = format!("device:{}", conn.peer.device_id);
    let deny = |actor: &str, resource: &str, reason: &str| {
        record(&gw, &conn, actor, resource, "deny", reason)
    };
    let open = match tokio::time::timeout(OPEN_TIMEOUT, read_line(&mut stream)).await {
        Ok(Ok(line)) => serde_json::from_slice::<TunnelOpen>(&line).ok(),
        _ => None,
    };
    let unrouted = gw.metrics.unrouted();
    let Some(open) = open else {
        unrouted.count(Decision::Deny);
        gw.audit
            .record(deny(&device_actor, "-", "tunnel_open_malformed_or_late"));
        let _ = reply(
            &mut stream,
            &refusal(ErrorCode::InvalidRequest, "invalid tunnel opening"),
        )
        .await;
        return;
    };
    let resource = format!(
        "service:{}",
        open.service.chars().take(64).collect::<String>()
    );
    let unavailable = if gw.revoked.load(std::sync::atomic::Ordering::SeqCst) {
        Some("gateway_revoked")
    } else if !gw.view.is_fresh() {
        Some("gateway_state_stale")
    } else {
        None
    };
    if let Some(reason) = unavailable {
        unrouted.count(Decision::Deny);
        gw.audit.record(deny(&device_actor, &resource, reason));
        let _ = reply(
            &mut stream,
            &refusal(ErrorCode::Unavailable, "service unavailable, retry later"),
        )
        .await;
        return;
    }
    let issuer = gw
        .issuer
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or_default();
    let verified = {
        let view = gw.view.read();
        crate::authn::verify(&view, &issuer, &open.token, &conn.peer, gw.now())
    };
    let claims = match verified {
        Ok(c) => c,
        Err(reason) => {
            unrouted.count(Decision::Deny);
            gw.audit
                .record_durable(deny(&device_actor, &resource, reason))
                .await;
            let _ = reply(
                &mut stream,
                &refusal(ErrorCode::AuthenticationFailed, "authentication failed"),
            )
            .await;
            return;
        }
    };
    let actor = format!("user:{}", claims.sub);
    let route = gw
        .config
        .routes
        .iter()
        .find(|r| r.protocol == Protocol::Tcp && r.service == open.service);
    let counters = route.map_or(unrouted, |r| gw.metrics.service(&r.service));
    let target = route.map(|r| Target {
        service: r.service.clone(),
        method: None,
        path: None,
        port: r.upstream.port_u16(),
    });
    let decision = target.as_ref().map(|t| {
        let v = gw.view.read();
        v.decide(&t.ask(&claims, &conn.peer.spiffe_id, conn.addr.ip(), gw.now()))
    });
    let (route, target, explanation) = match (route, target, decision) {
        (Some(r), Some(t), Some(d)) if d.allowed() => (r, t, explain(&d)),
        (_, _, Some(d)) if d.needs_step_up() => {
            counters.count(Decision::StepUp);
            gw.audit
                .record_durable(deny(
                    &actor,
                    &resource,
                    &format!("step_up_required: {}", explain(&d)),
                ))
                .await;
            let _ = reply(
                &mut stream,
                &refusal(ErrorCode::StepUpRequired, STEP_UP_MESSAGE),
            )
            .await;
            return;
        }
        (_, _, d) => {
            counters.count(Decision::Deny);
            let reason = d.map_or_else(|| "no_tcp_route".to_owned(), |d| explain(&d));
            gw.audit
                .record_durable(deny(&actor, &resource, &reason))
                .await;
            // The same answer for a service that exists and one that does not.
            let _ = reply(&mut stream, &refusal(ErrorCode::NotFound, "not found")).await;
            return;
        }
    };
    // Allowed, whether or not the upstream answers (as the audit says).
    counters.count(Decision::Allow);
    let upstream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(route.upstream.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            tracing::warn!(service = %route.service, upstream = %route.upstream, "TCP upstream unreachable");
            gw.audit.record(record(
                &gw,
                &conn,
                &actor,
                &resource,
                "allow",
                &format!("{explanation}; upstream unreachable"),
            ));
            let _ = reply(
                &mut stream,
                &refusal(ErrorCode::UpstreamUnavailable, "upstream unavailable"),
            )
            .await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if reply(
        &mut stream,
        &TunnelReply {
            ok: true,
            error: None,
            message: String::new(),
        },
    )
    .await
    .is_err()
    {
        return;
    }
    gw.audit.record(record(
        &gw,
        &conn,
        &actor,
        &resource,
        "allow",
        &format!("{explanation}; tunnel opened"),
    ));
    relay(
        &gw, &conn, &claims, &target, stream, upstream, &actor, &resource,
    )
    .await;
}

/// How a relay ended.
pub enum Ended {
    /// One side closed (bytes up, bytes down).
    Closed(u64, u64),
    Failed(std::io::Error),
    /// The session stopped being authorized; both sides were dropped.
    Cut(String),
    Shutdown,
}

/// Relays `a` ⇄ `b` (backpressure and half-close from
/// `copy_bidirectional`) while the session stays authorized for `target`,
/// re-checked every [`RECHECK`].
pub async fn relay_checked<A, B>(
    gw: &Gateway,
    conn: &Conn,
    claims: &SessionClaims,
    target: &Target,
    mut a: A,
    mut b: B,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let live = gw.live.register(Holder {
        session: claims.sid.clone(),
        user: claims.sub.clone(),
        device: claims.device.clone(),
        serial: conn.peer.serial.clone(),
        source: conn.addr.ip(),
    });
    // Revoked between the decision and the registration: the control
    // channel's cut found nothing to cut, so look now.
    if let Err(why) = still_authorized(gw, conn, claims, target) {
        return Ended::Cut(why);
    }
    let mut tick = tokio::time::interval(RECHECK);
    let moved = Arc::new(AtomicU64::new(0));
    let mut a = Counted {
        inner: &mut a,
        bytes: moved.clone(),
    };
    let mut b = Counted {
        inner: &mut b,
        bytes: moved.clone(),
    };
    let mut reported = 0;
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => {
                report_transfer(gw, conn, claims, target, moved.load(Ordering::Relaxed), &mut reported, 1);
                return match r {
                    Ok((up, down)) => Ended::Closed(up, down),
                    Err(e) => Ended::Failed(e),
                };
            },
            () = gw.stop.cancelled() => return Ended::Shutdown,
            // A revocation pushed by the controller: at once.
            () = live.cut.cancelled() => {
                return Ended::Cut(
                    still_authorized(gw, conn, claims, target)
                        .err()
                        .unwrap_or_else(|| "revoked".to_owned()),
                );
            }
            _ = tick.tick() => {
                report_transfer(gw, conn, claims, target, moved.load(Ordering::Relaxed), &mut reported, REPORT_EVERY);
                if let Err(why) = still_authorized(gw, conn, claims, target) {
                    return Ended::Cut(why);
                }
            }
        }
    }
}

/// Bytes between two transfer reports of one connection.
const REPORT_EVERY: u64 = 8 << 20;

/// Tells the controller's threat detection how much a session has moved
/// over this connection (`gateway.transfer`), every [`REPORT_EVERY`] bytes
/// and at the end (`step` 1): one session moving a lot is an exfiltration
/// signal that per-request records do not show.
fn report_transfer(
    gw: &Gateway,
    conn: &Conn,
    claims: &SessionClaims,
    target: &Target,
    total: u64,
    reported: &mut u64,
    step: u64,
) {
    if total < reported.saturating_add(step) || total == *reported {
        return;
    }
    let moved = total - *reported;
    *reported = total;
    gw.audit.record(GatewayAuditRecord {
        ts: gw.now(),
        actor: format!("user:{}", claims.sub),
        source_ip: conn.addr.ip().to_string(),
        action: "gateway.transfer".into(),
        resource: format!("service:{}", target.service),
        outcome: "allow".into(),
        reason: format!(
            "{moved} bytes more ({total} over this connection) in session {}",
            claims.sid
        ),
        request_id: String::new(),
        count: 1,
        transfer: Some(umbra_proto::control::Transfer {
            session: claims.sid.clone(),
            bytes: moved,
        }),
    });
}

/// Counts the bytes read through a stream (both ends of a relay are
/// wrapped, so reads on both count both directions).
struct Counted<'a, S> {
    inner: &'a mut S,
    bytes: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len().saturating_sub(before);
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Relays a tunnel and records how it ended.
#[allow(clippy::too_many_arguments)]
async fn relay<S>(
    gw: &Gateway,
    conn: &Conn,
    claims: &SessionClaims,
    target: &Target,
    stream: S,
    upstream: TcpStream,
    actor: &str,
    resource: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (outcome, reason) = match relay_checked(gw, conn, claims, target, stream, upstream).await {
        Ended::Closed(up, down) => (
            "allow",
            format!("tunnel closed: {up} bytes up, {down} down"),
        ),
        Ended::Failed(e) => ("allow", format!("tunnel ended: {e}")),
        Ended::Cut(why) => ("deny", format!("tunnel cut: {why}")),
        Ended::Shutdown => ("allow", "tunnel closed: gateway shutting down".to_owned()),
    };
    gw.audit
        .record(record(gw, conn, actor, resource, outcome, &reason));
}

/// Whether a live connection may go on: the gateway is in service and in
/// touch with the controller, the session is unexpired and unrevoked, and
/// the policy still allows what the connection was opened for. A decision
/// that now wants a step-up does not cut it: step-up is asked of new
/// access, and this one was allowed when it began.
pub fn still_authorized(
    gw: &Gateway,
    conn: &Conn,
    claims: &SessionClaims,
    target: &Target,
) -> Result<(), String> {
    if gw.revoked.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("gateway_revoked".into());
    }
    if !gw.view.is_fresh() {
        return Err("gateway_state_stale".into());
    }
    let now = gw.now();
    if claims.exp <= now {
        return Err("session_expired".into());
    }
    let v = gw.view.read();
    if v.sessions.contains(&claims.sid) {
        return Err("session_revoked".into());
    }
    if v.users.contains(&claims.sub) {
        return Err("user_suspended".into());
    }
    if v.devices.contains(&claims.device) || v.certificates.contains(&conn.peer.serial) {
        return Err("device_revoked".into());
    }
    // The controller's re-evaluation asking for a step-up is not like a
    // rule's MFA age: something about this session changed, so what it
    // has open ends too, until its subject proves they are still there.
    if let Some(since) = crate::policy::step_up_owed(claims, v.verdicts.get(&claims.sid)) {
        return Err(format!(
            "step_up_required: the controller's re-evaluation asks for an MFA since {since}"
        ));
    }
    let decision = v.decide(&target.ask(claims, &conn.peer.spiffe_id, conn.addr.ip(), now));
    if decision.allowed() || decision.needs_step_up() {
        Ok(())
    } else {
        Err(format!("policy_withdrawn: {}", explain(&decision)))
    }
}
