//! Bytes a session moves in HTTP request and response bodies, for threat
//! detection's exfiltration rule (`gateway.transfer` records). Tunnels and
//! WebSockets report their own, per connection ([`crate::tunnel`]).
//!
//! Bodies are small and many, so they are not reported one by one: each
//! body counts its data frames, and adds them to its session's tally every
//! [`FLUSH_EVERY`] bytes and when it ends; a tally
//! reaching [`REPORT_FROM`] becomes one record and starts again. What a
//! session moves is thus reported within 8 MiB per gateway (a session
//! that never reaches it moved too little to matter for a 100 MB rule),
//! at one map update per body and at most one record per 8 MiB, as often
//! as a tunnel reports (a download at 1 GB/s is 120 records a second to
//! store, not one per response).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use umbra_proto::control::{GatewayAuditRecord, Transfer};

use crate::Gateway;

/// A session's tally becomes a record from this many bytes (a tunnel's
/// `REPORT_EVERY`).
pub const REPORT_FROM: u64 = 8 << 20;
/// A long body adds to its session's tally every this many bytes (so
/// concurrent bodies of a session are not each 8 MiB behind).
const FLUSH_EVERY: u64 = 1 << 20;
/// Sessions tallied at most (a memory bound: past it the small remainders
/// are forgotten, each under [`REPORT_FROM`]).
const MAX_SESSIONS: usize = 100_000;

/// Unreported bytes per session.
#[derive(Debug, Default)]
pub struct Transfers {
    pending: Mutex<HashMap<String, u64>>,
}

impl Transfers {
    /// Adds `bytes` to `session`'s tally; the tally, when it reached
    /// [`REPORT_FROM`] (it starts again from zero).
    pub fn add(&self, session: &str, bytes: u64) -> Option<u64> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_SESSIONS && !pending.contains_key(session) {
            pending.clear();
        }
        // No key allocated for a session already tallied: the common case.
        match pending.get_mut(session) {
            Some(tally) => {
                *tally = tally.saturating_add(bytes);
                if *tally < REPORT_FROM {
                    return None;
                }
                pending.remove(session)
            }
            None if bytes < REPORT_FROM => {
                pending.insert(session.to_owned(), bytes);
                None
            }
            None => Some(bytes),
        }
    }
}

/// Whose bytes they are (one per request, shared by its two bodies).
pub struct Owner {
    pub session: String,
    pub user: String,
    pub source: std::net::IpAddr,
    pub service: String,
}

/// A request or response body that counts what it carries to its session's tally.
pub struct CountedBody<B> {
    inner: B,
    gw: Arc<Gateway>,
    owner: Arc<Owner>,
    unreported: u64,
}

impl<B> CountedBody<B> {
    pub fn new(inner: B, gw: Arc<Gateway>, owner: Arc<Owner>) -> Self {
        Self {
            inner,
            gw,
            owner,
            unreported: 0,
        }
    }

    fn flush(&mut self) {
        let bytes = std::mem::take(&mut self.unreported);
        if bytes == 0 {
            return;
        }
        let Some(moved) = self.gw.transfers.add(&self.owner.session, bytes) else {
            return;
        };
        let o = &self.owner;
        self.gw.audit.record(GatewayAuditRecord {
            ts: self.gw.now(),
            actor: format!("user:{}", o.user),
            source_ip: o.source.to_string(),
            action: "gateway.transfer".into(),
            resource: format!("service:{}", o.service),
            outcome: "allow".into(),
            reason: format!("{moved} bytes more in HTTP bodies in session {}", o.session),
            request_id: String::new(),
            count: 1,
            transfer: Some(Transfer {
                session: o.session.clone(),
                bytes: moved,
            }),
        });
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.unreported += data.len() as u64;
            if self.unreported >= FLUSH_EVERY {
                self.flush();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_report_from_8_mib_per_session_and_start_again() {
        let t = Transfers::default();
        assert_eq!(t.add("a", 5 << 20), None);
        assert_eq!(t.add("b", 5 << 20), None, "per session");
        assert_eq!(t.add("a", 5 << 20), Some(10 << 20));
        assert_eq!(t.add("a", 1), None, "starts again");
        assert_eq!(t.add("c", 9 << 20), Some(9 << 20), "a big one at once");
    }
}
