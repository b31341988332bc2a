//! The server connection over real sockets: a raw client writes bytes and
//! reads the answers back through the pool's own head parser.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use futures_util::FutureExt;
use http::header::{self, HeaderMap};
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head::chunk_size;
use super::*;
use crate::h1;

mod fuzz;
mod limits;
mod stamp;

type Call = dyn Fn(Request<Body>) -> BoxFuture<'static, Response> + Send + Sync;

#[derive(Clone)]
struct TestHandler(Arc<Call>);

impl Handler for TestHandler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, (Response, Option<Stamp>)> {
        Box::pin((self.0)(request).map(|response| (response, None)))
    }
}

/// Answers with the request's method, target and body.
fn echo() -> TestHandler {
    TestHandler(Arc::new(|request: Request<Body>| {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => Bytes::from(format!("body error: {e}")),
            };
            Response::builder()
                .header("x-method", parts.method.as_str())
                .header("x-target", parts.uri.to_string())
                .body(Body::from(body))
                .unwrap()
        })
    }))
}

/// A server on a free port serving `handler`; cancelling the token closes
/// its connections gracefully.
async fn server(handler: impl Handler) -> (SocketAddr, CancellationToken) {
    let no_limits = Limits {
        idle: None,
        send: None,
    };
    server_with(handler, no_limits).await
}

/// [`server`] with time limits.
async fn server_with(handler: impl Handler, limits: Limits) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let closing = CancellationToken::new();
    let token = closing.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp, handler.clone(), token.clone(), limits));
        }
    });
    (address, closing)
}

struct Client {
    tcp: TcpStream,
    buffer: BytesMut,
}

/// An answer as the client read it.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Client {
    async fn connect(address: SocketAddr) -> Self {
        Self {
            tcp: TcpStream::connect(address).await.unwrap(),
            buffer: BytesMut::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the end of the stream.
    async fn more(&mut self) -> bool {
        self.buffer.reserve(4096);
        let read =
            tokio::time::timeout(Duration::from_secs(5), self.tcp.read_buf(&mut self.buffer))
                .await
                .expect("the server answered in time");
        read.is_ok_and(|n| n > 0)
    }

    /// Reads one answer (interim 1xx heads are skipped by the parser).
    async fn answer(&mut self) -> Answer {
        let head = loop {
            if let Some(head) = h1::parse_head(&mut self.buffer, h1::Keep::All).unwrap() {
                break head;
            }
            assert!(self.more().await, "the connection closed before an answer");
        };
        let mut framing = head.body;
        let mut body = BytesMut::new();
        loop {
            match framing.next(&mut self.buffer).unwrap() {
                Piece::Data(data) => body.extend_from_slice(&data),
                Piece::End => break,
                Piece::More => {
                    if !self.more().await {
                        assert_eq!(framing.at_close().unwrap(), Piece::End);
                        break;
                    }
                }
            }
        }
        let (parts, ()) = head.response.into_parts();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.freeze(),
        }
    }

    /// Whether the server closed the connection (after anything left).
    async fn closed(&mut self) -> bool {
        while self.more().await {}
        true
    }
}

fn post(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn keep_alive_carries_several_requests_on_one_connection() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    for i in 0..3 {
        client
            .send(&post("/v1/chat/completions", &format!("{{\"n\":{i}}}")))
            .await;
        let answer = client.answer().await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("{{\"n\":{i}}}"));
        assert_eq!(answer.headers["x-method"], "POST");
        assert_eq!(answer.headers["x-target"], "/v1/chat/completions");
        assert!(answer.headers.contains_key(header::DATE));
        assert!(!answer.headers.contains_key(header::CONNECTION));
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    let mut both = post("/a", "first");
    both.extend(post("/b", "second"));
    client.send(&both).await;
    let (first, second) = (client.answer().await, client.answer().await);
    assert_eq!(
        (first.body.as_ref(), second.body.as_ref()),
        (&b"first"[..], &b"second"[..])
    );
    assert_eq!(second.headers["x-target"], "/b");
}

#[tokio::test]
async fn a_body_that_arrives_after_its_head_is_fed_to_the_handler() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    let body = "x".repeat(100_000);
    let request = post("/v1/embeddings", &body);
    let (head, rest) = request.split_at(request.len() - 99_000);
    client.send(head).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.send(rest).await;
    let answer = client.answer().await;
    assert_eq!(answer.body.len(), 100_000);
    // The connection is still usable.
    client.send(&post("/again", "ok")).await;
    assert_eq!(client.answer().await.body, "ok");
}

#[tokio::test]
async fn a_chunked_request_body_is_decoded() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    client
        .send(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await;
    assert_eq!(client.answer().await.body, "hello world");
    client.send(&post("/next", "n")).await;
    assert_eq!(client.answer().await.body, "n");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    client
        .send(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
        .await;
    while !client.buffer.ends_with(b"\r\n\r\n") {
        assert!(client.more().await);
    }
    assert_eq!(&client.buffer[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"body").await;
    assert_eq!(client.answer().await.body, "body");
}

#[tokio::test]
async fn malformed_heads_are_refused_with_an_openai_error_and_the_connection_closes() {
    let (address, _closing) = server(echo()).await;
    let cases: [(&[u8], u16); 9] = [
        (b"NOT A REQUEST\r\n\r\n", 400),
        // HTTP/1.1 without a host, and any request with two.
        (b"POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 400),
        (
            b"POST /x HTTP/1.0\r\nhost: a\r\nhost: b\r\ncontent-length: 0\r\n\r\n",
            400,
        ),
        (
            b"POST /x HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"POST /x HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            400,
        ),
        (b"POST /x HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", 501),
        (
            b"POST /x HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            b"POST /x HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            501,
        ),
        (
            b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            501,
        ),
    ];
    for (request, status) in cases {
        let mut client = Client::connect(address).await;
        client.send(request).await;
        let answer = client.answer().await;
        assert_eq!(
            answer.status,
            status,
            "{}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(answer.headers[header::CONNECTION], "close");
        let error: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(client.closed().await);
    }
}

#[tokio::test]
async fn an_oversized_head_is_refused_with_431() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    let long = format!(
        "GET / HTTP/1.1\r\nx-long: {}\r\n",
        "a".repeat(MAX_HEAD + 10)
    );
    client.send(long.as_bytes()).await;
    let answer = client.answer().await;
    assert_eq!(answer.status, 431);
    assert!(client.closed().await);
}

#[tokio::test]
async fn http10_clients_get_their_connection_closed_unless_they_ask_to_keep_it() {
    let (address, _closing) = server(echo()).await;
    let mut client = Client::connect(address).await;
    client
        .send(b"POST /one HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
        .await;
    let answer = client.answer().await;
    assert_eq!(answer.body, "hi");
    assert_eq!(answer.headers[header::CONNECTION], "close");
    assert!(client.closed().await);

    let mut client = Client::connect(address).await;
    client
        .send(b"POST /two HTTP/1.0\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok")
        .await;
    let answer = client.answer().await;
    assert_eq!(answer.headers[header::CONNECTION], "keep-alive");
    client
        .send(b"POST /three HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await;
    assert_eq!(client.answer().await.headers["x-target"], "/three");
}

#[tokio::test]
async fn head_requests_get_the_length_and_no_body() {
    // As axum answers `HEAD`: the length of the `GET` answer in the
    // header, an empty body; or a handler that returns the body anyway.
    let handler = TestHandler(Arc::new(|request: Request<Body>| {
        Box::pin(async move {
            match request.uri().path() {
                "/declared" => Response::builder()
                    .header(header::CONTENT_LENGTH, "42")
                    .body(Body::empty())
                    .unwrap(),
                _ => Response::new(Body::from("hello")),
            }
        })
    }));
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    for (target, length) in [("/declared", "42"), ("/whole", "5")] {
        client
            .send(format!("HEAD {target} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await;
        while !client.buffer.ends_with(b"\r\n\r\n") {
            assert!(client.more().await);
        }
        let text = String::from_utf8_lossy(&client.buffer).to_string();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains(&format!("content-length: {length}\r\n")),
            "{text}"
        );
        client.buffer.clear();
    }
    // No body followed: the next answer starts right away.
    client
        .send(b"POST /after HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await;
    let answer = client.answer().await;
    assert_eq!(answer.body, "hello");
}

/// A handler answering with a stream the test feeds; `dropped` tells
/// when the server let go of the stream.
fn streaming() -> (TestHandler, mpsc::UnboundedReceiver<StreamFeed>) {
    let (feeds, receiver) = mpsc::unbounded_channel();
    let handler = TestHandler(Arc::new(move |_request: Request<Body>| {
        let (sender, receiver) = mpsc::channel(64);
        let events = Channel {
            receiver,
            wanted: None,
        };
        let dropped = Arc::new(AtomicBool::new(false));
        let _ = feeds.send(StreamFeed {
            sender,
            dropped: Arc::clone(&dropped),
        });
        Box::pin(async move {
            let body = Stream { events, dropped };
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::new(body))
                .unwrap()
        })
    }));
    (handler, receiver)
}

struct StreamFeed {
    sender: mpsc::Sender<io::Result<Bytes>>,
    dropped: Arc<AtomicBool>,
}

impl StreamFeed {
    fn event(&self, text: &'static str) {
        self.sender
            .try_send(Ok(Bytes::from_static(text.as_bytes())))
            .unwrap();
    }
}

/// The stream's events, and a flag raised when the server drops it.
struct Stream {
    events: Channel,
    dropped: Arc<AtomicBool>,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.events).poll_frame(cx)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A client whose stream has started: its first event, `data: one`, has
/// arrived (before the stream's end).
async fn started_stream() -> (Client, StreamFeed) {
    let (handler, mut feeds) = streaming();
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    client.send(&post("/v1/chat/completions", "{}")).await;
    let feed = feeds.recv().await.unwrap();
    feed.event("data: one\n\n");
    while !client.buffer.ends_with(b"data: one\n\n\r\n") {
        assert!(client.more().await);
    }
    (client, feed)
}

#[tokio::test]
async fn a_streamed_answer_is_chunked_and_each_event_leaves_when_it_comes() {
    let (mut client, feed) = started_stream().await;
    let text = String::from_utf8_lossy(&client.buffer).to_string();
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nB\r\ndata: one\n\n\r\n"), "{text}");
    feed.event("data: two\n\n");
    drop(feed.sender);
    let answer = client.answer().await;
    assert_eq!(answer.body, "data: one\n\ndata: two\n\n");
    assert!(feed.dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_drops_the_stream() {
    let (client, feed) = started_stream().await;
    drop(client);
    for _ in 0..500 {
        if feed.dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the stream was not dropped after the client left");
}

#[tokio::test]
async fn a_client_that_goes_away_before_the_answer_cancels_the_handler() {
    let (started_tx, started) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let (cancelled_tx, cancelled) = oneshot::channel::<()>();
    let cancelled_tx = Arc::new(std::sync::Mutex::new(Some(cancelled_tx)));
    let handler = TestHandler(Arc::new(move |_request: Request<Body>| {
        let started = started_tx.lock().unwrap().take();
        let guard = Guard(cancelled_tx.lock().unwrap().take());
        Box::pin(async move {
            let _guard = guard;
            if let Some(started) = started {
                let _ = started.send(());
            }
            std::future::pending::<Response>().await
        })
    }));
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    client.send(&post("/slow", "{}")).await;
    started.await.unwrap();
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), cancelled)
        .await
        .expect("the handler's future was dropped")
        .unwrap();
}

/// Sends on drop.
struct Guard(Option<oneshot::Sender<()>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

#[tokio::test]
async fn closing_ends_idle_connections_and_lets_a_request_in_progress_finish() {
    let (handler, mut feeds) = streaming();
    let (address, closing) = server(handler).await;
    let mut idle = Client::connect(address).await;
    let mut busy = Client::connect(address).await;
    busy.send(&post("/v1/chat/completions", "{}")).await;
    let feed = feeds.recv().await.unwrap();
    // The idle connection has been accepted and is waiting for a head.
    tokio::time::sleep(Duration::from_millis(20)).await;
    closing.cancel();
    assert!(idle.closed().await);
    feed.event("data: last\n\n");
    drop(feed.sender);
    assert_eq!(busy.answer().await.body, "data: last\n\n");
    assert!(busy.closed().await);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let (address, _closing) = server(echo()).await;
    let tcp = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post("http://x/v1/models")
        .body(http_body_util::Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-target"], "http://x/v1/models");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "over h2");
}

#[test]
fn chunk_sizes_are_hexadecimal() {
    for (size, text) in [
        (1, "1"),
        (15, "F"),
        (16, "10"),
        (233, "E9"),
        (65_536, "10000"),
    ] {
        let mut out = Vec::new();
        chunk_size(&mut out, size);
        assert_eq!(out, format!("{text}\r\n").into_bytes());
    }
}

#[tokio::test]
async fn an_answer_given_before_the_body_is_read_closes_the_connection() {
    let handler = TestHandler(Arc::new(|_request: Request<Body>| {
        Box::pin(async { refusal(StatusCode::PAYLOAD_TOO_LARGE, "too large") })
    }));
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    client
        .send(b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nonly the start")
        .await;
    let answer = client.answer().await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.headers[header::CONNECTION], "close");
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_handler_that_says_close_gets_the_connection_closed() {
    let handler = TestHandler(Arc::new(|_request: Request<Body>| {
        Box::pin(async {
            Response::builder()
                .header(header::CONNECTION, "close")
                .body(Body::from("bye"))
                .unwrap()
        })
    }));
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    client.send(&post("/x", "")).await;
    let answer = client.answer().await;
    assert_eq!(answer.body, "bye");
    assert_eq!(answer.headers[header::CONNECTION], "close");
    assert!(client.closed().await);
}

#[tokio::test]
async fn no_100_continue_is_sent_when_the_answer_comes_without_reading_the_body() {
    let handler = TestHandler(Arc::new(|_request: Request<Body>| {
        Box::pin(async { refusal(StatusCode::UNAUTHORIZED, "no key") })
    }));
    let (address, _closing) = server(handler).await;
    let mut client = Client::connect(address).await;
    client
        .send(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 1000000\r\n\r\n")
        .await;
    assert!(client.more().await);
    assert!(
        client.buffer.starts_with(b"HTTP/1.1 401 "),
        "{:?}",
        client.buffer
    );
}

#[tokio::test]
async fn chunked_request_bodies_must_end_their_lines_in_crlf() {
    let (address, _closing) = server(echo()).await;
    for body in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
    ] {
        let mut client = Client::connect(address).await;
        let mut request =
            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        client.send(&request).await;
        let answer = client.answer().await;
        assert!(answer.body.starts_with(b"body error"), "{:?}", answer.body);
        // Where the next request would start is unknown: no reuse.
        assert!(client.closed().await);
    }
}

#[tokio::test]
async fn a_split_http2_preface_is_still_recognised() {
    let (address, _closing) = server(echo()).await;
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(Rest(tcp)))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post("http://x/split")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// A socket whose first 12 bytes of the HTTP/2 preface were sent already:
/// hyper's client writes the whole preface, so its first 12 bytes are
/// dropped on the way.
struct Rest(TcpStream);

impl AsyncRead for Rest {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rest {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The preface is the first write hyper makes.
        if buf.starts_with(b"PRI * HTTP/2") {
            let skipped = 12;
            return Pin::new(&mut self.0)
                .poll_write(cx, &buf[skipped..])
                .map(|written| written.map(|n| n + skipped));
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
