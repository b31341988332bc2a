//! The pool against a real HTTP/1.1 server on loopback that counts the
//! connections it accepts.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

/// A server whose `/stream` answer sends a chunk, waits for `release`, then
/// ends; every other path answers `ok` at once. `keep_alive: false` closes
/// each connection after its answer.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

async fn server(keep_alive: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (count, gate) = (Arc::clone(&accepted), Arc::clone(&release));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let gate = Arc::clone(&gate);
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let gate = Arc::clone(&gate);
                    async move {
                        if request.uri().path() != "/stream" {
                            let body =
                                http_body_util::Either::Left(Full::new(Bytes::from_static(b"ok")));
                            return Ok::<_, Infallible>(Response::new(body));
                        }
                        let frames = futures_util::stream::unfold(0, move |step| {
                            let gate = Arc::clone(&gate);
                            async move {
                                match step {
                                    0 => Some((
                                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"a"))),
                                        1,
                                    )),
                                    1 => {
                                        gate.notified().await;
                                        Some((Ok(Frame::data(Bytes::from_static(b"b"))), 2))
                                    }
                                    _ => None,
                                }
                            }
                        });
                        Ok(Response::new(http_body_util::Either::Right(
                            StreamBody::new(frames),
                        )))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    Server {
        port,
        accepted,
        release,
    }
}

fn request(path: &str, port: u16) -> Request<Bytes> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .body(Bytes::from_static(b"{}"))
        .expect("valid request")
}

/// Sends `request` (origin-form URI, `Host` set) through `pool`.
async fn send(pool: &Pool, request: Request<Bytes>) -> Result<Response<PooledBody>, PoolError> {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::new();
    h1::encode_request(
        &parts.method,
        &[target],
        &parts.headers,
        body.len(),
        &mut head,
    );
    pool.send(&head, body).await
}

/// A server and a pool for it, reaching it by `host`.
async fn pooled(keep_alive: bool, host: &str) -> (Server, Pool) {
    let server = server(keep_alive).await;
    let pool = Pool::new(host, server.port, Duration::from_secs(1));
    (server, pool)
}

/// Sends a plain request through `pool` and checks its answer.
async fn answers_ok(pool: &Pool, port: u16) {
    let response = send(pool, request("/", port)).await.expect("answer");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(bytes, "ok");
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (server, pool) = pooled(true, "127.0.0.1").await;
    for _ in 0..5 {
        answers_ok(&pool, server.port).await;
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn a_stream_holds_its_connection_until_read_to_the_end() {
    let (server, pool) = pooled(true, "127.0.0.1").await;
    let stream = send(&pool, request("/stream", server.port))
        .await
        .expect("head");
    let mut body = stream.into_body();
    let first = body.frame().await.expect("frame").expect("ok");
    assert_eq!(first.into_data().expect("data"), "a");
    assert_eq!(pool.idle(), 0, "the stream's connection is busy");

    // Another request meanwhile needs a connection of its own.
    answers_ok(&pool, server.port).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle(), 1);

    server.release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, "b");
    // Back as soon as the body has been read to its end.
    assert_eq!(pool.idle(), 2);
    for _ in 0..3 {
        answers_ok(&pool, server.port).await;
    }
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        2,
        "no new connection"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_the_connection() {
    let (server, pool) = pooled(true, "127.0.0.1").await;
    let stream = send(&pool, request("/stream", server.port))
        .await
        .expect("head");
    drop(stream);
    assert_eq!(pool.idle(), 0);
    answers_ok(&pool, server.port).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_the_server_closes_are_replaced() {
    let (server, pool) = pooled(false, "localhost").await;
    for _ in 0..3 {
        answers_ok(&pool, server.port).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

/// A connection the peer closed while it sat idle in the pool must not
/// fail the next request: that request goes to a new connection.
#[tokio::test]
async fn an_idle_connection_the_server_closed_is_replaced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Answers one request per connection as HTTP/1.1 keep-alive would, then
    // closes the connection while the client holds it idle.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 1024];
                // The request: a head, then the two-byte body `{}`.
                while !seen.ends_with(b"\r\n\r\n{}") {
                    match tcp.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if tcp.write_all(answer).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    let pool = Pool::new("127.0.0.1", port, Duration::from_secs(1));
    answers_ok(&pool, port).await;
    assert_eq!(pool.idle(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;

    answers_ok(&pool, port).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let pool = Pool::new("127.0.0.1", port, Duration::from_secs(1));
    let Err(error) = send(&pool, request("/", port)).await else {
        panic!("nobody listens, yet an answer came");
    };
    assert!(error.connect && !error.timed_out, "{error:?}");
    assert!(error.reason.contains("refused"), "{}", error.reason);
}

#[test]
fn ipv6_hosts_lose_their_brackets() {
    let pool = Pool::new("[::1]", 80, Duration::from_secs(1));
    assert_eq!(pool.shared.host, "::1");
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (server, pool) = pooled(true, "127.0.0.1").await;
    answers_ok(&pool, server.port).await;
    assert_eq!(pool.idle(), 1);

    tokio::time::pause();
    tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
    assert_eq!(pool.idle(), 1, "not yet");
    // The reaper runs every 30 s; by then the connection is past its time.
    tokio::time::advance(REAP_EVERY + Duration::from_secs(1)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.idle(), 0);
}
