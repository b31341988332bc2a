//! Busy polling: for a short window after a request arrives or an answer
//! moves, the runtime keeps polling its sockets instead of going to sleep
//! in `epoll_wait`.
//!
//! A gateway's request is two short bursts of work (the client's request,
//! then the engine's answer) with a wait between them. If the worker's CPU
//! goes idle in that wait, the answer has to wake it, and on virtual
//! machines a halted vCPU takes tens of microseconds to wake (measured here:
//! ~60 µs a wake-up, twice per request). A task that keeps yielding holds the
//! worker awake: tokio's worker, finding only a yielded task, polls the I/O
//! driver with a zero timeout and runs whatever became ready, so the
//! answer is read the moment it lands. Every request and every piece of an
//! answer (each chunk of a stream) starts the window again. When nothing
//! has happened for the window, the task sleeps until the next request: an
//! idle gateway costs nothing, and a busy one never idles anyway.
//!
//! It costs CPU: up to one window per quiet spell. That is why it is a
//! setting (`server.busy_poll_us`), and why the window is short.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The handle requests poke; cheap to clone.
#[derive(Clone)]
pub struct BusyPoll {
    inner: Arc<Inner>,
}

struct Inner {
    window: Duration,
    /// Bumped by every request; pollers keep polling while it changes.
    activity: AtomicU64,
    /// Pollers running, and how many of them are asleep.
    running: AtomicUsize,
    asleep: AtomicUsize,
    wake: Notify,
    /// Yields done in the windows that have ended (added once per window,
    /// not per yield, so that pollers on other cores do not contend).
    spins: AtomicU64,
}

impl BusyPoll {
    /// Pollers that keep polling for `window` after the last poke.
    pub fn new(window: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                window,
                activity: AtomicU64::new(0),
                running: AtomicUsize::new(0),
                asleep: AtomicUsize::new(0),
                wake: Notify::new(),
                spins: AtomicU64::new(0),
            }),
        }
    }

    /// A request arrived: keep polling for another window.
    #[inline]
    pub fn poke(&self) {
        let inner = &*self.inner;
        inner.activity.fetch_add(1, Ordering::SeqCst);
        // While requests keep coming the pollers are awake, and a poke is
        // one add and one load.
        if inner.asleep.load(Ordering::SeqCst) > 0 {
            inner.wake.notify_waiters();
        }
    }

    /// `body`, poking at every frame it yields: the gateway just did
    /// work, and more (the next chunk) is likely to follow.
    pub fn body(&self, body: Body) -> Body {
        Body::new(Poked {
            body,
            poller: self.clone(),
        })
    }

    /// How many times the pollers yielded in the windows that have ended.
    pub fn spins(&self) -> u64 {
        self.inner.spins.load(Ordering::Relaxed)
    }

    /// Whether every poller is asleep (no request for a window).
    pub fn is_asleep(&self) -> bool {
        let running = self.inner.running.load(Ordering::SeqCst);
        running > 0 && self.inner.asleep.load(Ordering::SeqCst) == running
    }

    /// One poller: polls while requests keep coming, sleeps between;
    /// returns when `cancel` fires. A runtime with several workers needs
    /// one per worker: a worker asleep in `epoll_wait` holds the I/O
    /// driver, and the others cannot poll it.
    pub async fn run(self, cancel: CancellationToken) {
        let inner = &*self.inner;
        inner.running.fetch_add(1, Ordering::SeqCst);
        inner.poll(&cancel).await;
        inner.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    async fn poll(&self, cancel: &CancellationToken) {
        // Not the current count: a poke that came before this task first
        // ran must still start a window.
        let mut seen = 0;
        loop {
            // Registered before counting itself asleep, so that a poke
            // that sees the count also reaches this poller.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.asleep.fetch_add(1, Ordering::SeqCst);
            let cancelled = self.activity.load(Ordering::SeqCst) == seen
                && tokio::select! {
                    () = &mut notified => false,
                    () = cancel.cancelled() => true,
                };
            self.asleep.fetch_sub(1, Ordering::SeqCst);
            if cancelled {
                return;
            }
            // Wall-clock time on purpose: this is a real busy wait, and a
            // paused test clock would never let it end.
            let mut until = Instant::now() + self.window;
            let mut spins = 0;
            while !cancel.is_cancelled() {
                tokio::task::yield_now().await;
                spins += 1;
                let now = self.activity.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    until = Instant::now() + self.window;
                } else if Instant::now() >= until {
                    break;
                }
            }
            self.spins.fetch_add(spins, Ordering::Relaxed);
            if cancel.is_cancelled() {
                return;
            }
        }
    }
}

/// An answer's body that pokes the pollers at every frame.
struct Poked {
    body: Body,
    poller: BusyPoll,
}

impl http_body::Body for Poked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            this.poller.poke();
        }
        frame
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
