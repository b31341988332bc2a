//! The two load shapes.
//!
//! - **Open loop** ([`open_loop`]): requests are scheduled on a fixed
//!   timeline (`start + i / rate`) by a dedicated OS thread with a
//!   high-resolution sleep, whatever the server's speed. Latency is measured
//!   from the *scheduled* time, so a stalled server is charged for every
//!   request it delayed (no coordinated omission).
//! - **Closed loop** ([`closed_loop`]): `connections` workers each send the
//!   next request when the previous one finished.
//!
//! Both run a warm-up (not recorded) before the measured window.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, Semaphore};

use crate::report::{Recorder, Summary};
use crate::request::{self, HttpClient, Template};

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
/// at once (further requests wait, and their wait counts as latency).
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
    let permits = u32::try_from(max_inflight).unwrap_or(u32::MAX).max(1);
    let slots = Arc::new(Semaphore::new(permits as usize));
    while let Some(intended) = rx.recv().await {
        let permit = slots.clone().acquire_owned().await?;
        let (client, template, shared) = (client.clone(), template.clone(), shared.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = request::send(&client, &template).await;
            if intended >= measure_from {
                record(&shared, intended, sent, result);
            }
            drop(permit);
        });
    }
    // Every request has finished once all permits are back.
    let _all = slots.acquire_many(permits).await?;
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

/// Runs `connections` workers, each sending back to back until the window ends.
pub async fn closed_loop(
    client: HttpClient,
    template: Arc<Template>,
    connections: usize,
    window: Window,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let shared: Shared = Arc::new(Mutex::new(Recorder::new()?));
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, template, shared) = (client.clone(), template.clone(), shared.clone());
        workers.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
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
    Ok(summarise(&shared, window))
}
