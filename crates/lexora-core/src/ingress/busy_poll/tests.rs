use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::BusyPoll;

// Long enough that a busy CI machine preempting the test does not let the
// poller fall asleep between two of its steps.
const WINDOW: Duration = Duration::from_millis(50);

/// Waits (real time) until the poller is asleep; fails after a second.
async fn until_asleep(poller: &BusyPoll) {
    for _ in 0..1000 {
        if poller.is_asleep() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the poller is still polling a second after the last poke");
}

#[tokio::test]
async fn polls_for_a_window_after_a_poke_then_sleeps_until_the_next() {
    let poller = BusyPoll::new(WINDOW);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(poller.clone().run(cancel.clone()));

    // Nothing has arrived: it sleeps without spinning.
    until_asleep(&poller).await;
    tokio::time::sleep(WINDOW * 4).await;
    assert_eq!(poller.spins(), 0, "an idle gateway must not poll");

    poller.poke();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!poller.is_asleep(), "a poke starts polling");
    until_asleep(&poller).await;
    let after_first = poller.spins();
    assert!(after_first > 0, "it polled after the poke");

    // Asleep again: no more spins until the next poke.
    tokio::time::sleep(WINDOW * 4).await;
    assert_eq!(
        poller.spins(),
        after_first,
        "it kept polling past its window"
    );

    poller.poke();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!poller.is_asleep(), "the second poke woke it");
    until_asleep(&poller).await;
    assert!(
        poller.spins() > after_first,
        "it polled after the second poke"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("run ends when cancelled")
        .expect("run did not panic");
}

#[tokio::test]
async fn pokes_keep_it_polling_past_one_window() {
    let poller = BusyPoll::new(WINDOW);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(poller.clone().run(cancel.clone()));
    until_asleep(&poller).await;

    // Pokes every window/10 for four windows: it never falls asleep.
    let started = std::time::Instant::now();
    while started.elapsed() < WINDOW * 4 {
        poller.poke();
        tokio::time::sleep(WINDOW / 10).await;
        assert!(
            !poller.is_asleep(),
            "fell asleep while requests kept coming"
        );
    }
    until_asleep(&poller).await;

    cancel.cancel();
    task.await.expect("run did not panic");
}

#[tokio::test]
async fn cancelled_while_polling_it_ends() {
    let poller = BusyPoll::new(Duration::from_secs(3600));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(poller.clone().run(cancel.clone()));
    poller.poke();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!poller.is_asleep(), "polling");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("a cancelled poller stops within its next yield")
        .expect("run did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poke_wakes_every_poller_of_a_runtime() {
    let poller = BusyPoll::new(WINDOW);
    let cancel = CancellationToken::new();
    let tasks: Vec<_> = (0..2)
        .map(|_| tokio::spawn(poller.clone().run(cancel.clone())))
        .collect();
    until_asleep(&poller).await;
    assert_eq!(poller.inner.asleep.load(Ordering::SeqCst), 2);

    poller.poke();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        poller.inner.asleep.load(Ordering::SeqCst),
        0,
        "a poke must wake every poller, not one"
    );
    until_asleep(&poller).await;

    cancel.cancel();
    for task in tasks {
        task.await.expect("run did not panic");
    }
    assert_eq!(poller.inner.running.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn every_piece_of_an_answer_pokes() {
    use http_body_util::BodyExt;

    let poller = BusyPoll::new(WINDOW);
    let chunks = futures_util::stream::iter(["data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"])
        .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk.as_bytes())));
    let body = poller.body(axum::body::Body::from_stream(chunks));
    let before = poller.inner.activity.load(Ordering::SeqCst);
    let text = body.collect().await.expect("body").to_bytes();
    assert_eq!(&text[..], b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n");
    assert_eq!(
        poller.inner.activity.load(Ordering::SeqCst) - before,
        3,
        "one poke per chunk"
    );
}

#[test]
fn cancelled_while_requests_keep_coming_it_ends() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let poller = BusyPoll::new(Duration::from_secs(3600));
    let cancel = CancellationToken::new();
    // The poller on a runtime of its own, so that if it never ends the
    // test can still fail instead of hanging on that runtime.
    let (ended, finished) = std::sync::mpsc::channel();
    {
        let (poller, cancel) = (poller.clone(), cancel.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(poller.run(cancel));
            let _ = ended.send(());
        });
    }
    // Pokes as fast as a thread can, so that one lands between any two
    // steps of the poller.
    let stop = Arc::new(AtomicBool::new(false));
    let poker = {
        let (poller, stop) = (poller.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                poller.poke();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    cancel.cancel();
    let result = finished.recv_timeout(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    poker.join().expect("poker did not panic");
    result.expect("a cancelled poller stops even while pokes keep coming");
}
