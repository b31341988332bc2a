//! Leases: who is using the running engine, so swaps can drain and idle
//! engines can be found.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::{timeout, Duration, Instant};

/// Counts the leases of one engine process. A watch channel rather than a
/// plain counter so a swap can wait for zero without polling.
#[derive(Debug)]
pub(crate) struct Gate {
    held: watch::Sender<usize>,
    /// When the count last dropped to zero (or the engine became ready).
    idle_since: Mutex<Instant>,
}

impl Gate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            held: watch::Sender::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// Leases currently held.
    pub(crate) fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// How long nobody has held a lease; `None` while one is held.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.held() > 0 {
            return None;
        }
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(Instant::now().saturating_duration_since(since))
    }

    /// Wait until no lease is held; false if `limit` passed first.
    pub(crate) async fn drain(&self, limit: Duration) -> bool {
        let mut rx = self.held.subscribe();
        timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn take(&self) {
        self.held.send_modify(|n| *n += 1);
    }

    fn release(&self) {
        let mut now_idle = false;
        self.held.send_modify(|n| {
            *n = n.saturating_sub(1);
            now_idle = *n == 0;
        });
        if now_idle {
            *self
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
    }
}

/// The right to send requests to a running engine. While any lease is
/// held the engine is not swapped out (up to the drain timeout) nor
/// unloaded as idle. Dropping the lease releases it.
#[derive(Debug)]
pub struct Lease {
    /// Where the engine listens, `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The variant this lease is for.
    pub variant: String,
    /// PID of the engine process.
    pub pid: u32,
    gate: Arc<Gate>,
    /// The scheduler's permission, released with the lease.
    pub(crate) claim: Option<super::Claim>,
}

impl Lease {
    pub(crate) fn new(base_url: String, variant: String, pid: u32, gate: Arc<Gate>) -> Self {
        gate.take();
        Self {
            base_url,
            variant,
            pid,
            gate,
            claim: None,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.gate.release();
    }
}
