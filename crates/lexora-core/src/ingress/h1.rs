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

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use crate::error::error_json;
use crate::h1::{self, Framing, Piece};

#[cfg(test)]
mod tests;

/// The longest request head accepted (as the pool's for answers).
const MAX_HEAD: usize = h1::MAX_HEAD;
/// Headers per request head, as in hyper.
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// Written out before more ready events are added, however many there are.
const WRITE_HIGH: usize = 64 * 1024;
/// Data frames longer than this are written from their own buffer instead
/// of being copied behind the head.
const COPY_MAX: usize = 16 * 1024;
/// How long a client may take to send the rest of a head it has started.
/// (Idle keep-alive connections wait for their next request unbounded, as
/// with hyper before.)
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closing connection reads what the client still sends, at
/// most and without anything arriving.
const LINGER: Duration = Duration::from_secs(5);
const LINGER_QUIET: Duration = Duration::from_secs(1);
/// What an HTTP/2 connection with prior knowledge starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What answers each request of a connection: cheap to clone, one per
/// connection.
pub(super) trait Handler: Clone + Send + Sync + 'static {
    /// The answer to `request`.
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, Response>;
}

/// Serves one client connection until it closes, fails, or `closing`
/// fires while it is idle (a request in progress is answered first, then
/// the connection closes).
pub(super) async fn serve(tcp: TcpStream, service: impl Handler, closing: CancellationToken) {
    let mut conn = Connection {
        tcp,
        read: BytesMut::with_capacity(READ_SIZE),
        write: Vec::with_capacity(1024),
        written: 0,
    };
    let mut first = true;
    loop {
        let head = match conn.read_head(&closing, first).await {
            Ok(Some(Ok(head))) => head,
            Ok(Some(Err(Refusal::Http2))) => return serve_h2(conn, service, closing).await,
            Ok(Some(Err(Refusal::Bad(status, message)))) => {
                let response = refusal(status, &message);
                let _ = conn.respond(response, Answer::refusal()).await;
                return conn.close().await;
            }
            // Closed by the client, idle at shutdown, or a failed socket.
            Ok(None) | Err(_) => return,
        };
        first = false;
        let (request, mut incoming) = conn.request(head);
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
        let Some(response) = response else { return };
        if incoming.is_some() || closing.is_cancelled() || asks_to_close(response.headers()) {
            answer.keep_alive = false;
        }
        match conn.respond(response, answer).await {
            Ok(true) => {}
            Ok(false) => return conn.close().await,
            Err(_) => return,
        }
        // The next request may already be in the buffer (pipelining).
    }
}

/// What a head asked for that is not a request to answer.
enum Refusal {
    /// The HTTP/2 preface: the connection is hyper's.
    Http2,
    /// Answer this status and close.
    Bad(StatusCode, String),
}

/// A parsed request head.
struct Head {
    request: Request<()>,
    body: Framing,
    expects_continue: bool,
}

/// How the answer goes out.
#[derive(Clone, Copy)]
struct Answer {
    /// A `HEAD` request: the head only.
    head_only: bool,
    /// The client speaks HTTP/1.1 (chunked answers are allowed).
    http11: bool,
    /// The connection carries another request after this one.
    keep_alive: bool,
}

impl Answer {
    /// How a refused head is answered: then the connection closes.
    fn refusal() -> Self {
        Self {
            head_only: false,
            http11: true,
            keep_alive: false,
        }
    }
}

/// A request body still arriving, fed to the handler through a channel.
struct Incoming {
    framing: Framing,
    sender: mpsc::UnboundedSender<io::Result<Bytes>>,
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
}

impl Connection {
    /// Reads the next request head. `None`: the client closed the
    /// connection between requests, or `closing` fired while it was idle.
    async fn read_head(
        &mut self,
        closing: &CancellationToken,
        first: bool,
    ) -> io::Result<Option<Result<Head, Refusal>>> {
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
                if closing.is_cancelled() {
                    return Ok(None);
                }
                tokio::select! {
                    read = self.fill() => read?,
                    () = closing.cancelled() => return Ok(None),
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
        let (sender, receiver) = mpsc::unbounded_channel();
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
            sender,
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
            if incoming.sender.is_closed() {
                return Poll::Ready(Fed::Abandoned);
            }
            match incoming.framing.next(&mut self.read) {
                Ok(Piece::Data(data)) => {
                    if incoming.sender.send(Ok(data)).is_err() {
                        return Poll::Ready(Fed::Abandoned);
                    }
                }
                Ok(Piece::End) => return Poll::Ready(Fed::Whole),
                Ok(Piece::More) => match ready!(self.poll_fill(cx)) {
                    Ok(0) => {
                        let error = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection before the end of its body",
                        );
                        let _ = incoming.sender.send(Err(error));
                        return Poll::Ready(Fed::Gone);
                    }
                    Ok(_) => {}
                    Err(_) => return Poll::Ready(Fed::Gone),
                },
                Err(e) => {
                    let _ = incoming.sender.send(Err(e));
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
            match ready!(self.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    }

    /// Writes `response`. `Ok(true)`: the connection can carry another
    /// request. `Err`: the client is gone or the answer's body failed; the
    /// connection cannot be used any more.
    async fn respond(&mut self, response: Response, mut answer: Answer) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = answer.head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| h1::parse_length(v.as_bytes()).ok());
        // A `HEAD` answer's body is empty, but its length is the one a
        // `GET` would have (axum sets the header so).
        let exact = http_body::Body::size_hint(&body).exact();
        let length = if bodiless {
            declared.or(exact.filter(|length| *length > 0))
        } else {
            exact.or(declared)
        };
        let framing = match length {
            _ if status.is_informational() || status == StatusCode::NO_CONTENT => Out::Nothing,
            Some(length) => Out::Length(length),
            None if answer.head_only || status == StatusCode::NOT_MODIFIED => Out::Nothing,
            None if answer.http11 => Out::Chunked,
            None => {
                answer.keep_alive = false;
                Out::Close
            }
        };
        encode_head(&mut self.write, status, &parts.headers, framing, &answer);
        if bodiless {
            drop(body);
            self.flush().await?;
            return Ok(answer.keep_alive);
        }
        let mut left = match framing {
            Out::Length(length) => Some(length),
            _ => None,
        };
        loop {
            let step = poll_fn(|cx| self.poll_step(cx, Pin::new(&mut body))).await;
            match step {
                Step::Data(data) => {
                    if let Some(left) = &mut left {
                        let length = data.len() as u64;
                        if length > *left {
                            return Err(h1::invalid("the answer is longer than its length"));
                        }
                        *left -= length;
                    }
                    self.push_data(data, framing).await?;
                }
                Step::Flush => self.flush().await?,
                Step::End => break,
                Step::Failed(e) => {
                    tracing::debug!(error = %e, "the answer's body failed; closing the connection");
                    return Err(io::Error::other(e));
                }
                Step::Gone => return Err(io::ErrorKind::ConnectionAborted.into()),
            }
        }
        if left.is_some_and(|left| left > 0) {
            return Err(h1::invalid("the answer is shorter than its length"));
        }
        if framing == Out::Chunked {
            self.write.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        Ok(answer.keep_alive)
    }

    /// The next thing to do for the answer's body. A frame that is ready
    /// is taken at once, so events that arrived together leave together;
    /// when none is, what is buffered is written now (most often in full,
    /// without waiting), and then the body and the client are awaited.
    fn poll_step(&mut self, cx: &mut Context<'_>, body: Pin<&mut Body>) -> Poll<Step> {
        if self.write.len() >= WRITE_HIGH {
            return Poll::Ready(Step::Flush);
        }
        match http_body::Body::poll_frame(body, cx) {
            Poll::Ready(Some(Ok(frame))) => {
                return Poll::Ready(match frame.into_data() {
                    Ok(data) => Step::Data(data),
                    // Trailers: HTTP/1.1 answers here carry none.
                    Err(_) => Step::Flush,
                });
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Step::Failed(e)),
            Poll::Ready(None) => return Poll::Ready(Step::End),
            Poll::Pending => {}
        }
        match self.try_flush() {
            Ok(true) => {}
            Ok(false) => return Poll::Ready(Step::Flush),
            Err(_) => return Poll::Ready(Step::Gone),
        }
        self.poll_client(cx).map(|()| Step::Gone)
    }

    /// Adds a data frame to what is to be written, framed as `framing`
    /// says; a long one is written from its own buffer.
    async fn push_data(&mut self, data: Bytes, framing: Out) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if framing == Out::Chunked {
            chunk_size(&mut self.write, data.len());
        }
        if data.len() > COPY_MAX {
            self.write_with(&data).await?;
        } else {
            self.write.extend_from_slice(&data);
        }
        if framing == Out::Chunked {
            self.write.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// Writes as much of the write buffer as the socket takes now.
    /// `Ok(true)`: all of it.
    fn try_flush(&mut self) -> io::Result<bool> {
        while self.written < self.write.len() {
            match self.tcp.try_write(&self.write[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.write.clear();
        self.written = 0;
        Ok(true)
    }

    /// [`Self::flush`] as a poll.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.try_flush()? {
            ready!(self.tcp.poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the whole write buffer.
    async fn flush(&mut self) -> io::Result<()> {
        while !self.try_flush()? {
            self.tcp.writable().await?;
        }
        Ok(())
    }

    /// Writes the write buffer, then `data`, without copying `data`.
    async fn write_with(&mut self, mut data: &[u8]) -> io::Result<()> {
        loop {
            let buffered = &self.write[self.written..];
            if buffered.is_empty() && data.is_empty() {
                self.write.clear();
                self.written = 0;
                return Ok(());
            }
            let parts = [IoSlice::new(buffered), IoSlice::new(data)];
            match self.tcp.try_write_vectored(&parts) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let from_buffer = n.min(buffered.len());
                    self.written += from_buffer;
                    data = &data[n - from_buffer..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the connection: the client reads everything sent, then the end
    /// of the stream. What it still sends (the rest of a body the answer
    /// did not wait for) is read and dropped until it closes too, for
    /// [`LINGER`] at most: closing a socket with unread bytes resets the
    /// connection, and a reset can destroy the answer in the client's
    /// buffers before it is read.
    async fn close(mut self) {
        if self.tcp.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        loop {
            self.read.clear();
            let wait = deadline.min(Instant::now() + LINGER_QUIET);
            match tokio::time::timeout_at(wait, self.fill()).await {
                Ok(Ok(read)) if read > 0 => {}
                _ => return,
            }
        }
    }
}

/// What the answer's body loop does next.
enum Step {
    Data(Bytes),
    /// Write out the buffer before going on.
    Flush,
    End,
    Failed(axum::Error),
    /// The client went away.
    Gone,
}

/// How an answer's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Out {
    /// No body (`HEAD`, 1xx, 204, 304 without a length).
    Nothing,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// Parses the request head at the start of `buffer` and removes it.
/// `Ok(None)`: the head is not complete yet.
fn parse_head(buffer: &mut BytesMut) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
            return Err(head_too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(head_too_large()),
        Err(e) => return Err(bad(format!("invalid request head: {e}"))),
    };
    // All three are set once the head is complete.
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad("invalid request head".into()));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad("invalid method".into()))?;
    let path_span = h1::span(buffer, path.as_bytes()).map_err(|_| bad("invalid target".into()))?;
    let spans = parsed
        .headers
        .iter()
        .map(|h| {
            Ok((
                h1::span(buffer, h.name.as_bytes())?,
                h1::span(buffer, h.value)?,
            ))
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(|_| bad("invalid request head".into()))?;
    let head = buffer.split_to(length).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_span))
        .map_err(|_| bad("invalid request target".into()))?;

    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut expects_continue = false;
    for (name, value) in spans {
        let name =
            HeaderName::from_bytes(&head[name]).map_err(|_| bad("invalid header name".into()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| bad(format!("invalid value of header `{name}`")))?;
        if name == header::CONTENT_LENGTH {
            let length = h1::parse_length(value.as_bytes())
                .map_err(|_| bad("invalid content-length".into()))?;
            if content_length.is_some_and(|known| known != length) {
                return Err(bad("conflicting content-length headers".into()));
            }
            content_length = Some(length);
        } else if name == header::TRANSFER_ENCODING {
            // Only `chunked` on its own: Lexora decodes no other coding.
            chunked = !transfer_encoding
                && value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked");
            transfer_encoding = true;
        } else if name == header::EXPECT {
            expects_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    // RFC 9112 §6.1 and §6.3: a request body whose last coding is not
    // chunked has no knowable end, and one with both framings is how
    // requests are smuggled past proxies that pick the other one.
    let body = match (transfer_encoding, content_length) {
        (true, Some(_)) => {
            return Err(bad(
                "both transfer-encoding and content-length are set".into()
            ))
        }
        (true, None) if chunked && minor == 1 => Framing::Chunked(h1::Chunked::strict()),
        (true, None) => {
            return Err(Refusal::Bad(
                StatusCode::NOT_IMPLEMENTED,
                "only `transfer-encoding: chunked` (HTTP/1.1) is supported".into(),
            ))
        }
        (false, length) => Framing::Length(length.unwrap_or(0)),
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        body,
        expects_continue: expects_continue && minor == 1,
    }))
}

fn bad(message: String) -> Refusal {
    Refusal::Bad(StatusCode::BAD_REQUEST, message)
}

fn head_too_large() -> Refusal {
    Refusal::Bad(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("the request head is longer than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers"),
    )
}

/// The OpenAI-shaped answer to a head that cannot be served.
fn refusal(status: StatusCode, message: &str) -> Response {
    let body = error_json(message, "invalid_request_error", None, None);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Whether the handler's answer says `connection: close`.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| h1::tokens(value.as_bytes()).any(|token| token.eq_ignore_ascii_case(b"close")))
}

/// Whether the client lets the connection carry more requests:
/// HTTP/1.1 unless it says `close`; HTTP/1.0 only if it says `keep-alive`.
fn request_keeps_alive(request: &Request<Body>) -> bool {
    let (mut close, mut keep_alive) = (false, false);
    for value in request.headers().get_all(header::CONNECTION) {
        for token in h1::tokens(value.as_bytes()) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (request.version() == Version::HTTP_11 || keep_alive)
}

/// Writes the answer's head: the status line, the handler's headers (its
/// framing and connection headers replaced by the connection's own), a
/// `date` unless it set one.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Out,
    answer: &Answer,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Out::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::Nothing | Out::Close => {}
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !answer.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !answer.http11 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the current time as an HTTP date, formatted once a second per
/// thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *cached_second = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Appends a chunk-size line (hexadecimal, no extensions).
fn chunk_size(out: &mut Vec<u8>, size: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = size;
    loop {
        at -= 1;
        digits[at] = b"0123456789ABCDEF"[rest & 0xF];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// A request body arriving after its head, as the connection reads it.
struct Channel {
    receiver: mpsc::UnboundedReceiver<io::Result<Bytes>>,
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

/// Serves an HTTP/2 connection (prior knowledge) with hyper, after the
/// bytes already read from it.
async fn serve_h2(conn: Connection, handler: impl Handler, closing: CancellationToken) {
    let io = Rewound {
        prefix: conn.read.freeze(),
        tcp: conn.tcp,
    };
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        handler
            .call(request.map(Body::new))
            .map(Ok::<_, Infallible>)
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = closing.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// A socket with bytes already read from it put back in front.
struct Rewound {
    prefix: Bytes,
    tcp: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
