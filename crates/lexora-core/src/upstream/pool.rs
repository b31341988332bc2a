//! Keep-alive connections to one plain-HTTP/1.1 backend (a local engine, a
//! gateway on the same network): the request path's own pool.
//!
//! hyper-util's general client keys every checkout by scheme and host
//! (SipHash over the authority, twice per request), wraps each connection
//! in layers of futures and re-derives the request's URI form; a backend
//! has one origin, so its pool is a plain stack of idle connections. The
//! most recently used connection is taken first (warm in every cache);
//! connections idle for [`IDLE_TIMEOUT`] are closed. A connection goes back
//! to the stack when its answer's body has been read to the end, so a
//! stream holds its connection until the engine has finished it.
//!
//! Every connection still runs hyper's HTTP/1 client in a task of its own.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

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

type Sender = SendRequest<Full<Bytes>>;

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
    fn connect(error: &std::io::Error) -> Self {
        Self {
            connect: true,
            timed_out: false,
            reason: super::root_cause(error),
        }
    }

    fn reset(error: &hyper::Error) -> Self {
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
    sender: Sender,
    since: Instant,
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

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection
    /// or a new one, and waits for the answer head. A pooled connection
    /// the peer had closed before the request was written is replaced
    /// transparently; a request that may have reached the engine is not
    /// sent twice.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, PoolError> {
        loop {
            let (mut sender, reused) = match self.shared.checkout() {
                Some(sender) => (sender, true),
                None => (self.shared.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (head, body) = response.into_parts();
                    let body = PooledBody::new(body, sender, &self.shared);
                    return Ok(Response::from_parts(head, body));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::reset(error.error())),
                },
            }
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

    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if entry.since.elapsed() >= IDLE_TIMEOUT {
                // The newest is too old, so are all the others.
                idle.clear();
                return None;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            // The connection task has not yet seen the end of the answer it
            // delivered; it will be ready in a moment.
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    shared.put(sender);
                }
            });
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        evict_stale(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: now });
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

    async fn connect(self: &Arc<Self>) -> Result<Sender, PoolError> {
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
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PoolError::reset(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    async fn open(&self) -> std::io::Result<TcpStream> {
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
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
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

/// An answer's body; its connection goes back to the pool when the body
/// has been read to the end. Dropped earlier (client gone, error), the
/// connection is closed: its answer was not read through.
pub struct PooledBody {
    body: Incoming,
    release: Option<(Sender, Arc<Shared>)>,
}

impl PooledBody {
    fn new(body: Incoming, sender: Sender, shared: &Arc<Shared>) -> Self {
        let mut this = Self {
            body,
            release: Some((sender, Arc::clone(shared))),
        };
        if this.body.is_end_stream() {
            this.release();
        }
        this
    }

    fn release(&mut self) {
        if let Some((sender, shared)) = self.release.take() {
            shared.put(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if this.body.is_end_stream() => this.release(),
            None => this.release(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.release = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
