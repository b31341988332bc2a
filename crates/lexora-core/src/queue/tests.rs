use std::future::Future;
use std::pin::Pin;

use futures_util::FutureExt;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use Priority::{High, Low, Normal};

type Served = mpsc::UnboundedReceiver<(&'static str, Result<Permit, QueueError>)>;

fn limited(max_concurrency: usize) -> QueueConfig {
    QueueConfig {
        max_concurrency: Some(max_concurrency),
        ..QueueConfig::default()
    }
}

/// A deadline no test reaches.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Acquires a slot that must be free right now.
fn acquire_now(queue: &Arc<BackendQueue>, priority: Priority) -> Permit {
    queue
        .acquire(priority, far())
        .now_or_never()
        .expect("did not wait")
        .expect("acquired")
}

/// An acquire future polled once, so it sits in the queue.
fn enqueued(
    queue: &Arc<BackendQueue>,
    priority: Priority,
) -> Pin<Box<impl Future<Output = Result<Permit, QueueError>> + '_>> {
    let mut future = Box::pin(queue.acquire(priority, far()));
    assert!((&mut future).now_or_never().is_none(), "should wait");
    future
}

/// Lets spawned tasks run until they block; the clock is paused, so they
/// block on the queue, not on time.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Spawns a request that reports its outcome, under `name`, to `served`.
async fn spawn_waiter(
    queue: &Arc<BackendQueue>,
    priority: Priority,
    deadline: Instant,
    name: &'static str,
    served: &mpsc::UnboundedSender<(&'static str, Result<Permit, QueueError>)>,
) -> JoinHandle<()> {
    let queue = Arc::clone(queue);
    let served = served.clone();
    let task = tokio::spawn(async move {
        let outcome = queue.acquire(priority, deadline).await;
        let _ = served.send((name, outcome));
    });
    settle().await;
    task
}

/// The one outcome reported since the last call.
fn only_one(served: &mut Served) -> (&'static str, Result<Permit, QueueError>) {
    let outcome = served.try_recv().expect("a request was served");
    assert!(served.try_recv().is_err(), "only one request was served");
    outcome
}

#[test]
fn permits_and_acquire_futures_can_cross_threads() {
    fn send_static<T: Send + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_static::<Permit>();
    send_static::<Arc<BackendQueue>>();
    let queue = BackendQueue::new(QueueConfig::default());
    send(&queue.acquire(High, Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn unlimited_never_waits_and_counts_in_flight() {
    let queue = BackendQueue::new(QueueConfig::default());
    let permits: Vec<_> = (0..500).map(|_| acquire_now(&queue, Low)).collect();
    assert_eq!(queue.in_flight(), 500);
    assert_eq!(queue.waiting(), 0);
    assert!(permits.iter().all(|p| p.waited() == Duration::ZERO));
    drop(permits);
    assert_eq!(queue.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_goes_by_priority_then_first_come() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Normal);
    let (tx, mut served) = mpsc::unbounded_channel();
    for (name, priority) in [
        ("low 1", Low),
        ("low 2", Low),
        ("high", High),
        ("normal", Normal),
    ] {
        spawn_waiter(&queue, priority, far(), name, &tx).await;
    }
    assert_eq!(queue.waiting_by_priority(), [1, 1, 2]);
    assert!(served.try_recv().is_err(), "nobody passes the holder");

    drop(holder);
    let mut order = Vec::new();
    for _ in 0..4 {
        settle().await;
        let (name, permit) = only_one(&mut served);
        order.push(name);
        assert_eq!(queue.in_flight(), 1);
        drop(permit);
    }
    assert_eq!(order, ["high", "normal", "low 1", "low 2"]);
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(queue.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_does_not_take_a_slot_while_others_wait() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Low);
    let mut waiter = enqueued(&queue, Low);
    drop(holder);
    // The slot went to the waiter, even though it has not run yet.
    let _newcomer = enqueued(&queue, High);
    let permit = (&mut waiter).now_or_never().expect("handed over");
    assert!(permit.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_low_waiter_is_served_within_its_aging_bound_under_a_stream_of_high() {
    let config = limited(1);
    let bound = config.aging_step * (config.weight(Low) - config.weight(High));
    assert_eq!(bound, Duration::from_secs(9), "the documented default");
    let queue = BackendQueue::new(config);
    let mut current = Ok(acquire_now(&queue, High));
    let (tx, mut served) = mpsc::unbounded_channel();
    let start = Instant::now();
    spawn_waiter(&queue, Low, far(), "low", &tx).await;

    // Every second a fresh high request arrives and the running one ends.
    let mut highs_served = 0;
    loop {
        tokio::time::advance(Duration::from_secs(1)).await;
        spawn_waiter(&queue, High, far(), "high", &tx).await;
        drop(current);
        settle().await;
        let (name, permit) = only_one(&mut served);
        if name == "low" {
            assert_eq!(start.elapsed(), bound);
            break;
        }
        highs_served += 1;
        assert!(start.elapsed() < bound, "low starved");
        current = permit;
    }
    // High is served first as long as it is worth more than the wait.
    assert_eq!(highs_served, 8);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_turns_requests_away_at_once() {
    let queue = BackendQueue::new(QueueConfig {
        max_size: 2,
        ..limited(1)
    });
    let _holder = acquire_now(&queue, Normal);
    let _first = enqueued(&queue, Low);
    let _second = enqueued(&queue, Low);
    let refused = queue
        .acquire(High, far())
        .now_or_never()
        .expect("did not wait");
    assert_eq!(
        refused.expect_err("full"),
        QueueError::Full {
            size: 2,
            retry_after: Duration::from_secs(1)
        }
    );
    assert_eq!(queue.waiting(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_follows_how_long_slots_are_held() {
    let queue = BackendQueue::new(QueueConfig {
        max_size: 0,
        ..limited(4)
    });
    let permits: Vec<_> = (0..4).map(|_| acquire_now(&queue, Normal)).collect();
    tokio::time::advance(Duration::from_secs(10)).await;
    drop(permits);
    let _permits: Vec<_> = (0..4).map(|_| acquire_now(&queue, Normal)).collect();
    let refused = queue.acquire(Normal, far()).now_or_never();
    // Held 10 s on average, 4 at a time: a slot frees every 2.5 s.
    assert_eq!(
        refused.expect("did not wait").expect_err("full"),
        QueueError::Full {
            size: 0,
            retry_after: Duration::from_secs(3)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_passed_deadline_leaves_the_queue_and_frees_the_place() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Normal);
    let (tx, mut served) = mpsc::unbounded_channel();
    let deadline = Instant::now() + Duration::from_secs(5);
    spawn_waiter(&queue, High, deadline, "hurried", &tx).await;
    spawn_waiter(&queue, Low, far(), "patient", &tx).await;
    assert_eq!(queue.waiting(), 2);

    tokio::time::advance(Duration::from_millis(4999)).await;
    settle().await;
    assert!(served.try_recv().is_err(), "still within its deadline");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    let (name, outcome) = only_one(&mut served);
    assert_eq!(name, "hurried");
    assert_eq!(
        outcome.expect_err("timed out"),
        QueueError::Timeout {
            waited: Duration::from_secs(5)
        }
    );
    assert_eq!(queue.waiting_by_priority(), [0, 0, 1]);

    drop(holder);
    settle().await;
    let (name, outcome) = only_one(&mut served);
    assert_eq!(name, "patient");
    assert_eq!(outcome.expect("served").waited(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_at_once_and_gets_nothing() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Normal);
    let gone = enqueued(&queue, High);
    let mut next = enqueued(&queue, Low);
    assert_eq!(queue.waiting(), 2);
    drop(gone);
    assert_eq!(queue.waiting_by_priority(), [0, 0, 1]);
    drop(holder);
    let permit = (&mut next).now_or_never().expect("handed the slot");
    assert!(permit.is_ok());
    assert_eq!(queue.in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slot_handed_to_a_waiter_that_goes_away_passes_on() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Normal);
    let chosen = enqueued(&queue, High);
    let mut next = enqueued(&queue, Low);
    drop(holder); // The slot is sent to `chosen`, which never looks.
    assert_eq!((queue.in_flight(), queue.waiting()), (1, 1));
    drop(chosen);
    assert_eq!((queue.in_flight(), queue.waiting()), (1, 0));
    let permit = (&mut next).now_or_never().expect("handed the slot");
    drop(permit.expect("served"));
    assert_eq!(queue.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_aborts_never_leak_a_slot() {
    let queue = BackendQueue::new(QueueConfig {
        max_size: 10_000,
        ..limited(3)
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..10 {
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let queue = Arc::clone(&queue);
                let priority = [High, Normal, Low][(i + round) % 3];
                let hold = i % 4;
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let permit = queue.acquire(priority, deadline).await;
                    for _ in 0..hold {
                        tokio::task::yield_now().await;
                    }
                    drop(permit.expect("no deadline is reached"));
                })
            })
            .collect();
        for task in &tasks {
            if rng.random_bool(0.3) {
                task.abort();
            }
            if rng.random_bool(0.2) {
                tokio::task::yield_now().await;
            }
        }
        for task in tasks {
            if let Err(error) = task.await {
                assert!(error.is_cancelled(), "{error}");
            }
        }
        assert_eq!((queue.in_flight(), queue.waiting()), (0, 0));
    }
    let permits: Vec<_> = (0..3).map(|_| acquire_now(&queue, Low)).collect();
    assert_eq!(permits.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn raising_the_limit_wakes_waiters_and_lowering_it_drains_first() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Normal);
    let (tx, mut served) = mpsc::unbounded_channel();
    for name in ["a", "b", "c"] {
        spawn_waiter(&queue, Normal, far(), name, &tx).await;
    }

    queue.reconfigure(limited(3));
    settle().await;
    let a = served.try_recv().expect("a woken");
    let b = served.try_recv().expect("b woken");
    assert_eq!((a.0, b.0), ("a", "b"));
    assert_eq!((queue.in_flight(), queue.waiting()), (3, 1));

    queue.reconfigure(limited(1));
    assert_eq!(queue.in_flight(), 3, "in-flight requests go on");
    drop(a);
    drop(b);
    settle().await;
    assert_eq!((queue.in_flight(), queue.waiting()), (1, 1));
    assert!(served.try_recv().is_err(), "still at the lower limit");
    drop(holder);
    settle().await;
    let c = only_one(&mut served);
    assert_eq!(c.0, "c");
    assert_eq!((queue.in_flight(), queue.waiting()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn lifting_the_limit_wakes_every_waiter() {
    let queue = BackendQueue::new(limited(1));
    let _holder = acquire_now(&queue, Normal);
    let mut waiters: Vec<_> = (0..5).map(|_| enqueued(&queue, Low)).collect();
    queue.reconfigure(QueueConfig::default());
    let _permits: Vec<_> = waiters
        .iter_mut()
        .map(|waiter| waiter.now_or_never().expect("woken").expect("served"))
        .collect();
    assert_eq!((queue.in_flight(), queue.waiting()), (6, 0));
}

#[tokio::test(start_paused = true)]
async fn new_weights_reorder_waiters_who_can_still_leave() {
    let queue = BackendQueue::new(limited(1));
    let holder = acquire_now(&queue, Normal);
    let mut high = enqueued(&queue, High);
    let mut low = enqueued(&queue, Low);
    let normal = enqueued(&queue, Normal);
    queue.reconfigure(QueueConfig {
        weights: [10, 5, 1],
        ..limited(1)
    });
    drop(normal);
    assert_eq!(queue.waiting_by_priority(), [1, 0, 1]);
    drop(holder);
    assert!((&mut high).now_or_never().is_none());
    let permit = (&mut low).now_or_never().expect("low first now");
    drop(permit);
    assert!((&mut high).now_or_never().expect("then high").is_ok());
}

#[tokio::test(start_paused = true)]
async fn permit_reports_the_time_waited() {
    let queue = BackendQueue::new(limited(1));
    assert_eq!(acquire_now(&queue, High).waited(), Duration::ZERO);
    let holder = acquire_now(&queue, High);
    let mut waiter = enqueued(&queue, Normal);
    tokio::time::advance(Duration::from_millis(3250)).await;
    drop(holder);
    let permit = (&mut waiter).now_or_never().expect("served");
    assert_eq!(
        permit.expect("served").waited(),
        Duration::from_millis(3250)
    );
}
