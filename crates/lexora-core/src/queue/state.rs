//! The queue's state behind its lock: the slots in use, the waiters in
//! serving order, and how long slots are held.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{index, QueueConfig};
use crate::parse::Priority;

/// Bounds of the `Retry-After` hint for a full queue.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The lock every permit and waiter of one backend shares.
pub(super) type Shared = Mutex<State>;

/// Locks the state. Nothing panics while holding it; if something ever did,
/// going on with the counts as they are beats failing every later request
/// to the backend.
pub(super) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serving order: lowest virtual deadline first, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// `arrival + weight * aging_step`, in nanoseconds since the queue was
    /// made (wide enough that no config can overflow it).
    rank: u128,
    seq: u64,
}

struct Waiter {
    priority: Priority,
    since: Instant,
    seq: u64,
    sender: oneshot::Sender<Slot>,
}

/// What a waiter keeps to find its entry again, even after a reconfigure
/// changed the keys.
pub(super) struct Ticket {
    priority: Priority,
    since: Instant,
    seq: u64,
}

pub(super) struct State {
    pub config: QueueConfig,
    pub in_flight: usize,
    waiters: BTreeMap<Key, Waiter>,
    next_seq: u64,
    /// Origin of the keys' time axis.
    epoch: Instant,
    /// Moving average of how long a permit is held, for `retry_after`.
    mean_hold: Option<Duration>,
}

impl State {
    pub fn new(config: QueueConfig, now: Instant) -> Self {
        Self {
            config,
            in_flight: 0,
            waiters: BTreeMap::new(),
            next_seq: 0,
            epoch: now,
            mean_hold: None,
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    pub fn waiting_by_priority(&self) -> [usize; 3] {
        let mut counts = [0; 3];
        for waiter in self.waiters.values() {
            counts[index(waiter.priority)] += 1;
        }
        counts
    }

    /// Whether one more request may be in flight.
    pub fn has_room(&self) -> bool {
        match self.config.max_concurrency {
            Some(max) => self.in_flight < max,
            None => true,
        }
    }

    /// Adds a waiter; the slot will come through the receiver.
    pub fn enqueue(
        &mut self,
        priority: Priority,
        since: Instant,
    ) -> (Ticket, oneshot::Receiver<Slot>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (sender, receiver) = oneshot::channel();
        let key = self.key(priority, since, seq);
        self.waiters.insert(
            key,
            Waiter {
                priority,
                since,
                seq,
                sender,
            },
        );
        let ticket = Ticket {
            priority,
            since,
            seq,
        };
        (ticket, receiver)
    }

    /// Takes a waiter out; false if it was not waiting any more (it was
    /// sent a slot).
    pub fn leave(&mut self, ticket: &Ticket) -> bool {
        let key = self.key(ticket.priority, ticket.since, ticket.seq);
        self.waiters.remove(&key).is_some()
    }

    /// Hands free slots to the best waiters, as long as there are both.
    pub fn dispatch(&mut self, shared: &Arc<Shared>) {
        while self.has_room() {
            let Some((_, waiter)) = self.waiters.pop_first() else {
                return;
            };
            self.in_flight += 1;
            if let Err(slot) = waiter.sender.send(Slot::new(Arc::clone(shared))) {
                // A waiter takes its entry out under this lock before
                // dropping its receiver, so this should not happen; if it
                // does, count the slot free again without running its
                // release, which would take the lock we hold.
                self.in_flight -= 1;
                slot.disarm();
            }
        }
    }

    /// A permit was dropped after being held for `held`.
    pub fn finish(&mut self, held: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        // An exponential average with weight 1/8, like TCP's smoothed RTT:
        // steady enough for a hint, quick to follow a slower model.
        self.mean_hold = Some(match self.mean_hold {
            None => held,
            Some(mean) => mean - mean / 8 + held / 8,
        });
    }

    /// How soon a full queue likely has room: a slot frees about every
    /// `mean hold / limit`. Whole seconds, as `Retry-After` wants them.
    pub fn retry_after(&self) -> Duration {
        let Some(mean) = self.mean_hold else {
            return MIN_RETRY_AFTER;
        };
        let limit = self.config.max_concurrency.unwrap_or(1).max(1);
        let every = mean / u32::try_from(limit).unwrap_or(u32::MAX);
        let seconds = every.as_secs() + u64::from(every.subsec_nanos() > 0);
        Duration::from_secs(seconds).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    }

    /// Takes a new config; new weights or step re-sort the waiters.
    pub fn reconfigure(&mut self, config: QueueConfig) {
        let resort =
            config.weights != self.config.weights || config.aging_step != self.config.aging_step;
        self.config = config;
        if resort {
            let waiters = std::mem::take(&mut self.waiters);
            self.waiters = waiters
                .into_values()
                .map(|w| (self.key(w.priority, w.since, w.seq), w))
                .collect();
        }
    }

    fn key(&self, priority: Priority, since: Instant, seq: u64) -> Key {
        let arrival = since.saturating_duration_since(self.epoch).as_nanos();
        let handicap = u128::from(self.config.weight(priority)) * self.config.aging_step.as_nanos();
        Key {
            rank: arrival + handicap,
            seq,
        }
    }
}

/// One unit of the concurrency limit, counted in `in_flight` while it
/// lives. Dropping it releases the unit to the best waiter.
pub(super) struct Slot {
    /// `None` once disarmed.
    shared: Option<Arc<Shared>>,
    since: Instant,
}

impl Slot {
    /// A slot the caller has already counted in `in_flight`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared: Some(shared),
            since: Instant::now(),
        }
    }

    /// Drops the slot without releasing it, for a caller that holds the
    /// lock and has already uncounted it.
    fn disarm(mut self) {
        self.shared = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut state = lock(&shared);
            state.finish(self.since.elapsed());
            state.dispatch(&shared);
        }
    }
}
