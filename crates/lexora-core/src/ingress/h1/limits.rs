//! The time limits of a client connection: how long it may wait for a
//! request, and what else ends that wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The time limits of a client connection (`server.idle_timeout` and
/// `server.send_timeout`); `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ingress) struct Limits {
    /// How long a connection may stay open without a request: before its
    /// first one and between keep-alive requests.
    pub(in crate::ingress) idle: Option<Duration>,
    /// How long a client may leave its answer unread (the socket's send
    /// buffer full) before the connection is dropped, the engine's stream
    /// with it.
    pub(in crate::ingress) send: Option<Duration>,
}

/// What ends a connection's wait for its next request, besides the
/// client closing it. Kept for the connection's life: registering with the
/// shutdown signal and the timer wheel anew for every request would cost
/// locked updates of both.
pub(super) struct Ends {
    /// Shutdown (`closing` fired).
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: Option<IdleTimer>,
}

impl Ends {
    /// Ends of a connection closed by `closing` or after `idle` without a
    /// request.
    pub(super) fn new(closing: &CancellationToken, idle: Option<Duration>) -> Self {
        Self {
            closed: Box::pin(closing.clone().cancelled_owned()),
            idle: idle.map(IdleTimer::new),
        }
    }

    /// The connection starts to wait for a request now.
    pub(super) fn waiting(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.since = Instant::now();
        }
    }

    /// Ready when the wait is over.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        match &mut self.idle {
            Some(idle) => {
                ready!(idle.poll_expired(cx));
                tracing::debug!("closing a connection idle past server.idle_timeout");
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

/// Ends a connection that waits for a request longer than its limit.
///
/// The timer is re-armed only when it fires early, at most once per
/// `limit`, and a wake-up it brings while a request is being served is
/// ignored.
struct IdleTimer {
    limit: Duration,
    /// When the connection last started to wait for a request.
    since: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        let since = Instant::now();
        Self {
            limit,
            since,
            timer: Box::pin(tokio::time::sleep_until(since + limit)),
        }
    }

    /// Ready once the connection has waited `limit` since [`Self::since`].
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.since + self.limit;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}
