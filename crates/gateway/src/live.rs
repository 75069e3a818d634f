//! The live connections of each session (TCP tunnels, upgraded WebSockets,
//! streaming HTTP responses), so a revocation cuts them the moment it
//! arrives instead of at the next periodic re-check.
//!
//! Every relay registers its session (with the user, device and
//! certificate it runs under) and gets a token that is cancelled when any
//! of them is revoked; the relay then re-checks to name the reason and ends.
//! The periodic re-check stays: it is what catches a policy that stops
//! allowing the connection, and expiry.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use tokio_util::sync::CancellationToken;

use crate::view::Inner;

/// Who a live connection runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub session: String,
    pub user: String,
    pub device: String,
    /// The client certificate's serial.
    pub serial: String,
    /// Where the connection comes from.
    pub source: std::net::IpAddr,
}

struct Entry {
    /// Tells this entry from a later one under the same key.
    id: u64,
    holder: Holder,
    cut: CancellationToken,
    /// Live connections sharing `cut`.
    count: usize,
}

/// The registry; one per gateway.
#[derive(Default)]
pub struct LiveSessions {
    // Keyed by session and certificate: one session's connections over
    // different certificates (after a renewal) are cut separately.
    entries: Mutex<HashMap<(String, String), Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LiveSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSessions")
            .field("sessions", &self.lock().len())
            .finish()
    }
}

/// A registered connection; dropping it unregisters.
pub struct Registration {
    live: Arc<LiveSessions>,
    key: (String, String),
    id: u64,
    pub cut: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut entries = self.live.lock();
        if let Some(e) = entries.get_mut(&self.key)
            && e.id == self.id
        {
            e.count -= 1;
            if e.count == 0 {
                entries.remove(&self.key);
            }
        }
    }
}

impl LiveSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers one live connection of `holder`.
    pub fn register(self: &Arc<Self>, holder: Holder) -> Registration {
        let key = (holder.session.clone(), holder.serial.clone());
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            holder,
            cut: CancellationToken::new(),
            count: 0,
        });
        entry.count += 1;
        let (cut, id) = (entry.cut.clone(), entry.id);
        Registration {
            live: self.clone(),
            key,
            id,
            cut,
        }
    }

    /// Cuts every connection whose session, user, device or certificate
    /// the view now lists as revoked, or whose source it blocks. Returns
    /// how many sessions were cut.
    pub fn cut_revoked(&self, view: &Inner, now: i64) -> usize {
        let mut entries = self.lock();
        let mut cut = 0;
        entries.retain(|_, e| {
            let h = &e.holder;
            let revoked = view.sessions.contains(&h.session)
                || view.users.contains(&h.user)
                || view.devices.contains(&h.device)
                || view.certificates.contains(&h.serial)
                || view.is_blocked(h.source, now);
            if revoked {
                e.cut.cancel();
                cut += 1;
            }
            // A cut entry is forgotten now; its registrations find it gone.
            !revoked
        });
        cut
    }

    /// Sessions with at least one live connection, and the connections.
    pub fn counts(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.len(), entries.values().map(|e| e.count).sum())
    }

    /// Sessions with at least one live connection.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a response body was ended early.
#[derive(Debug, thiserror::Error)]
#[error("the session was revoked: response cut")]
pub struct CutError;

/// A response body that ends with an error — the client sees the
/// connection or stream reset, never a truncated body passing for whole —
/// the moment its session is revoked.
pub struct CutBody<B> {
    inner: B,
    cut: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    _live: Registration,
}

impl<B> CutBody<B> {
    pub fn new(inner: B, live: Registration) -> Self {
        Self {
            inner,
            cut: Box::pin(live.cut.clone().cancelled_owned()),
            _live: live,
        }
    }
}

impl<B> Body for CutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(CutError))));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
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

    fn holder(session: &str, user: &str) -> Holder {
        Holder {
            session: session.into(),
            user: user.into(),
            device: format!("dev-{user}"),
            serial: format!("serial-{session}"),
            source: "10.0.0.1".parse().expect("ip"),
        }
    }

    #[test]
    fn a_revocation_cuts_the_matching_sessions_only() {
        let live = Arc::new(LiveSessions::default());
        let a1 = live.register(holder("s1", "alice"));
        let a2 = live.register(holder("s1", "alice"));
        let b = live.register(holder("s2", "bob"));
        let c = live.register(holder("s3", "carol"));
        assert_eq!(live.len(), 3);

        let mut view = Inner::default();
        view.sessions.insert("s1".into());
        assert_eq!(live.cut_revoked(&view, 0), 1);
        assert!(a1.cut.is_cancelled() && a2.cut.is_cancelled());
        assert!(!b.cut.is_cancelled());

        let mut view = Inner::default();
        view.users.insert("bob".into());
        view.devices.insert("dev-carol".into());
        assert_eq!(live.cut_revoked(&view, 0), 2);
        assert!(b.cut.is_cancelled() && c.cut.is_cancelled());
        assert!(live.is_empty());
        // Dropping registrations of cut entries is harmless.
        drop((a1, a2, b, c));
        assert!(live.is_empty());
    }

    #[test]
    fn a_certificate_revocation_cuts_its_connections_and_the_last_drop_forgets() {
        let live = Arc::new(LiveSessions::default());
        let one = live.register(holder("s1", "alice"));
        let mut view = Inner::default();
        view.certificates.insert("serial-other".into());
        assert_eq!(live.cut_revoked(&view, 0), 0);
        assert!(!one.cut.is_cancelled());
        drop(one);
        assert!(live.is_empty(), "unregistered when the connection ends");
        let two = live.register(holder("s1", "alice"));
        view.certificates.insert("serial-s1".into());
        assert_eq!(live.cut_revoked(&view, 0), 1);
        assert!(two.cut.is_cancelled());
    }
}
