//! Access decisions for the audit trail, uploaded to the controller, which
//! appends each upload in one transaction.
//!
//! Denials are durable before the response (`DESIGN.md`): the request that
//! is refused waits until the controller has acknowledged its record (a
//! group commit: every denial pending at that moment goes in one upload),
//! for at most [`ACK_TIMEOUT`]; the refusal stands either way. Allowed
//! requests are uploaded in batches every [`FLUSH_INTERVAL`].
//!
//! Records that need no acknowledgement are summed up: identical decisions
//! (same actor, source, action, resource, outcome and reason — so the same
//! session, method and normalized path) within one flush interval become
//! one record with a `count` and the first and last request IDs. A session
//! making thousands of requests a second to one resource would otherwise
//! cost the controller a stored row per request (measured: a third of a
//! core at 11,000 requests/s, the bench's figure), and a peer repeating a
//! refused handshake could make it write as fast as it can connect. Nothing
//! that would tell two decisions apart is merged.
//!
//! Loss window: allowed-request records not yet acknowledged (at most one
//! flush interval in normal operation, more while the controller is
//! unreachable) are lost if the gateway crashes; the backlog is bounded by
//! [`MAX_PENDING`] records, the oldest dropped first, each drop logged.
//! TLS handshake refusals are recorded without waiting (the handshake is
//! synchronous). Every decision is also logged locally as it is made.

use std::collections::{HashMap, VecDeque};
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
/// Distinct summaries held between two flushes; past this a summary is
/// sent as it is (a memory bound: nothing is lost).
const MAX_SUMMARIES: usize = 10_000;

/// What makes two decisions the same for the audit trail.
#[derive(Hash, PartialEq, Eq)]
struct SummaryKey {
    actor: String,
    source_ip: String,
    action: String,
    resource: String,
    outcome: String,
    reason: String,
}

struct Summary {
    ts: i64,
    first: String,
    last: String,
    count: u64,
}

impl Summary {
    fn into_record(self, k: SummaryKey) -> GatewayAuditRecord {
        let request_id = if self.count > 1 && self.first != self.last {
            format!("{}..{}", self.first, self.last)
        } else {
            self.first
        };
        GatewayAuditRecord {
            ts: self.ts,
            actor: k.actor,
            source_ip: k.source_ip,
            action: k.action,
            resource: k.resource,
            outcome: k.outcome,
            reason: k.reason,
            request_id,
            count: self.count,
            transfer: None,
        }
    }
}

struct Pending {
    record: GatewayAuditRecord,
    ack: Option<oneshot::Sender<()>>,
}

pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Pending>>>,
    urgent: Notify,
    summaries: std::sync::Mutex<HashMap<SummaryKey, Summary>>,
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
            summaries: std::sync::Mutex::default(),
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

    fn prepare(record: &mut GatewayAuditRecord) {
        clip(&mut record.resource);
        clip(&mut record.reason);
        clip(&mut record.actor);
        Self::log(record);
    }

    fn enqueue(&self, record: GatewayAuditRecord, ack: Option<oneshot::Sender<()>>) {
        if self.tx.try_send(Pending { record, ack }).is_err() {
            tracing::error!("audit queue full: a decision record was dropped");
        }
    }

    /// Adds a record to the next batch, summed up with identical ones;
    /// never blocks.
    pub fn record(&self, mut record: GatewayAuditRecord) {
        Self::prepare(&mut record);
        // A transfer report is one of a kind (its count of bytes is what
        // matters): sent as it is, not summed up.
        if record.transfer.is_some() {
            self.enqueue(record, None);
            return;
        }
        let key = SummaryKey {
            actor: record.actor,
            source_ip: record.source_ip,
            action: record.action,
            resource: record.resource,
            outcome: record.outcome,
            reason: record.reason,
        };
        let mut map = self
            .summaries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = map.get_mut(&key) {
            s.count += record.count.max(1);
            s.last = record.request_id;
            return;
        }
        let summary = Summary {
            ts: record.ts,
            first: record.request_id.clone(),
            last: record.request_id,
            count: record.count.max(1),
        };
        if map.len() >= MAX_SUMMARIES {
            drop(map);
            self.enqueue(summary.into_record(key), None);
            return;
        }
        map.insert(key, summary);
    }

    /// The summaries made since the last call, as records.
    fn take_summaries(&self) -> Vec<GatewayAuditRecord> {
        let map = std::mem::take(
            &mut *self
                .summaries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut records: Vec<_> = map.into_iter().map(|(k, s)| s.into_record(k)).collect();
        records.sort_by_key(|r| r.ts);
        records
    }

    /// Queues a record and waits (bounded) until the controller has stored it.
    pub async fn record_durable(&self, record: GatewayAuditRecord) {
        let (tx, rx) = oneshot::channel();
        let mut record = record;
        Self::prepare(&mut record);
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
        let summaries = gw.audit.take_summaries().into_iter();
        let queued = std::iter::from_fn(|| rx.try_recv().ok());
        for p in summaries
            .map(|record| Pending { record, ack: None })
            .chain(queued)
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(resource: &str, request_id: &str, ts: i64) -> GatewayAuditRecord {
        GatewayAuditRecord {
            ts,
            actor: "user:alice".into(),
            source_ip: "10.0.0.1".into(),
            action: "gateway.access".into(),
            resource: resource.into(),
            outcome: "allow".into(),
            reason: "granted".into(),
            request_id: request_id.into(),
            count: 1,
            transfer: None,
        }
    }

    #[test]
    fn identical_decisions_are_summed_up_and_different_ones_are_not() {
        let sink = AuditSink::new();
        sink.record(allow("service:web GET /a", "p-1", 10));
        sink.record(allow("service:web GET /b", "p-2", 10));
        sink.record(allow("service:web GET /a", "p-3", 11));
        sink.record(allow("service:web GET /a", "p-4", 11));
        let mut other_source = allow("service:web GET /a", "p-5", 11);
        other_source.source_ip = "10.0.0.2".into();
        sink.record(other_source);
        let records = sink.take_summaries();
        assert_eq!(records.len(), 3, "{records:?}");
        let a: Vec<_> = records
            .iter()
            .filter(|r| r.resource.ends_with("/a") && r.source_ip == "10.0.0.1")
            .collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].count, 3);
        assert_eq!(a[0].request_id, "p-1..p-4");
        assert_eq!(a[0].ts, 10, "the first decision's time");
        let b = records.iter().find(|r| r.resource.ends_with("/b"));
        assert_eq!(
            b.map(|r| (r.count, r.request_id.as_str())),
            Some((1, "p-2"))
        );
        assert!(sink.take_summaries().is_empty(), "taken once");
    }

    #[test]
    fn past_the_bound_summaries_go_out_as_they_are() {
        let sink = AuditSink::new();
        for i in 0..MAX_SUMMARIES + 5 {
            sink.record(allow(
                &format!("service:web GET /{i}"),
                &format!("p-{i}"),
                1,
            ));
        }
        assert_eq!(sink.take_summaries().len(), MAX_SUMMARIES);
        let mut rx = sink.take_receiver().expect("receiver");
        let mut overflow = 0;
        while rx.try_recv().is_ok() {
            overflow += 1;
        }
        assert_eq!(overflow, 5, "nothing lost");
    }
}
