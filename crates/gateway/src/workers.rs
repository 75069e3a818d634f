//! Connection workers: one single-threaded tokio runtime per thread, each
//! serving whole connections with its own upstream pools.
//!
//! Why not one multi-threaded runtime: a proxied request wakes three tasks
//! (the client connection, the pooled upstream connection, the response
//! path), and work stealing spreads them over threads, so most wake-ups
//! cross threads and cost a futex call and a context switch. Under load
//! that was half of the gateway's CPU time, in the kernel
//! (bench/RESULTS.md). Here a connection, its requests, its upgrades and
//! the upstream connections they use all live on one thread, as in nginx's
//! and Envoy's worker models; the accept loop deals connections out in
//! turn. Shared state (the view, the audit sink) is behind `Arc` as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::proxy::{self, Upstreams};

pub struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

struct Worker {
    handle: Handle,
    upstreams: Upstreams,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                handle: runtime.handle().clone(),
                upstreams: proxy::upstream_client(),
            });
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("umbra-gw-{i}"))
                // Dropping the runtime at the end cancels what is left: the
                // server has drained connections (or given up) by then.
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            threads.push(thread);
        }
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
            stop,
            threads,
        })
    }

    /// The next worker in turn: where to run a connection, and the upstream
    /// pools to use from there.
    pub fn next(&self) -> (&Handle, &Upstreams) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let w = &self.workers[i];
        (&w.handle, &w.upstreams)
    }

    /// Stops every worker, cancelling what still runs on them, and waits
    /// for the threads to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a gateway worker thread panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("could not wait for the gateway worker threads");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_is_dealt_out_in_turn_and_runs_off_the_callers_thread() {
        let workers = Workers::start(2).expect("start");
        let caller = std::thread::current().id();
        let mut names = Vec::new();
        for _ in 0..4 {
            let (handle, _) = workers.next();
            let (id, name) = handle
                .spawn(async {
                    let t = std::thread::current();
                    (t.id(), t.name().map(str::to_owned))
                })
                .await
                .expect("ran");
            assert_ne!(id, caller);
            names.push(name.unwrap_or_default());
        }
        assert_eq!(
            names,
            ["umbra-gw-0", "umbra-gw-1", "umbra-gw-0", "umbra-gw-1"]
        );
        workers.stop().await;
    }
}
