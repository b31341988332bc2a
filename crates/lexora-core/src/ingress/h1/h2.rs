//! HTTP/2 with prior knowledge: the connection is handed to hyper, with
//! the bytes already read put back in front.
//!
//! hyper polls an answer's body for its next frame only once the client
//! has room for more (HTTP/2 flow control, and the stream's send buffer),
//! so a client that stops reading would hold its answer, and the engine's
//! stream and backend slot inside it, for as long as it likes: no timeout
//! of the relay runs while the body is not polled. The connection watches
//! its answers instead, and lets go of one that has waited for the client
//! for `server.send_timeout`, as the HTTP/1.1 server does.

use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http::Request;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Connection, Handler, Limits};

/// Serves an HTTP/2 connection (prior knowledge) with hyper, after the
/// bytes already read from it, until the client closes it, `closing`
/// fires, or no request has been open on it for `limits.idle` (both close
/// it gracefully: open streams finish). An answer the client has left
/// untaken for `limits.send` is dropped, and its stream reset.
pub(super) async fn serve(
    conn: Connection,
    handler: impl Handler,
    closing: CancellationToken,
    limits: Limits,
) {
    let io = Rewound {
        prefix: conn.read.freeze(),
        tcp: conn.tcp,
    };
    let activity = Arc::new(Mutex::new(Activity {
        open: 0,
        since: Instant::now(),
        answers: Vec::new(),
    }));
    let tracked = Arc::clone(&activity);
    let watch_sends = limits.send.is_some();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let open = Open::start(&tracked);
        let activity = Arc::clone(&tracked);
        handler
            .call(request.map(Body::new))
            .map(move |(mut response, stamp)| {
                if let Some(stamp) = stamp {
                    stamp.write_headers(response.headers_mut());
                }
                let response = response.map(|body| {
                    // Open until its answer's body is done with.
                    let answer = Arc::new(Mutex::new(Answer {
                        body: Some(body),
                        handed: None,
                        open: Some(open),
                    }));
                    if watch_sends {
                        lock(&activity).keep(&answer);
                    }
                    Body::new(Tracked { answer })
                });
                Ok::<_, Infallible>(response)
            })
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = closing.cancelled() => {}
        () = watch(&activity, limits) => {}
    }
    connection.as_mut().graceful_shutdown();
    // Only answers cut off for a client that stopped reading can be left
    // (hyper waits for room to send their end): not for ever.
    let grace = limits.send.or(limits.idle).unwrap_or(Duration::MAX);
    let _ = tokio::time::timeout(grace, connection).await;
}

/// Returns once no request has been open for `limits.idle`; meanwhile
/// drops every answer left untaken by the client for `limits.send`.
async fn watch(activity: &Mutex<Activity>, limits: Limits) {
    if limits.idle.is_none() && limits.send.is_none() {
        return std::future::pending().await;
    }
    loop {
        let now = Instant::now();
        let (open, since, stalled, next_stall) = {
            let mut activity = lock(activity);
            let (stalled, next) = activity.stalled(limits.send, now);
            (activity.open, activity.since, stalled, next)
        };
        // Dropped outside every lock: a request that stops counting as open
        // takes the connection's.
        for answer in stalled {
            tracing::debug!("dropping an HTTP/2 answer left unread past server.send_timeout");
            let taken = {
                let mut answer = lock(&answer);
                (answer.body.take(), answer.open.take())
            };
            drop(taken);
        }
        let next_idle = match limits.idle {
            Some(limit) if open == 0 && now >= since + limit => {
                tracing::debug!("closing an HTTP/2 connection idle past server.idle_timeout");
                return;
            }
            // With a request open, look again a whole limit later.
            Some(limit) if open == 0 => Some(since + limit),
            Some(limit) => Some(now + limit),
            None => None,
        };
        let next = match (next_idle, next_stall) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(now + Duration::from_secs(3600)),
        };
        tokio::time::sleep_until(next).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The requests open on a connection, since when it has had none, and
/// (when sends are timed) its answers.
struct Activity {
    open: usize,
    since: Instant,
    answers: Vec<Weak<Mutex<Answer>>>,
}

impl Activity {
    /// Adds `answer` to those watched. Finished ones are forgotten here as
    /// well as by the watch: thousands of requests a second on one
    /// connection would otherwise pile up between two looks.
    fn keep(&mut self, answer: &Arc<Mutex<Answer>>) {
        if self.answers.len() >= 2 * self.open.max(32) {
            self.answers.retain(|weak| weak.strong_count() > 0);
        }
        self.answers.push(Arc::downgrade(answer));
    }

    /// The answers handed to hyper at least `limit` ago and not asked for
    /// since, and when the next one would be; forgets the finished ones.
    fn stalled(
        &mut self,
        limit: Option<Duration>,
        now: Instant,
    ) -> (Vec<Arc<Mutex<Answer>>>, Option<Instant>) {
        let Some(limit) = limit else {
            return (Vec::new(), None);
        };
        let mut stalled = Vec::new();
        let mut next: Option<Instant> = None;
        self.answers.retain(|weak| {
            let Some(answer) = weak.upgrade() else {
                return false;
            };
            let handed = lock(&answer).handed;
            match handed.map(|at| at + limit) {
                Some(due) if due <= now => stalled.push(answer),
                Some(due) => next = Some(next.map_or(due, |n| n.min(due))),
                None => {}
            }
            true
        });
        // Nothing waiting on the client: look again a whole limit later.
        (stalled, Some(next.unwrap_or(now + limit)))
    }
}

/// One open request: counted from its head until its answer's body is
/// dropped.
struct Open(Arc<Mutex<Activity>>);

impl Open {
    fn start(activity: &Arc<Mutex<Activity>>) -> Self {
        activity.lock().unwrap_or_else(|e| e.into_inner()).open += 1;
        Self(Arc::clone(activity))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut activity = self.0.lock().unwrap_or_else(|e| e.into_inner());
        activity.open -= 1;
        if activity.open == 0 {
            activity.since = Instant::now();
        }
    }
}

/// One answer, shared between hyper (through [`Tracked`]) and the
/// connection's watch.
struct Answer {
    /// `None` once dropped for a client that stopped reading.
    body: Option<Body>,
    /// When a frame was last handed to hyper, until hyper asks for the
    /// next: meanwhile the answer waits on the client.
    handed: Option<Instant>,
    /// Keeps the request counted as open until the body is dropped.
    open: Option<Open>,
}

/// An answer's body as hyper sees it.
struct Tracked {
    answer: Arc<Mutex<Answer>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut answer = lock(&self.answer);
        answer.handed = None;
        let Some(body) = answer.body.as_mut() else {
            // An error resets the stream.
            let error = io::Error::new(io::ErrorKind::TimedOut, "client stopped reading");
            return Poll::Ready(Some(Err(axum::Error::new(error))));
        };
        let frame = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            answer.handed = Some(Instant::now());
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.answer)
            .body
            .as_ref()
            .is_some_and(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        lock(&self.answer)
            .body
            .as_ref()
            .map(http_body::Body::size_hint)
            .unwrap_or_default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_answers_do_not_pile_up() {
        let activity = Arc::new(Mutex::new(Activity {
            open: 0,
            since: Instant::now(),
            answers: Vec::new(),
        }));
        let live: Vec<_> = (0..10)
            .map(|_| {
                let answer = Arc::new(Mutex::new(Answer {
                    body: Some(Body::empty()),
                    handed: None,
                    open: Some(Open::start(&activity)),
                }));
                lock(&activity).keep(&answer);
                answer
            })
            .collect();
        for _ in 0..10_000 {
            let answer = Arc::new(Mutex::new(Answer {
                body: Some(Body::empty()),
                handed: None,
                open: Some(Open::start(&activity)),
            }));
            lock(&activity).keep(&answer);
        }
        let activity = lock(&activity);
        assert_eq!(activity.open, 10);
        assert!(activity.answers.len() <= 64, "{}", activity.answers.len());
        let kept = activity.answers.iter().filter(|w| w.strong_count() > 0);
        assert_eq!(kept.count(), live.len());
    }
}
