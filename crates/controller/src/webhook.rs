//! Alert delivery to the configured webhooks (`[[detection.webhook]]`).
//!
//! Each alert is POSTed as JSON to every webhook, signed so the receiver
//! can tell it came from this controller and is fresh:
//! `X-Umbra-Timestamp: <unix seconds>` and
//! `X-Umbra-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! (a receiver recomputes it, compares in constant time and refuses old
//! timestamps). `X-Umbra-Delivery` carries the alert's id, the same on every
//! retry, so a receiver can drop duplicates.
//!
//! Delivery never blocks detection, let alone a request: alerts wait in a
//! bounded queue, each delivery runs on its own task, and a failed one (a
//! network error, a timeout, 5xx, 408 or 429) is retried with exponential
//! backoff from 1 s up to 60 s between attempts, for at most
//! [`MAX_ATTEMPTS`] attempts; another 4xx is final. Everything is logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::Controller;
use crate::detect::Webhook;

/// Attempts per alert and webhook (about 6 minutes of retrying).
pub const MAX_ATTEMPTS: u32 = 10;
const QUEUE: usize = 1024;
/// Deliveries in flight at once, all webhooks together.
const IN_FLIGHT: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The queue into the delivery task.
pub struct Sender {
    tx: Option<mpsc::Sender<serde_json::Value>>,
}

impl Sender {
    /// Starts delivering to the configured webhooks (none: alerts are only
    /// logged and audited).
    pub fn start(c: Arc<Controller>) -> Self {
        let hooks = c.config.detection.webhooks.clone();
        if hooks.is_empty() {
            return Self { tx: None };
        }
        let (tx, mut rx) = mpsc::channel::<serde_json::Value>(QUEUE);
        let client = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("umbra/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "webhook client unavailable: alerts are only logged");
                return Self { tx: None };
            }
        };
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let alert = tokio::select! {
                    () = c.events.stopped() => return,
                    a = rx.recv() => match a {
                        Some(a) => a,
                        None => return,
                    },
                };
                let body = alert.to_string();
                let id = alert["id"].as_str().unwrap_or_default().to_owned();
                for hook in &hooks {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (c, client, hook, body, id) = (
                        c.clone(),
                        client.clone(),
                        hook.clone(),
                        body.clone(),
                        id.clone(),
                    );
                    tokio::spawn(async move {
                        deliver(&c, &client, &hook, &body, &id).await;
                        drop(slot);
                    });
                }
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues an alert for every webhook, without waiting.
    pub fn send(&self, alert: serde_json::Value) {
        if let Some(tx) = &self.tx
            && tx.try_send(alert).is_err()
        {
            tracing::error!("webhook queue full: an alert was not sent (it is in the audit trail)");
        }
    }
}

/// `sha256=<hex>` over `<timestamp>.<body>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

async fn deliver(c: &Controller, client: &reqwest::Client, hook: &Webhook, body: &str, id: &str) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=MAX_ATTEMPTS {
        let ts = c.now();
        let sent = client
            .post(&hook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-umbra-timestamp", ts.to_string())
            .header("x-umbra-signature", signature(&hook.secret, ts, body))
            .header("x-umbra-delivery", id)
            .body(body.to_owned())
            .send()
            .await;
        let retry = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(url = %hook.url, alert = id, attempt, "alert delivered");
                return;
            }
            Ok(r) => {
                let s = r.status();
                let retry = s.is_server_error()
                    || s == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || s == reqwest::StatusCode::REQUEST_TIMEOUT;
                tracing::warn!(url = %hook.url, alert = id, attempt, status = %s, retry, "webhook refused the alert");
                retry
            }
            Err(e) => {
                tracing::warn!(url = %hook.url, alert = id, attempt, error = %e, "webhook unreachable");
                true
            }
        };
        if !retry {
            return;
        }
        if attempt < MAX_ATTEMPTS {
            tokio::select! {
                () = c.events.stopped() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
    tracing::error!(url = %hook.url, alert = id, "alert not delivered after {MAX_ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let s = signature(b"0123456789abcdef", 1_700_000_000, r#"{"id":"a"}"#);
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(
            s,
            signature(b"0123456789abcdef", 1_700_000_001, r#"{"id":"a"}"#)
        );
        assert_ne!(
            s,
            signature(b"0123456789abcdef", 1_700_000_000, r#"{"id":"b"}"#)
        );
        assert_ne!(
            s,
            signature(b"0123456789abcdeX", 1_700_000_000, r#"{"id":"a"}"#)
        );
        // RFC 4231 test case 2 (key "Jefe"), as a check of the primitive.
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"Jefe");
        let tag = aws_lc_rs::hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
