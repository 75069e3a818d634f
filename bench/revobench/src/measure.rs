//! One timed revocation: t0 just before the admin request is written on
//! the warm keep-alive connection; t1 when the session's live tunnel reads
//! its end (EOF, or an error such as a reset or a TLS stream cut without
//! close_notify). The request and the read run concurrently, so a cut that
//! lands before the API's response is timed as such.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::admin::Admin;
use crate::setup::{Live, echo};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// `POST /api/v1/admin/sessions/{id}/revoke`
    RevokeSession,
    /// `POST /api/v1/admin/users/{name}/suspend`
    SuspendUser,
}

impl How {
    pub fn name(self) -> &'static str {
        match self {
            How::RevokeSession => "revoke-session",
            How::SuspendUser => "suspend-user",
        }
    }

    fn path(self, live: &Live) -> String {
        match self {
            How::RevokeSession => format!("/api/v1/admin/sessions/{}/revoke", live.session_id),
            How::SuspendUser => format!("/api/v1/admin/users/{}/suspend", live.user),
        }
    }
}

pub struct Sample {
    pub gateway: String,
    /// t1 − t0, ms; `None` when the tunnel was not closed within the timeout.
    pub close_ms: Option<f64>,
    /// Request sent → response read, ms.
    pub response_ms: f64,
    /// How the tunnel ended: `eof`, or the I/O error's kind.
    pub end: String,
}

/// Revokes `live` and times its tunnel's end; `Err` for what is not a
/// measurement at all (the tunnel was already dead, the API call failed).
pub async fn one(
    admin: &mut Admin,
    live: &mut Live,
    how: How,
    timeout: Duration,
) -> Result<Sample, String> {
    echo(&mut live.stream, "before revocation")
        .await
        .map_err(|e| format!("{}: tunnel not live before its revocation: {e}", live.user))?;
    admin
        .ready()
        .await
        .map_err(|e| format!("admin connection: {e}"))?;
    let path = how.path(live);
    let stream = &mut live.stream;
    let t0 = Instant::now();
    let request = async {
        let r = admin.call("POST", &path, None).await;
        (r, t0.elapsed())
    };
    let closed = async {
        let deadline = tokio::time::Instant::from_std(t0) + timeout;
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return (None, "timeout".to_owned()),
                Ok(Ok(0)) => return (Some(t0.elapsed()), "eof".to_owned()),
                // Nothing is in flight: bytes here would be a stray echo.
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return (Some(t0.elapsed()), format!("{:?}", e.kind())),
            }
        }
    };
    let ((response, response_at), (closed_at, end)) = tokio::join!(request, closed);
    let (status, body) = response.map_err(|e| format!("POST {path}: {e}"))?;
    if status != 200 {
        return Err(format!(
            "POST {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(Sample {
        gateway: live.gateway.clone(),
        close_ms: closed_at.map(|d| d.as_secs_f64() * 1000.0),
        response_ms: response_at.as_secs_f64() * 1000.0,
        end,
    })
}
