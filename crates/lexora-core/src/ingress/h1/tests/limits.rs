//! The connection's time limits and its bounded request-body queue.

use super::*;

/// Waits up to 5 s for `flag`.
async fn raised(flag: &AtomicBool) -> bool {
    for _ in 0..500 {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_connection_idle_past_its_limit_is_closed_and_requests_keep_it_open() {
    let limits = Limits {
        idle: Some(Duration::from_millis(300)),
        send: None,
    };
    let (address, _closing) = server_with(echo(), limits).await;
    // Requests 150 ms apart keep the connection for well past the limit:
    // only the wait for each request counts.
    let mut client = Client::connect(address).await;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.send(&post("/again", &i.to_string())).await;
        assert_eq!(client.answer().await.body, i.to_string());
    }
    let waited = Instant::now();
    assert!(client.closed().await);
    let waited = waited.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?} idle"
    );
    // A client that never sends a request is closed too.
    let mut silent = Client::connect(address).await;
    assert!(silent.closed().await);
}

/// An answer that never ends, as fast as the client takes it; `dropped`
/// tells when the server let go of it.
struct Endless {
    dropped: Arc<AtomicBool>,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        static DATA: [u8; 8192] = [b'x'; 8192];
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&DATA)))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A handler answering every request with an [`Endless`] body, and the
/// flag its bodies raise when dropped.
fn endless() -> (TestHandler, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let handler = TestHandler(Arc::new(move |_request: Request<Body>| {
        let body = Endless {
            dropped: Arc::clone(&flag),
        };
        Box::pin(async move { Response::new(Body::new(body)) })
    }));
    (handler, dropped)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_with_its_stream() {
    let (handler, dropped) = endless();
    let limits = Limits {
        idle: None,
        send: Some(Duration::from_millis(300)),
    };
    let (address, _closing) = server_with(handler, limits).await;
    let mut client = Client::connect(address).await;
    client.send(&post("/v1/chat/completions", "{}")).await;
    // The client reads the start of its answer, then nothing more.
    assert!(client.more().await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!dropped.load(Ordering::SeqCst), "dropped before the limit");
    assert!(
        raised(&dropped).await,
        "the stream was kept for a client that stopped reading"
    );
}

#[tokio::test]
async fn a_handler_that_does_not_read_the_body_holds_the_client_back() {
    let (go_tx, go) = oneshot::channel::<()>();
    let go = Arc::new(std::sync::Mutex::new(Some(go)));
    let handler = TestHandler(Arc::new(move |request: Request<Body>| {
        let go = go.lock().unwrap().take();
        Box::pin(async move {
            if let Some(go) = go {
                let _ = go.await;
            }
            let body = request.into_body().collect().await.unwrap().to_bytes();
            Response::new(Body::from(body.len().to_string()))
        })
    }));
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    const LENGTH: usize = 64 << 20;
    let mut request =
        format!("POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: {LENGTH}\r\n\r\n").into_bytes();
    request.resize(request.len() + LENGTH, b'x');
    let (reading, mut writing) = client.tcp.into_split();
    let sending = tokio::spawn(async move {
        writing.write_all(&request).await.unwrap();
        writing
    });
    // With the handler not reading, at most a few pieces are queued for
    // it and the socket's buffers fill: far short of 64 MiB.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sending.is_finished(),
        "the whole body was read before the handler wanted it"
    );
    go_tx.send(()).unwrap();
    let writing = tokio::time::timeout(Duration::from_secs(10), sending)
        .await
        .expect("the body was taken once the handler read it")
        .unwrap();
    client.tcp = reading.reunite(writing).unwrap();
    assert_eq!(client.answer().await.body, LENGTH.to_string());
}

/// Opens an HTTP/2 connection (prior knowledge) made by `h2` and sends one
/// chat request on it: its answer's head, the connection's task, and the
/// sender (dropping it lets the client close the connection).
async fn h2_chat(
    address: std::net::SocketAddr,
    h2: &hyper::client::conn::http2::Builder<TokioExecutor>,
) -> (
    http::Response<hyper::body::Incoming>,
    tokio::task::JoinHandle<hyper::Result<()>>,
    hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
) {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = h2.handshake(TokioIo::new(tcp)).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::post("http://x/v1/chat/completions")
        .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    (response, connection, sender)
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_not_while_a_request_is_open() {
    let (handler, mut feeds) = streaming();
    let limits = Limits {
        idle: Some(Duration::from_millis(300)),
        send: None,
    };
    let (address, _closing) = server_with(handler, limits).await;
    let h2 = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    let (response, connection, _sender) = h2_chat(address, &h2).await;
    let feed = feeds.recv().await.unwrap();
    // A stream open for longer than the limit is not cut.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!connection.is_finished(), "closed while a request was open");
    feed.event("data: late\n\n");
    drop(feed.sender);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "data: late\n\n");
    // Idle from now on: closed once the limit has passed.
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle connection was closed")
        .unwrap()
        .ok();
    assert!(
        idle.elapsed() >= Duration::from_millis(250),
        "{:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn an_http2_client_that_stops_reading_loses_its_answer_and_its_connection() {
    let (handler, dropped) = endless();
    let limits = Limits {
        idle: Some(Duration::from_millis(300)),
        send: Some(Duration::from_millis(300)),
    };
    let (address, _closing) = server_with(handler, limits).await;
    // A small window that the client never opens again: it takes the start
    // of the answer, then nothing. Flow control stops hyper from asking
    // the body for more, so only the connection's watch can let go of it.
    let mut h2 = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    h2.initial_stream_window_size(65_535).adaptive_window(false);
    let (response, connection, _sender) = h2_chat(address, &h2).await;
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!dropped.load(Ordering::SeqCst), "dropped before the limit");
    assert!(
        raised(&dropped).await,
        "the answer was kept for a client that stopped reading"
    );
    // With the answer gone the connection is idle, and closed in time.
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the connection was closed")
        .unwrap()
        .ok();
    drop(response);
}
