//! Access decisions for the audit trail, uploaded to the controller in
//! batches (group commit within a second, `DESIGN.md`).
//!
//! Loss window: records are held in memory until the controller has
//! acknowledged them. A gateway that crashes loses at most the records of
//! the last flush interval plus whatever could not be uploaded while the
//! controller was unreachable (bounded by [`MAX_PENDING`]; the oldest are
//! dropped first, and each drop is logged). Every decision is also logged
//! locally through `tracing` as it is made.

use std::time::Duration;

use tokio::sync::mpsc;
use umbra_proto::control::{AuditBatch, GatewayAuditRecord};

use crate::Gateway;

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
const MAX_BATCH: usize = 500;
pub const MAX_PENDING: usize = 50_000;

pub struct AuditSink {
    tx: mpsc::Sender<GatewayAuditRecord>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<GatewayAuditRecord>>>,
}

impl Default for AuditSink {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditSink {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Never blocks a request: when the queue is full the record is
    /// dropped and the drop logged.
    pub fn record(&self, record: GatewayAuditRecord) {
        let allowed = record.outcome == "allow";
        if allowed {
            tracing::info!(actor = %record.actor, action = %record.action, resource = %record.resource, reason = %record.reason, request_id = %record.request_id, "access");
        } else {
            tracing::warn!(actor = %record.actor, source_ip = %record.source_ip, action = %record.action, resource = %record.resource, reason = %record.reason, request_id = %record.request_id, "access denied");
        }
        if self.tx.try_send(record).is_err() {
            tracing::error!("audit queue full: a decision record was dropped");
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<GatewayAuditRecord>> {
        self.rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Uploads queued records until `shutdown`, then flushes what is left.
pub async fn run(gw: std::sync::Arc<Gateway>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(mut rx) = gw.audit.take_receiver() else {
        return;
    };
    let mut pending: std::collections::VecDeque<GatewayAuditRecord> =
        std::collections::VecDeque::new();
    let url = format!("{}/api/v1/gateway/audit", gw.config.controller_url);
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(FLUSH_INTERVAL) => false,
        };
        while let Ok(r) = rx.try_recv() {
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
                tracing::error!("audit backlog full: the oldest record was dropped");
            }
            pending.push_back(r);
        }
        while !pending.is_empty() {
            let n = pending.len().min(MAX_BATCH);
            let batch = AuditBatch {
                records: pending.iter().take(n).cloned().collect(),
            };
            let sent = gw
                .controller()
                .post(&url)
                .timeout(Duration::from_secs(10))
                .json(&batch)
                .send()
                .await
                .map(|r| r.status().is_success());
            match sent {
                Ok(true) => {
                    pending.drain(..n);
                }
                Ok(false) | Err(_) => {
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
