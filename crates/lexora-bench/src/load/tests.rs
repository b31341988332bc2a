use super::*;

use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A keep-alive HTTP/1.1 server that answers every request with `200 {}`
/// after `delay`, counting requests. Returns its URL.
async fn server(delay: Duration, count: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    // Requests are small: one ends with its 2-byte body `{}`.
                    while let Some(end) = seen.windows(2).position(|w| w == b"{}") {
                        seen.drain(..end + 2);
                        count.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

fn template(url: &str, timeout: Duration) -> Arc<Template> {
    Arc::new(Template {
        uri: url.parse().expect("uri"),
        body: Bytes::from_static(b"{}"),
        headers: Vec::new(),
        stream: false,
        timeout,
    })
}

#[tokio::test]
async fn closed_loop_stops_after_the_request_budget() {
    let count = Arc::new(AtomicUsize::new(0));
    let url = server(Duration::ZERO, count.clone()).await;
    let window = Window {
        warmup: Duration::ZERO,
        duration: Duration::from_secs(60),
    };
    let template = template(&url, Duration::from_secs(5));
    let summary = closed_loop(request::client(), template, 4, window, Some(25))
        .await
        .expect("run");
    assert_eq!(summary.ok, 25);
    assert_eq!(count.load(Ordering::Relaxed), 25);
    // Measured over the time the run took, not the 60 s window.
    assert!(summary.window_s < 30.0, "window {}", summary.window_s);
}

#[tokio::test]
async fn open_loop_requests_that_wait_too_long_for_a_slot_time_out() {
    let count = Arc::new(AtomicUsize::new(0));
    let url = server(Duration::from_millis(300), count.clone()).await;
    let window = Window {
        warmup: Duration::ZERO,
        duration: Duration::from_millis(200),
    };
    // 20 requests in 0.2 s, one slot, 0.3 s per answer, 0.5 s timeout:
    // the slot frees at 0.3 s and 0.6 s (then 0.9 s, past every deadline),
    // so three are answered and the others give up waiting for it.
    let template = template(&url, Duration::from_millis(500));
    let started = Instant::now();
    let summary = open_loop(request::client(), template, 100.0, window, 1)
        .await
        .expect("run");
    assert_eq!(summary.ok + summary.errors, 20);
    // (A little slack either way for a loaded machine.)
    assert!((2..=4).contains(&summary.ok), "ok {}", summary.ok);
    assert_eq!(summary.errors_by_kind.get("timeout"), Some(&summary.errors));
    // Bounded by the window plus the timeout, not by 20 x 0.3 s.
    assert!(started.elapsed() < Duration::from_secs(2));
}
