//! Access decisions for the audit trail, uploaded to the controller, which
//! appends each upload in one transaction.
//!
//! Denials are durable before the response (`DESIGN.md`): the request that
//! is refused waits until the controller has acknowledged its record (a
//! group commit: every denial pending at that moment goes in one upload),
//! for at most [`ACK_TIMEOUT`]; the refusal stands either way. Allowed
//! requests are uploaded in batches every [`FLUSH_INTERVAL`].
//!
//! Loss window: allowed-request records not yet acknowledged (at most one
//! flush interval in normal operation, more while the controller is
//! unreachable) are lost if the gateway crashes; the backlog is bounded by
//! [`MAX_PENDING`] records, the oldest dropped first, each drop logged.
//! TLS handshake refusals are recorded without waiting (the handshake is
//! synchronous). Every decision is also logged locally as it is made.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use umbra_proto::control::{AuditBatch, GatewayAuditRecord};

use crate::Gateway;

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a refused request waits for its record to be acknowledged.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BATCH: usize = 200;
/// Kept well under the controller's limit for this route (1 MiB).
const MAX_BATCH_BYTES: usize = 256 * 1024;
const MAX_FIELD: usize = 512;
pub const MAX_PENDING: usize = 50_000;

struct Pending {
    record: GatewayAuditRecord,
    ack: Option<oneshot::Sender<()>>,
}

pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Pending>>>,
    urgent: Notify,
}

impl Default for AuditSink {
    fn default() -> Self {
        Self::new()
    }
}

fn clip(s: &mut String) {
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

impl AuditSink {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            urgent: Notify::new(),
        }
    }

    fn log(record: &GatewayAuditRecord) {
        // Allowed requests are in the audit trail; logging each one as well
        // would cost more than proxying it. Denials are logged as they happen.
        if record.outcome == "allow" {
            tracing::debug!(actor = %record.actor, action = %record.action, resource = %record.resource, reason = %record.reason, request_id = %record.request_id, "access");
        } else {
            tracing::warn!(actor = %record.actor, source_ip = %record.source_ip, action = %record.action, resource = %record.resource, reason = %record.reason, request_id = %record.request_id, "access denied");
        }
    }

    fn enqueue(&self, mut record: GatewayAuditRecord, ack: Option<oneshot::Sender<()>>) {
        clip(&mut record.resource);
        clip(&mut record.reason);
        clip(&mut record.actor);
        Self::log(&record);
        if self.tx.try_send(Pending { record, ack }).is_err() {
            tracing::error!("audit queue full: a decision record was dropped");
        }
    }

    /// Queues a record for the next batch; never blocks.
    pub fn record(&self, record: GatewayAuditRecord) {
        self.enqueue(record, None);
    }

    /// Queues a record and waits (bounded) until the controller has stored it.
    pub async fn record_durable(&self, record: GatewayAuditRecord) {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Some(tx));
        self.urgent.notify_one();
        if tokio::time::timeout(ACK_TIMEOUT, rx).await.is_err() {
            tracing::warn!("a denial's audit record is not yet acknowledged; refusing anyway");
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Pending>> {
        self.rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The next batch: at most [`MAX_BATCH`] records and about
/// [`MAX_BATCH_BYTES`] of JSON.
fn batch_len(pending: &VecDeque<Pending>) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for p in pending.iter().take(MAX_BATCH) {
        let size = p.record.resource.len() + p.record.reason.len() + p.record.actor.len() + 256;
        if n > 0 && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

/// Uploads queued records until `shutdown`, then flushes what is left.
pub async fn run(gw: std::sync::Arc<Gateway>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(mut rx) = gw.audit.take_receiver() else {
        return;
    };
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let url = format!("{}/api/v1/gateway/audit", gw.config.controller_url);
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = gw.audit.urgent.notified() => false,
            () = tokio::time::sleep(FLUSH_INTERVAL) => false,
        };
        while let Ok(p) = rx.try_recv() {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
                tracing::error!("audit backlog full: the oldest record was dropped");
            }
            pending.push_back(p);
        }
        while !pending.is_empty() {
            let n = batch_len(&pending);
            let batch = AuditBatch {
                records: pending.iter().take(n).map(|p| p.record.clone()).collect(),
            };
            let sent = gw
                .controller()
                .post(&url)
                .timeout(Duration::from_secs(10))
                .json(&batch)
                .send()
                .await
                .map(|r| r.status());
            match sent {
                Ok(s) if s.is_success() => {
                    for p in pending.drain(..n) {
                        if let Some(ack) = p.ack {
                            let _ = ack.send(());
                        }
                    }
                }
                // A batch the controller will never take (malformed, too
                // large): retrying it forever would stall every later record.
                Ok(s)
                    if s.is_client_error()
                        && s != reqwest::StatusCode::UNAUTHORIZED
                        && s != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::error!(status = %s, records = n, "audit batch refused by the controller; dropped");
                    pending.drain(..n);
                }
                _ => {
                    tracing::warn!(pending = pending.len(), "audit upload failed; will retry");
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
