//! The test fake: a userspace table that also records every call, and can
//! be told to fail, so gateway tests assert "the knock opened exactly this
//! pinhole" and exercise the error path without root.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{
    BlockedSource, Error, OpenPinhole, Pinhole, PinholeKey, Pinholes, Protected, Protocol,
    UserspacePinholes,
};

/// One call the fake received, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Install(Vec<Protected>),
    Open(Vec<Pinhole>),
    Close(PinholeKey),
    Block(IpAddr, Duration),
    Unblock(IpAddr),
    Shutdown,
}

/// A recording [`Pinholes`] backed by [`UserspacePinholes`]. Cheap to
/// clone; clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingPinholes {
    table: UserspacePinholes,
    record: Arc<Mutex<Record>>,
}

#[derive(Debug, Default)]
struct Record {
    calls: Vec<Call>,
    fail_next: usize,
}

impl RecordingPinholes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every mutating call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.record().calls.clone()
    }

    /// Every pinhole requested so far, flattened across batches.
    pub fn opened(&self) -> Vec<Pinhole> {
        let record = self.record();
        record
            .calls
            .iter()
            .filter_map(|c| {
                if let Call::Open(b) = c {
                    Some(b.clone())
                } else {
                    None
                }
            })
            .flatten()
            .collect()
    }

    /// Makes the next `n` mutating calls fail with a retryable error
    /// (recorded all the same, changing nothing).
    pub fn fail_next(&self, n: usize) {
        self.record().fail_next = n;
    }

    /// The table behind the fake, e.g. for `is_blocked`.
    pub fn table(&self) -> &UserspacePinholes {
        &self.table
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, call: Call) -> Result<(), Error> {
        let mut record = self.record();
        record.calls.push(call);
        if record.fail_next > 0 {
            record.fail_next -= 1;
            return Err(Error::Failed {
                program: "fake".into(),
                status: "injected".into(),
                stderr: "injected failure".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Pinholes for RecordingPinholes {
    fn backend(&self) -> &'static str {
        "fake"
    }

    async fn install(&self, protected: &[Protected]) -> Result<(), Error> {
        self.note(Call::Install(protected.to_vec()))?;
        self.table.install(protected).await
    }

    async fn open(&self, batch: &[Pinhole]) -> Result<(), Error> {
        self.note(Call::Open(batch.to_vec()))?;
        self.table.open(batch).await
    }

    async fn close(&self, key: PinholeKey) -> Result<(), Error> {
        self.note(Call::Close(key))?;
        self.table.close(key).await
    }

    async fn list(&self) -> Result<Vec<OpenPinhole>, Error> {
        self.table.list().await
    }

    async fn count(&self) -> Result<usize, Error> {
        self.table.count().await
    }

    async fn block(&self, source: IpAddr, duration: Duration) -> Result<(), Error> {
        self.note(Call::Block(source, duration))?;
        self.table.block(source, duration).await
    }

    async fn unblock(&self, source: IpAddr) -> Result<(), Error> {
        self.note(Call::Unblock(source))?;
        self.table.unblock(source).await
    }

    async fn blocked(&self) -> Result<Vec<BlockedSource>, Error> {
        self.table.blocked().await
    }

    fn allows(&self, source: IpAddr, proto: Protocol, port: u16, now: Instant) -> bool {
        self.table.allows(source, proto, port, now)
    }

    async fn shutdown(&self) -> Result<(), Error> {
        self.note(Call::Shutdown)?;
        self.table.shutdown().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn records_calls_and_injects_failures() {
        let fw = RecordingPinholes::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let p = Pinhole::new(a, Protocol::Tcp, 22, Duration::from_secs(5));
        fw.install(&[Protected::new(Protocol::Tcp, 22)])
            .await
            .unwrap();
        fw.fail_next(1);
        assert!(fw.open(&[p]).await.unwrap_err().is_retryable());
        assert!(!fw.allows(a, Protocol::Tcp, 22, Instant::now()));
        fw.open(&[p]).await.unwrap();
        assert!(fw.allows(a, Protocol::Tcp, 22, Instant::now()));
        fw.close(p.key).await.unwrap();
        assert_eq!(fw.opened(), [p, p]);
        assert_eq!(fw.calls().last(), Some(&Call::Close(p.key)));

        // The dyn form is what the gateway holds.
        let dynamic: Arc<dyn Pinholes> = Arc::new(fw.clone());
        dynamic.shutdown().await.unwrap();
        assert_eq!(fw.calls().last(), Some(&Call::Shutdown));
    }
}
