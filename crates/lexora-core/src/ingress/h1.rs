//! Lexora's HTTP/1.1 server connection.
//!
//! Nearly every request the gateway serves is a short `POST` answered
//! either with one body or with a stream of small SSE events. hyper's
//! server connection cost about a quarter of the instructions of a proxied
//! answer and about 2,600 per stream event (its dispatcher, its buffered
//! writer and write queue, chunk sizes formatted through `fmt`, a
//! keep-alive read poll per event): more than the relay of the event
//! itself. This connection does the same work directly on the socket:
//!
//! - the head is parsed by httparse and its header values share the read
//!   buffer's bytes;
//! - a body that came with its head (almost every request) is handed over
//!   as it is; a longer one is fed to the handler as it arrives, so the
//!   gateway's own checks (key first, then size and read timeout) decide
//!   as before;
//! - the answer's head and every event ready at the time go out in one
//!   `write`;
//! - while the answer is awaited or streamed, the socket's read readiness
//!   tells when the client goes away, and its request is dropped (the
//!   engine's stream with it).
//!
//! A connection that opens with the HTTP/2 preface is handed to hyper.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{Method, Request, Version};
use http_body::Frame;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::{CancellationToken, PollSender};

use crate::h1::{Framing, Piece};
use crate::probe::{self, Stage};
use crate::respond::Stamp;

mod answer;
mod h2;
mod head;
mod limits;
#[cfg(test)]
mod tests;

pub(super) use limits::Limits;

use head::{
    asks_to_close, parse_head, refusal, request_keeps_alive, Answer, Head, Refusal, MAX_HEAD,
};
use limits::Ends;

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// How long a client may take to send the rest of a head it has started.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Request-body pieces passed to the handler and not yet read by it; past
/// this the connection stops reading the socket until it reads (a piece is
/// at most what one read brought, a few KiB).
const BODY_QUEUE: usize = 8;
/// What an HTTP/2 connection with prior knowledge starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What answers each request of a connection: cheap to clone, one per
/// connection.
pub(super) trait Handler: Clone + Send + Sync + 'static {
    /// The answer to `request`, and the gateway's own headers for it when
    /// they travel apart from the answer's map (see [`Stamp`]).
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, (Response, Option<Stamp>)>;
}

/// Serves one client connection until it closes, fails, stays idle past
/// `limits.idle`, or `closing` fires while it is idle (a request in
/// progress is answered first, then the connection closes).
pub(super) async fn serve(
    tcp: TcpStream,
    service: impl Handler,
    closing: CancellationToken,
    limits: Limits,
) {
    let mut conn = Connection {
        tcp,
        read: BytesMut::with_capacity(READ_SIZE),
        write: Vec::with_capacity(1024),
        written: 0,
        send_timeout: limits.send,
    };
    let mut ends = Ends::new(&closing, limits.idle);
    let mut first = true;
    loop {
        let head = match conn.read_head(&mut ends, first).await {
            Ok(Some(Ok(head))) => {
                probe::mark(Stage::Head);
                head
            }
            Ok(Some(Err(Refusal::Http2))) => {
                return h2::serve(conn, service, closing, limits).await
            }
            Ok(Some(Err(Refusal::Bad(status, message)))) => {
                let response = refusal(status, &message);
                let _ = conn.respond(response, None, Answer::refusal()).await;
                return conn.close().await;
            }
            // Closed by the client, idle at shutdown, or a failed socket.
            Ok(None) | Err(_) => return,
        };
        first = false;
        let (request, mut incoming) = conn.request(head);
        probe::mark(Stage::Request);
        let mut answer = Answer {
            head_only: request.method() == Method::HEAD,
            http11: request.version() == Version::HTTP_11,
            keep_alive: request_keeps_alive(&request),
        };
        let mut pending = service.call(request);
        // The answer, while the body (if it is still arriving) is fed to
        // the handler and the client is watched.
        let response = poll_fn(|cx| {
            if let Poll::Ready(response) = pending.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if let Some(body) = &mut incoming {
                match conn.poll_feed(cx, body) {
                    Poll::Ready(Fed::Whole) => incoming = None,
                    // A body the handler did not read to its end leaves
                    // the connection somewhere inside it.
                    Poll::Ready(Fed::Abandoned) => {
                        answer.keep_alive = false;
                        incoming = None;
                    }
                    Poll::Ready(Fed::Gone) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            }
            conn.poll_client(cx).map(|()| None)
        })
        .await;
        let Some((response, stamp)) = response else {
            return;
        };
        if incoming.is_some() || closing.is_cancelled() || asks_to_close(response.headers()) {
            answer.keep_alive = false;
        }
        match conn.respond(response, stamp.as_ref(), answer).await {
            Ok(true) => {}
            Ok(false) => return conn.close().await,
            Err(_) => return,
        }
        // The next request may already be in the buffer (pipelining).
    }
}

/// A request body still arriving, fed to the handler through a channel.
struct Incoming {
    framing: Framing,
    sender: PollSender<io::Result<Bytes>>,
    /// Set when the handler first reads the body, for a client waiting
    /// for `100 Continue` before it sends the body; `None` once sent (or
    /// when the client does not wait).
    wanted: Option<Arc<AtomicBool>>,
}

enum Fed {
    /// The whole body has been passed on.
    Whole,
    /// The handler stopped reading it, or it is malformed.
    Abandoned,
    /// The client went away.
    Gone,
}

/// The client's socket and the two buffers.
struct Connection {
    tcp: TcpStream,
    read: BytesMut,
    /// Bytes to write, from `written` on.
    write: Vec<u8>,
    written: usize,
    /// [`Limits::send`].
    send_timeout: Option<Duration>,
}

impl Connection {
    /// Reads the next request head. `None`: the client closed the
    /// connection between requests, it stayed idle too long, or `closing`
    /// fired while it was idle.
    async fn read_head(
        &mut self,
        ends: &mut Ends,
        first: bool,
    ) -> io::Result<Option<Result<Head, Refusal>>> {
        ends.waiting();
        let mut deadline = None;
        loop {
            if !self.read.is_empty() {
                if first && self.read.starts_with(H2_PREFACE) {
                    return Ok(Some(Err(Refusal::Http2)));
                }
                let maybe_h2 = first && H2_PREFACE.starts_with(&self.read);
                match parse_head(&mut self.read) {
                    // Not enough of the preface to tell yet.
                    Err(_) if maybe_h2 => {}
                    Ok(Some(head)) => return Ok(Some(Ok(head))),
                    Ok(None) => {}
                    Err(refusal) => return Ok(Some(Err(refusal))),
                }
            }
            let read = if self.read.is_empty() {
                // A request that has arrived is served even at shutdown
                // (answered with `connection: close`): closing instead
                // would leave the client to guess whether it was.
                let read = poll_fn(|cx| {
                    if let Poll::Ready(read) = self.poll_fill(cx) {
                        return Poll::Ready(Some(read));
                    }
                    ends.poll(cx).map(|()| None)
                })
                .await;
                match read {
                    Some(read) => read?,
                    None => return Ok(None),
                }
            } else {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + HEAD_TIMEOUT);
                match tokio::time::timeout_at(deadline, self.fill()).await {
                    Ok(read) => read?,
                    Err(_) => return Ok(None),
                }
            };
            if read == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads what the socket has into the read buffer, waiting for it if
    /// need be. `0`: the client closed its side.
    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// The request to hand to the service, and its body if the rest of it
    /// is still to arrive.
    fn request(&mut self, head: Head) -> (Request<Body>, Option<Incoming>) {
        let Head {
            request,
            body: body_framing,
            expects_continue,
        } = head;
        // Almost always: the whole body came with the head.
        let whole = match &body_framing {
            Framing::Length(length) => usize::try_from(*length)
                .ok()
                .filter(|length| *length <= self.read.len()),
            _ => None,
        };
        if let Some(length) = whole {
            let bytes = self.read.split_to(length).freeze();
            return (request.map(|()| Body::from(bytes)), None);
        }
        let (sender, receiver) = mpsc::channel(BODY_QUEUE);
        // The client waits for `100 Continue` only if it asked to: the
        // interim answer goes once the handler wants the body, so one that
        // refuses the request first (no key, too long) is not sent it.
        let wanted = expects_continue.then(|| Arc::new(AtomicBool::new(false)));
        let body = Body::new(Channel {
            receiver,
            wanted: wanted.clone(),
        });
        let incoming = Incoming {
            framing: body_framing,
            sender: PollSender::new(sender),
            wanted,
        };
        (request.map(|()| body), Some(incoming))
    }

    /// Passes what has arrived of `incoming` to the handler; reads more
    /// from the socket when the buffer has no more of it.
    fn poll_feed(&mut self, cx: &mut Context<'_>, incoming: &mut Incoming) -> Poll<Fed> {
        if let Some(wanted) = &incoming.wanted {
            if !wanted.load(Ordering::Relaxed) {
                return self.poll_client(cx).map(|()| Fed::Gone);
            }
            self.write
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            incoming.wanted = None;
        }
        // The client sends the body only once it has the `100 Continue`.
        if ready!(self.poll_flush(cx)).is_err() {
            return Poll::Ready(Fed::Gone);
        }
        loop {
            // Room for the next piece first: a handler that does not read
            // the body holds the client back instead of filling memory.
            if ready!(incoming.sender.poll_reserve(cx)).is_err() {
                return Poll::Ready(Fed::Abandoned);
            }
            match incoming.framing.next(&mut self.read) {
                Ok(Piece::Data(data)) => {
                    if incoming.sender.send_item(Ok(data)).is_err() {
                        return Poll::Ready(Fed::Abandoned);
                    }
                }
                Ok(Piece::End) => {
                    incoming.sender.abort_send();
                    return Poll::Ready(Fed::Whole);
                }
                Ok(Piece::More) => match ready!(self.poll_fill(cx)) {
                    Ok(0) => {
                        let error = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection before the end of its body",
                        );
                        let _ = incoming.sender.send_item(Err(error));
                        return Poll::Ready(Fed::Gone);
                    }
                    Ok(_) => {}
                    Err(_) => return Poll::Ready(Fed::Gone),
                },
                Err(e) => {
                    let _ = incoming.sender.send_item(Err(e));
                    return Poll::Ready(Fed::Abandoned);
                }
            }
        }
    }

    /// Reads into the read buffer once the socket is readable. Through
    /// tokio's `AsyncRead`, which takes a read shorter than the room given
    /// to mean the socket is drained: watching the client after a request
    /// then costs no read that only says "would block".
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_SIZE);
        poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.read)
    }

    /// Pending while the client stays connected (registered to be woken
    /// when it sends or closes); ready once it has closed its side or the
    /// socket failed. What it sends meanwhile (a pipelined request) is kept
    /// in the read buffer, up to [`MAX_HEAD`]; past that it is no longer
    /// watched, and a close shows when writing fails.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.read.len() < MAX_HEAD {
            // Asked once per stream event: the readiness alone answers it
            // without making room in the buffer for a read.
            if ready!(self.tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    }
}

/// A request body arriving after its head, as the connection reads it.
struct Channel {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    /// Told on the first read (see [`Incoming::wanted`]).
    wanted: Option<Arc<AtomicBool>>,
}

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        // The connection is polled right after its handler (one task), so
        // it sees this flag without a wake-up of its own.
        if let Some(wanted) = self.wanted.take() {
            wanted.store(true, Ordering::Relaxed);
        }
        self.receiver
            .poll_recv(cx)
            .map(|item| item.map(|item| item.map(Frame::data)))
    }
}
