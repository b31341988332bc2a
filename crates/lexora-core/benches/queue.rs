//! The per-backend queue (`lexora_core::queue`): taking a free slot and
//! giving it back (the fast path of every request), and handing a slot
//! straight to a waiter when the backend is full.
//!
//! Run: `cargo bench -p lexora-core --bench queue` (append `-- --quick` for
//! a short pass). To compare two versions: `-- --save-baseline before`,
//! change, `-- --baseline before`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::task::noop_waker_ref;
use futures_util::FutureExt;
use lexora_core::parse::Priority;
use lexora_core::queue::{BackendQueue, QueueConfig};
use tokio::time::Instant;

fn bench_queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue");
    let deadline = Instant::now() + Duration::from_secs(3600);

    for (name, max_concurrency) in [("limited", Some(1024)), ("unlimited", None)] {
        let queue = BackendQueue::new(QueueConfig {
            max_concurrency,
            ..QueueConfig::default()
        });
        group.bench_function(format!("acquire_release/{name}"), |b| {
            b.iter(|| {
                // A free slot is taken without waiting: one poll suffices.
                let permit = queue.acquire(Priority::Normal, deadline).now_or_never();
                drop(permit);
            })
        });
    }

    // One slot, held; a request queues behind it and gets the slot when
    // the holder lets go. The waiter's deadline needs tokio's timer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    if let Ok(runtime) = runtime {
        let _context = runtime.enter();
        let queue = BackendQueue::new(QueueConfig {
            max_concurrency: Some(1),
            ..QueueConfig::default()
        });
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut held = queue.acquire(Priority::Normal, deadline).now_or_never();
        group.bench_function("handoff", |b| {
            b.iter(|| {
                let mut waiter = pin!(queue.acquire(Priority::High, deadline));
                let queued = waiter.as_mut().poll(&mut cx).is_pending();
                drop(held.take());
                if let Poll::Ready(next) = waiter.as_mut().poll(&mut cx) {
                    held = Some(next);
                }
                queued
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_queue);
criterion_main!(benches);
