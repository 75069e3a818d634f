//! Events for the gateways: stored first, then pushed.
//!
//! An event (a revocation, a changed grant, a key rotation) is appended to
//! the store's event log, which numbers it; then this controller's tail task
//! is woken, reads the new rows in order and broadcasts them to every open
//! control channel. Storing first means every controller sharing the store,
//! and every gateway that reconnects, sees the same events in the same
//! order: a gateway connected to another controller gets the event when
//! that controller's tail next reads the log (`event_poll`), one connected
//! here at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use umbra_proto::control::Event;

use crate::Controller;
use crate::error::Failure;

/// An event as read back from the log: its number and its JSON, passed on
/// verbatim (a gateway that does not understand a kind resynchronizes).
#[derive(Clone, Debug)]
pub struct Pushed {
    pub seq: i64,
    pub json: Arc<str>,
}

/// How many events a slow control channel may fall behind before it is
/// closed (the gateway then resumes from its last sequence number).
const CHANNEL_DEPTH: usize = 1024;
const PAGE: u32 = 256;
/// How long events stay replayable for reconnecting gateways.
pub const RETENTION_SECS: i64 = 3600;

pub struct EventHub {
    wake: Notify,
    tx: broadcast::Sender<Pushed>,
    stop: CancellationToken,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            wake: Notify::new(),
            tx: broadcast::channel(CHANNEL_DEPTH).0,
            stop: CancellationToken::new(),
        }
    }
}

impl EventHub {
    pub fn subscribe(&self) -> broadcast::Receiver<Pushed> {
        self.tx.subscribe()
    }

    /// Ends the tail and every control channel (server shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Open control channels (each holds one subscription).
    pub fn channels(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }
}

impl Controller {
    /// Stores `event` and pushes it. The caller's change is already made;
    /// if the event cannot be stored the request fails (503) so the operator
    /// retries, and gateways still converge at their next resynchronization.
    pub async fn publish(&self, event: &Event) -> Result<i64, Failure> {
        let payload = serde_json::to_string(event).map_err(|_| Failure::internal())?;
        let seq = self
            .store
            .append_event(self.now(), event.kind(), &payload)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, kind = event.kind(), "event could not be stored");
                Failure::unavailable()
            })?;
        self.events.wake.notify_one();
        self.metrics.published(event.kind());
        Ok(seq)
    }
}

/// Reads the event log in order and broadcasts what is new: at once when
/// this controller published, every `poll` for the other controllers' events.
/// Also prunes events past their retention and idle rate-limit buckets,
/// once a minute.
pub async fn tail(c: Arc<Controller>, poll: Duration) {
    let mut last = loop {
        match c.store.event_window().await {
            Ok(w) => break w.last,
            Err(e) => {
                tracing::warn!(error = %e, "event log unavailable; retrying");
                tokio::select! {
                    () = c.events.stop.cancelled() => return,
                    () = tokio::time::sleep(poll) => {}
                }
            }
        }
    };
    let mut pruned_at: Option<i64> = None;
    loop {
        tokio::select! {
            () = c.events.stop.cancelled() => return,
            () = c.events.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
        loop {
            let batch = match c.store.events_after(last, PAGE).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "event log read failed");
                    break;
                }
            };
            let Some(end) = batch.last().map(|e| e.seq) else {
                break;
            };
            for e in batch {
                // No receivers is fine: no gateway is connected.
                let _ = c.events.tx.send(Pushed {
                    seq: e.seq,
                    json: e.payload.into(),
                });
            }
            last = end;
        }
        let now = c.now();
        if pruned_at.is_none_or(|t| now.saturating_sub(t) >= 60) {
            pruned_at = Some(now);
            if let Err(e) = c.store.prune_events(now - RETENTION_SECS).await {
                tracing::warn!(error = %e, "event log prune failed");
            }
            // Buckets idle for a day have long refilled.
            if let Err(e) = c.store.prune_rate_limits(now - 86_400).await {
                tracing::warn!(error = %e, "rate-limit prune failed");
            }
        }
    }
}
