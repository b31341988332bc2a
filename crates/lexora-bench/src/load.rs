//! The two load shapes.
//!
//! - **Open loop** ([`open_loop`]): requests are scheduled on a fixed
//!   timeline (`start + i / rate`) by a dedicated OS thread with a
//!   high-resolution sleep, whatever the server's speed. Latency is measured
//!   from the *scheduled* time, so a stalled server is charged for every
//!   request it delayed (no coordinated omission).
//! - **Closed loop** ([`closed_loop`]): `connections` workers each send the
//!   next request when the previous one finished, until the window ends or,
//!   given a request budget, until that many requests were sent.
//!
//! Both run a warm-up (not recorded) before the measured window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, Semaphore};

use crate::report::{Recorder, Summary};
use crate::request::{self, Failure, HttpClient, Template};

/// When the run starts recording and how long it lasts.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Load applied before recording starts.
    pub warmup: Duration,
    /// The recorded period.
    pub duration: Duration,
}

type Shared = Arc<Mutex<Recorder>>;

fn record(
    shared: &Shared,
    intended: Instant,
    sent: Instant,
    result: Result<request::Timings, request::Failure>,
) {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(intended, sent, result);
}

/// Summarises what was recorded over the measured window.
fn summarise(shared: &Shared, window: Window) -> Summary {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .summary(window.duration)
}

/// Sends `rate` requests per second for the window, at most `max_inflight`
/// at once (further requests wait, and their wait counts as latency; one
/// that waits longer than the request timeout fails as a timeout unsent, so
/// a target far slower than the rate cannot stretch the run without bound).
pub async fn open_loop(
    client: HttpClient,
    template: Arc<Template>,
    rate: f64,
    window: Window,
    max_inflight: usize,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    let shared: Shared = Arc::new(Mutex::new(Recorder::new()?));
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + window.warmup;
    let end = measure_from + window.duration;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    // Tokio's timer has 1 ms granularity; an OS thread's sleep is far finer.
    let ticker = std::thread::Builder::new()
        .name("schedule".into())
        .spawn(move || schedule(start, end, rate, &tx))
        .context("starting the scheduler thread")?;
    let slots = Arc::new(Semaphore::new(
        max_inflight.clamp(1, Semaphore::MAX_PERMITS),
    ));
    // Every task holds a clone of `running`; once all are dropped, every
    // request has finished (whether it got a slot or not).
    let (running, mut finished) = mpsc::channel::<()>(1);
    while let Some(intended) = rx.recv().await {
        let (client, template, shared) = (client.clone(), template.clone(), shared.clone());
        let (slots, running) = (slots.clone(), running.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::from_std(intended + template.timeout);
            let result = match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
                Ok(Ok(permit)) => {
                    let sent = Instant::now();
                    let result = request::send(&client, &template).await;
                    drop(permit);
                    (sent, result)
                }
                // The semaphore is never closed; treat it like a timeout anyway.
                Ok(Err(_)) | Err(_) => (Instant::now(), Err(Failure::Timeout)),
            };
            if intended >= measure_from {
                record(&shared, intended, result.0, result.1);
            }
            drop(running);
        });
    }
    drop(running);
    let _ = finished.recv().await;
    ticker
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    Ok(summarise(&shared, window))
}

/// Emits the intended send times `start + i / rate` until `end`.
fn schedule(start: Instant, end: Instant, rate: f64, tx: &mpsc::UnboundedSender<Instant>) {
    let mut i: u64 = 0;
    loop {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        if at >= end {
            return;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if tx.send(at).is_err() {
            return;
        }
        i += 1;
    }
}

/// Runs `connections` workers, each sending back to back until the window
/// ends or `requests` (warm-up included) have been sent.
pub async fn closed_loop(
    client: HttpClient,
    template: Arc<Template>,
    connections: usize,
    window: Window,
    requests: Option<u64>,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let shared: Shared = Arc::new(Mutex::new(Recorder::new()?));
    let budget = Arc::new(AtomicU64::new(requests.unwrap_or(u64::MAX)));
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, template, shared) = (client.clone(), template.clone(), shared.clone());
        let budget = budget.clone();
        workers.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end || !take_one(&budget) {
                    break;
                }
                let result = request::send(&client, &template).await;
                if sent >= measure_from {
                    record(&shared, sent, sent, result);
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a worker panicked")?;
    }
    // A run cut short by its budget is measured over the time it took, so
    // that its rate is right.
    let measured = Instant::now()
        .min(end)
        .saturating_duration_since(measure_from);
    let window = Window {
        duration: measured,
        ..window
    };
    Ok(summarise(&shared, window))
}

/// Takes one request from the budget; false once it is spent.
fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests;
