//! Keep-alive connections to one plain-HTTP/1.1 backend (a local engine, a
//! gateway on the same network): the request path's own pool and client.
//!
//! A backend has one origin, so its pool is a plain stack of idle
//! connections. The most recently used connection is taken first (warm in
//! every cache); connections idle for [`IDLE_TIMEOUT`] are closed. A
//! connection goes back to the stack when its answer's body has been read
//! to the end, so a stream holds its connection until the engine has
//! finished it.
//!
//! The HTTP/1.1 client is Lexora's own ([`h1`]): the task that sends a
//! request writes it to the socket, and whoever reads the answer's body
//! reads the socket. hyper's client ran each connection in a task of its
//! own, with channels for the request, the answer and every piece of the
//! body, so every request paid for that task's wake-ups and polls, and
//! every stream chunk for one more hand-off between tasks. HTTPS providers
//! and engine processes still use hyper's client.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use crate::h1::{self, Framing, Piece};
use crate::probe::{self, Stage};

/// Idle connections older than this are closed rather than reused (the
/// same as the general client's pool).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept at most; more are closed when their answer ends.
const MAX_IDLE: usize = 1024;
/// How often connections past [`IDLE_TIMEOUT`] are closed when no request
/// comes to do it.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// TCP keep-alive probes after this much silence, so a dead peer is noticed
/// on connections waiting for a slow engine.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The answer headers the gateway reads (the engine's type of answer, and
/// its `retry-after` on a refusal); no other header of an engine's answer
/// reaches the client, so no other goes into the answer's map.
const ANSWER_HEADERS: h1::Keep = h1::Keep::Only(&[header::CONTENT_TYPE, header::RETRY_AFTER]);

/// The first read of an answer, and reads after a small one.
const READ_SIZE: usize = 8 * 1024;
/// Reads grow up to this while each fills the room it had (large answers).
const MAX_READ_SIZE: usize = 256 * 1024;

/// Why a request did not get an answer head.
#[derive(Debug)]
pub struct PoolError {
    /// No connection could be opened: nothing was sent, so retrying
    /// elsewhere is safe.
    pub connect: bool,
    /// Connecting took longer than the connect timeout.
    pub timed_out: bool,
    /// The innermost cause ("Connection refused (os error 111)").
    pub reason: String,
}

impl PoolError {
    fn connect(error: &io::Error) -> Self {
        Self {
            connect: true,
            timed_out: false,
            reason: super::root_cause(error),
        }
    }

    fn reset(error: &io::Error) -> Self {
        Self {
            connect: false,
            timed_out: false,
            reason: super::root_cause(error),
        }
    }
}

/// The pool of one backend: where it is and its idle connections.
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    /// The host without IPv6 brackets, as the resolver takes it.
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// Oldest at the front; taken from the back.
    idle: Mutex<VecDeque<Idle>>,
    reaper: AtomicBool,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One connection to the backend, and what has been read from it but not
/// yet taken.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    /// How much room the next read gets.
    read_size: usize,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buffer: BytesMut::new(),
            read_size: READ_SIZE,
        }
    }

    /// Whether an idle connection can take a request: the peer has not
    /// closed it, nor sent anything unasked. A read is tried only when the
    /// socket has signalled something since the last one.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes a request head and body, in one system call when the socket
    /// takes it all.
    async fn write(&mut self, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
        while !head.is_empty() || !body.is_empty() {
            let written = self
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = written.min(head.len());
            head = &head[from_head..];
            body = &body[written - from_head..];
        }
        Ok(())
    }

    /// Reads until the answer head is complete.
    async fn read_head(&mut self) -> io::Result<h1::Head> {
        loop {
            if !self.buffer.is_empty() {
                if let Some(head) = h1::parse_head(&mut self.buffer, ANSWER_HEADERS)? {
                    return Ok(head);
                }
            }
            if poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the engine closed the connection before answering",
                ));
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)`: the peer closed
    /// the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let room = self.read_size;
        self.buffer.reserve(room);
        // Through `AsyncRead`, a read that leaves room in the buffer tells
        // tokio the socket is drained, so the next poll waits for the
        // engine's next write instead of trying a read that can only say
        // "would block": one system call less per stream chunk.
        let read = ready!(poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.buffer
        ))?;
        self.read_size = if read >= room {
            (room * 2).min(MAX_READ_SIZE)
        } else {
            READ_SIZE
        };
        Poll::Ready(Ok(read))
    }
}

impl Pool {
    /// A pool for `host:port` (a name or an IP address, IPv6 with or
    /// without brackets); nothing is connected until the first request.
    pub fn new(host: &str, port: u16, connect_timeout: Duration) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Self {
            shared: Arc::new(Shared {
                host: host.to_owned(),
                port,
                connect_timeout,
                idle: Mutex::new(VecDeque::new()),
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Sends a request, its `head` already encoded (origin-form target,
    /// `Host` set, the `content-length` of `body`), on an idle connection
    /// or a new one, and waits for the answer head. A pooled connection
    /// known to be closed (the runtime saw the engine's close) is never
    /// used, and one that fails while the request is written is replaced
    /// transparently. A request that may have reached the engine is not
    /// sent twice, as nginx and Go's client do not resend a written POST:
    /// an engine close that crosses the request (it closed an idle
    /// connection in the instant it was taken) ends the request as a reset,
    /// left to the retry policy.
    pub async fn send(&self, head: &[u8], body: Bytes) -> Result<Response<PooledBody>, PoolError> {
        loop {
            let (mut connection, reused) = match self.shared.checkout() {
                Some(connection) => (connection, true),
                None => (self.shared.connect().await?, false),
            };
            probe::mark(Stage::Connected);
            let written = connection.write(head, &body).await;
            probe::mark(Stage::Sent);
            if let Err(e) = written {
                // A connection that failed while the request was being
                // written has answered nothing: the engine cannot have
                // acted on a request it did not get whole.
                if reused {
                    continue;
                }
                return Err(PoolError::reset(&e));
            }
            let answer = connection
                .read_head()
                .await
                .map_err(|e| PoolError::reset(&e))?;
            probe::mark(Stage::Answered);
            let (parts, ()) = answer.response.into_parts();
            let mut body = PooledBody {
                connection: Some(connection),
                framing: answer.body,
                keep_alive: answer.keep_alive,
                shared: Arc::clone(&self.shared),
            };
            if body.framing.is_done() {
                body.finish();
            }
            return Ok(Response::from_parts(parts, body));
        }
    }

    /// How many idle connections the pool holds now.
    pub fn idle(&self) -> usize {
        self.shared.lock().len()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // A panic while holding the lock cannot leave the stack half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checkout(&self) -> Option<Connection> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if entry.since.elapsed() >= IDLE_TIMEOUT {
                // The newest is too old, so are all the others.
                idle.clear();
                return None;
            }
            if entry.connection.is_open() {
                return Some(entry.connection);
            }
        }
        None
    }

    fn put(&self, connection: Connection) {
        let now = Instant::now();
        let mut idle = self.lock();
        evict_stale(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                connection,
                since: now,
            });
        }
    }

    /// Closes idle connections past their time every [`REAP_EVERY`], so a
    /// burst's connections do not stay open when no request follows; ends
    /// with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + REAP_EVERY, REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                evict_stale(&mut shared.lock(), Instant::now());
            }
        });
    }

    async fn connect(self: &Arc<Self>) -> Result<Connection, PoolError> {
        self.start_reaper();
        let stream = match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(stream) => stream.map_err(|e| PoolError::connect(&e))?,
            Err(_) => {
                return Err(PoolError {
                    connect: true,
                    timed_out: true,
                    reason: "connect timeout".to_owned(),
                })
            }
        };
        // Small SSE chunks and request heads must leave at once.
        stream
            .set_nodelay(true)
            .map_err(|e| PoolError::connect(&e))?;
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "upstream connection: TCP keep-alive not set");
        }
        Ok(Connection::new(stream))
    }

    async fn open(&self) -> io::Result<TcpStream> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return TcpStream::connect((ip, self.port)).await;
        }
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            )
        }))
    }
}

/// Closes the connections idle for [`IDLE_TIMEOUT`] or longer (the oldest
/// are at the front).
fn evict_stale(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle
        .front()
        .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// An answer's body, read from its connection by whoever polls it; the
/// connection goes back to the pool when the body has been read to the
/// end. Dropped earlier (client gone, error), the connection is closed:
/// its answer was not read through.
pub struct PooledBody {
    /// `None` once the body is complete or failed.
    connection: Option<Connection>,
    framing: Framing,
    /// The answer lets the connection carry another request.
    keep_alive: bool,
    shared: Arc<Shared>,
}

impl PooledBody {
    /// The body is complete: the connection goes back to the pool if it
    /// can carry another request (bytes past the body's end mean it
    /// cannot).
    fn finish(&mut self) {
        if let Some(connection) = self.connection.take() {
            if self.keep_alive && connection.buffer.is_empty() {
                self.shared.put(connection);
            }
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = &mut this.connection else {
                return Poll::Ready(None);
            };
            match this.framing.next(&mut connection.buffer) {
                Ok(Piece::Data(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Piece::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Piece::More) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(connection.poll_fill(cx)) {
                Ok(0) => {
                    // Closed: never reused, whether the body ended or not.
                    this.connection = None;
                    return match this.framing.at_close() {
                        Ok(_) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.exact() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
