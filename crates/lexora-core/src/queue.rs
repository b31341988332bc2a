//! Queue: a per-backend concurrency limit with a priority queue in front.
//!
//! A backend serves at most [`QueueConfig::max_concurrency`] requests at
//! once; each holds a [`Permit`]. A request above the limit waits. When a
//! permit is dropped, its slot goes straight to the best waiter: the
//! releasing side picks the waiter and sends it the slot through a oneshot,
//! so the slot never passes through "free", and a newcomer takes a free slot
//! only when nobody is waiting. Nobody barges ahead of the queue.
//!
//! # Order and aging
//!
//! A waiter's rank is `weight(priority) - waited / aging_step`, and the
//! lowest rank is served first; equal ranks go by arrival. All waiters age at
//! the same rate, so the order of two waiters never changes while they wait,
//! and the rank reduces to a fixed key, `arrival + weight * aging_step` (a
//! virtual deadline). Waiters sit sorted by that key, which makes the choice
//! at release time a pop from the front.
//!
//! With the seed weights (high 1, normal 5, low 10) and the default step of
//! one second ([`DEFAULT_AGING_STEP`]), a low request that has waited 9 s is
//! ahead of a fresh high one. In general nobody arriving more than
//! `(weight - smallest weight) * aging_step` after a waiter can pass it, so
//! low priority never starves: once that time is up, only the (at most
//! `max_size`) requests already ahead of it stay ahead.
//!
//! # Leaving the queue
//!
//! A request does not wait when the queue already holds `max_size` waiters
//! ([`QueueError::Full`], whatever its priority), leaves when its deadline
//! passes ([`QueueError::Timeout`]), and leaves at once, freeing its place,
//! when the client goes away and the [`BackendQueue::acquire`] future is
//! dropped.
//!
//! # Why a lock and not a task
//!
//! A permit is released in `Drop`, which cannot await, and every decision is
//! a few operations on a small map. So the state sits behind one mutex, held
//! only for those operations and never across an await. Hand-off happens
//! under that lock; a waiter that leaves takes its entry out under the same
//! lock, and if the entry is already gone, a slot was sent to it and it
//! passes that slot on. That is what makes cancellation race-free: a slot is
//! always either counted free, in a permit, or in a channel whose receiver
//! will drop it on to the next waiter.

mod state;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::parse::Priority;
use state::{lock, Shared, Slot, State, Ticket};

/// Default [`QueueConfig::aging_step`]: a waiter gains one weight unit per
/// second, so with weights 1/5/10 a low request waiting 9 s outranks a fresh
/// high one (and a normal one waiting 4 s does).
pub const DEFAULT_AGING_STEP: Duration = Duration::from_secs(1);

/// Limits and ordering for one backend's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Max requests in flight at the backend; `None` = unlimited (then
    /// acquire never waits and costs one uncontended lock).
    pub max_concurrency: Option<usize>,
    /// Max waiting requests (seed: `queue.max_size`).
    pub max_size: usize,
    /// Weights per priority (seed: `queue.priorities`), lower = first.
    pub weights: [u32; 3], // [high, normal, low]
    /// How long a waiter must wait to gain one weight unit. Zero turns the
    /// queue into plain first come, first served.
    pub aging_step: Duration,
}

impl QueueConfig {
    /// The weight of `priority`.
    pub fn weight(&self, priority: Priority) -> u32 {
        self.weights[index(priority)]
    }
}

impl Default for QueueConfig {
    /// The seed's queue settings, without a concurrency limit.
    fn default() -> Self {
        Self {
            max_concurrency: None,
            max_size: 100,
            weights: [1, 5, 10],
            aging_step: DEFAULT_AGING_STEP,
        }
    }
}

/// Why a request got no slot.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueError {
    /// Too many requests wait already. `retry_after` is a hint for the
    /// `Retry-After` header: the mean time a permit is held divided by the
    /// concurrency limit (roughly how soon a place frees up), in whole
    /// seconds between 1 s and 60 s; 1 s before any request has finished.
    #[error("the queue is full ({size} waiting)")]
    Full { size: usize, retry_after: Duration },
    /// The deadline passed while waiting.
    #[error("waited {waited:?} for a free slot")]
    Timeout { waited: Duration },
}

/// The concurrency limit and wait queue of one backend.
pub struct BackendQueue {
    shared: Arc<Shared>,
}

impl BackendQueue {
    /// An empty queue with `config`'s limits.
    pub fn new(config: QueueConfig) -> Arc<Self> {
        let state = State::new(config, Instant::now());
        Arc::new(Self {
            shared: Arc::new(Mutex::new(state)),
        })
    }

    /// Waits for a slot until `deadline`. Dropping the future leaves the
    /// queue at once.
    ///
    /// A free slot is taken at once when nobody waits, even if `deadline`
    /// has passed: the request did not wait.
    pub async fn acquire(
        self: &Arc<Self>,
        priority: Priority,
        deadline: Instant,
    ) -> Result<Permit, QueueError> {
        let since = Instant::now();
        let (ticket, receiver) = {
            let mut state = lock(&self.shared);
            if state.waiting() == 0 && state.has_room() {
                state.in_flight += 1;
                return Ok(Permit {
                    _slot: Slot::new(Arc::clone(&self.shared)),
                    waited: Duration::ZERO,
                });
            }
            let size = state.waiting();
            if size >= state.config.max_size {
                return Err(QueueError::Full {
                    size,
                    retry_after: state.retry_after(),
                });
            }
            state.enqueue(priority, since)
        };
        let mut waiting = Waiting {
            shared: &self.shared,
            ticket,
            receiver,
            served: false,
        };
        match tokio::time::timeout_at(deadline, &mut waiting.receiver).await {
            Ok(Ok(slot)) => {
                waiting.served = true;
                Ok(Permit {
                    _slot: slot,
                    waited: since.elapsed(),
                })
            }
            // The sender lives in the queue's state, which outlives this
            // call, and is only dropped after sending; were it ever dropped
            // unsent, giving up like at the deadline beats waiting forever.
            Ok(Err(_)) | Err(_) => Err(QueueError::Timeout {
                waited: since.elapsed(),
            }),
        }
    }

    /// Replaces the limits on config reload, keeping in-flight requests and
    /// waiters: raising the limit hands the new slots to waiters at once;
    /// lowering it lets in-flight requests finish and admits nobody until
    /// fewer than the new limit are in flight. Waiters beyond a lowered
    /// `max_size` keep their places; new weights or step reorder them.
    pub fn reconfigure(&self, config: QueueConfig) {
        let mut state = lock(&self.shared);
        state.reconfigure(config);
        state.dispatch(&self.shared);
    }

    /// Requests holding a permit.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared).in_flight
    }

    /// Requests waiting for a permit.
    pub fn waiting(&self) -> usize {
        lock(&self.shared).waiting()
    }

    /// Waiting counts per priority `[high, normal, low]`.
    pub fn waiting_by_priority(&self) -> [usize; 3] {
        lock(&self.shared).waiting_by_priority()
    }
}

impl fmt::Debug for BackendQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("BackendQueue")
            .field("config", &state.config)
            .field("in_flight", &state.in_flight)
            .field("waiting", &state.waiting())
            .finish()
    }
}

/// A slot at the backend; dropping it frees the slot (handing it to the
/// best waiter).
pub struct Permit {
    /// Held for its `Drop`, which releases the slot.
    _slot: Slot,
    waited: Duration,
}

impl Permit {
    /// How long the request waited in the queue (zero if a slot was free).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("waited", &self.waited)
            .finish_non_exhaustive()
    }
}

/// A place in the queue, given up when dropped unless a slot was taken.
struct Waiting<'a> {
    shared: &'a Shared,
    ticket: Ticket,
    receiver: oneshot::Receiver<Slot>,
    served: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let still_waiting = lock(self.shared).leave(&self.ticket);
        if !still_waiting {
            // The entry is gone, so a slot was sent under the lock we just
            // held and sits in the channel. Dropping it (now that the lock is
            // free) hands it to the next waiter or back to the pool.
            if let Ok(slot) = self.receiver.try_recv() {
                drop(slot);
            }
        }
    }
}

/// Position of `priority` in per-priority arrays (`[high, normal, low]`).
fn index(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

#[cfg(test)]
mod tests;
