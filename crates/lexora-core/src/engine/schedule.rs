//! Swap-aware scheduling: which engine runs when several models (or
//! variants) share one machine's memory.
//!
//! Every engine request asks the [`Scheduler`] for a [`Claim`] before it
//! leases its engine, and holds the claim until its answer ends. One driver
//! task decides, in one place, from the waiting requests and the engines
//! loaded:
//!
//! - A request is served at once by a loaded engine of its model whose
//!   context is large enough (a small prompt does not swap a large variant
//!   out), unless that engine is closing.
//! - Otherwise the scheduler commits to loading one engine: the one the
//!   best waiting request needs (priority, then age; waiting ages a request
//!   up one priority level per `min_loaded`). Once committed, newcomers for
//!   other engines cannot starve it.
//! - Room is made by closing engines: the model's other variant, then,
//!   when `memory_budget_mb` is short, the least recently used engines. A
//!   closing engine takes no new requests; it is stopped when its running
//!   ones end (or after its drain timeout). An engine with requests running
//!   or waiting is closed only after it has been loaded for `min_loaded`,
//!   so two busy models alternate in batches instead of thrashing.
//! - When the committed engine is loaded, every waiting request it can
//!   serve gets its claim in the same pass: swaps are batched.
//! - Idle engines (no claims for the model's `idle_unload`) are stopped.
//!
//! The [`Board`] holds the state and makes the decisions without doing any
//! I/O, so the policy is tested on its own; the driver carries them out
//! (answers waiters, stops engines) and sleeps until the next event or
//! deadline.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::{oneshot, Notify};
use tokio::time::{sleep_until, Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{EngineManager, EngineModel};
use crate::parse::Priority;

/// How engines share the machine (`engines:` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSettings {
    /// The total `memory_mb` of the engines that may run at once; `None`
    /// runs every model's engine side by side (one variant per model).
    pub memory_budget_mb: Option<u64>,
    /// How long an engine with requests running or waiting stays loaded
    /// before another engine may take its place.
    pub min_loaded: Duration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            memory_budget_mb: None,
            min_loaded: Duration::from_secs(10),
        }
    }
}

/// Identifies one registered manager.
pub(crate) type SlotId = u64;

/// Why an engine is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// To make room for another engine (or variant).
    Evict,
    /// Nobody used it for its idle TTL.
    Idle,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Evict => "evicted for another engine",
            Self::Idle => "idle",
        }
    }
}

/// One model's engine as the scheduler sees it.
#[derive(Debug)]
struct Slot {
    manager: Weak<EngineManager>,
    /// `memory_mb` of each variant (0 when unset), in the manager's order.
    memory: Vec<u64>,
    idle_unload: Option<Duration>,
    drain_timeout: Duration,
    resident: Option<Resident>,
}

/// An engine the scheduler has let load: it counts against the budget
/// from the moment it is chosen until it has been stopped.
#[derive(Debug)]
struct Resident {
    variant: usize,
    /// Tells this residency from a later one of the same slot, so late
    /// claim releases and stop reports do not touch the wrong one.
    epoch: u64,
    since: Instant,
    last_used: Instant,
    claims: usize,
    /// Set when the scheduler decided to stop it; no new claims.
    closing: Option<(Instant, Reason)>,
    /// The stop has been handed to the manager.
    stopping: bool,
}

impl Resident {
    fn accepts(&self, min_variant: usize) -> bool {
        self.closing.is_none() && self.variant >= min_variant
    }
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    slot: SlotId,
    /// The smallest variant whose context fits the request.
    min_variant: usize,
    priority: Priority,
    arrived: Instant,
    reply: oneshot::Sender<Claim>,
}

/// A decision for the driver: let a waiter go to `variant` of `slot`.
#[derive(Debug)]
pub(crate) struct Grant {
    reply: oneshot::Sender<Claim>,
    slot: SlotId,
    variant: usize,
    epoch: u64,
}

/// A decision for the driver: stop the engine of `slot`.
#[derive(Debug)]
pub(crate) struct Stop {
    pub slot: SlotId,
    pub epoch: u64,
    pub reason: Reason,
    /// Stopped under running requests because the drain timeout passed.
    pub forced: bool,
}

/// What one planning pass decided.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    pub grants: Vec<Grant>,
    pub stops: Vec<Stop>,
    /// When to plan again if nothing happens before.
    pub wake_at: Option<Instant>,
}

impl Decisions {
    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The scheduler's state and policy; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Board {
    settings: ScheduleSettings,
    slots: HashMap<SlotId, Slot>,
    waiters: Vec<Waiter>,
    /// The engine to load next (slot, variant), kept until it is loaded or
    /// nobody waits for it any more.
    committed: Option<(SlotId, usize)>,
    next_id: u64,
}

/// A waiter's priority level, raised by one for every `aging` it waited.
fn rank(waiter: &Waiter, now: Instant, aging: Duration) -> u64 {
    let level = match waiter.priority {
        Priority::High => 2,
        Priority::Normal => 1,
        Priority::Low => 0,
    };
    let waited = now.saturating_duration_since(waiter.arrived);
    level + waited.as_secs() / aging.as_secs().max(1)
}

impl Board {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn add_slot(
        &mut self,
        manager: Weak<EngineManager>,
        model: &EngineModel,
        idle_unload: Option<Duration>,
        drain_timeout: Duration,
    ) -> SlotId {
        let id = self.id();
        let memory = model
            .variants
            .iter()
            .map(|v| v.memory_mb.unwrap_or(0))
            .collect();
        self.slots.insert(
            id,
            Slot {
                manager,
                memory,
                idle_unload,
                drain_timeout,
                resident: None,
            },
        );
        id
    }

    pub(crate) fn enqueue(
        &mut self,
        slot: SlotId,
        min_variant: usize,
        priority: Priority,
        now: Instant,
    ) -> (u64, oneshot::Receiver<Claim>) {
        let (reply, rx) = oneshot::channel();
        let id = self.id();
        self.waiters.push(Waiter {
            id,
            slot,
            min_variant,
            priority,
            arrived: now,
            reply,
        });
        (id, rx)
    }

    pub(crate) fn withdraw(&mut self, waiter: u64) {
        self.waiters.retain(|w| w.id != waiter);
    }

    /// A claim ended: the engine may be closed or go idle.
    pub(crate) fn release(&mut self, slot: SlotId, epoch: u64, now: Instant) {
        if let Some(r) = self.resident_mut(slot, epoch) {
            r.claims = r.claims.saturating_sub(1);
            r.last_used = now;
        }
    }

    /// The manager stopped the engine: its memory is free.
    pub(crate) fn stopped(&mut self, slot: SlotId, epoch: u64) {
        if let Some(slot) = self.slots.get_mut(&slot) {
            if slot.resident.as_ref().is_some_and(|r| r.epoch == epoch) {
                slot.resident = None;
            }
        }
    }

    /// Forget slots whose manager is gone (a reload replaced it; its
    /// engine stopped when the manager dropped).
    pub(crate) fn prune(&mut self) {
        self.slots.retain(|_, s| s.manager.strong_count() > 0);
        let slots = &self.slots;
        self.waiters.retain(|w| slots.contains_key(&w.slot));
        if self.committed.is_some_and(|(s, _)| !slots.contains_key(&s)) {
            self.committed = None;
        }
    }

    pub(crate) fn manager(&self, slot: SlotId) -> Option<Arc<EngineManager>> {
        self.slots.get(&slot)?.manager.upgrade()
    }

    /// Requests waiting for the engine of `slot`.
    pub(crate) fn waiting(&self, slot: SlotId) -> usize {
        self.waiters.iter().filter(|w| w.slot == slot).count()
    }

    fn resident_mut(&mut self, slot: SlotId, epoch: u64) -> Option<&mut Resident> {
        self.slots
            .get_mut(&slot)?
            .resident
            .as_mut()
            .filter(|r| r.epoch == epoch)
    }

    /// One planning pass at `now`.
    pub(crate) fn plan(&mut self, now: Instant) -> Decisions {
        let mut out = Decisions::default();
        self.waiters.retain(|w| !w.reply.is_closed());
        let aging = self.aging();
        self.waiters
            .sort_by_key(|w| (Reverse(rank(w, now, aging)), w.arrived, w.id));
        loop {
            // Close what the next load needs before granting, so the
            // requests arriving as an engine's turn ends wait behind it.
            let target = self.commitment(now);
            let room = target.is_some_and(|t| self.make_room(t, now, &mut out));
            self.grant_to_loaded(now, &mut out);
            let Some(target) = target.filter(|_| room) else {
                break;
            };
            let epoch = self.id();
            let (slot, variant) = target;
            if let Some(slot) = self.slots.get_mut(&slot) {
                slot.resident = Some(Resident {
                    variant,
                    epoch,
                    since: now,
                    last_used: now,
                    claims: 0,
                    closing: None,
                    stopping: false,
                });
            }
            self.committed = None;
            // Its batch, before anything else is decided.
            self.grant_to_loaded(now, &mut out);
        }
        self.close_idle(now, &mut out);
        self.stop_closed(now, &mut out);
        out
    }

    /// Grant every waiter a loaded engine can serve.
    fn grant_to_loaded(&mut self, now: Instant, out: &mut Decisions) {
        let slots = &mut self.slots;
        let mut kept = Vec::with_capacity(self.waiters.len());
        for waiter in self.waiters.drain(..) {
            let resident = slots
                .get_mut(&waiter.slot)
                .and_then(|s| s.resident.as_mut())
                .filter(|r| r.accepts(waiter.min_variant));
            match resident {
                Some(r) => {
                    r.claims += 1;
                    r.last_used = now;
                    out.grants.push(Grant {
                        reply: waiter.reply,
                        slot: waiter.slot,
                        variant: r.variant,
                        epoch: r.epoch,
                    });
                }
                None => kept.push(waiter),
            }
        }
        self.waiters = kept;
    }

    /// The engine to load next. The first (best) waiter that no loaded
    /// engine can serve names it; the choice is kept while somebody needs
    /// it, so newcomers of the same rank cannot starve it, and changes only
    /// for a waiter of a strictly higher rank. Waiters of an engine being
    /// closed wait until it has stopped.
    fn commitment(&mut self, now: Instant) -> Option<(SlotId, usize)> {
        let slots = &self.slots;
        let best = self.waiters.iter().find(|w| {
            let resident = slots.get(&w.slot).and_then(|s| s.resident.as_ref());
            resident.is_none_or(|r| r.closing.is_none() && r.variant < w.min_variant)
        });
        let kept = self.committed.and_then(|(slot, variant)| {
            self.waiters
                .iter()
                .find(|w| w.slot == slot && w.min_variant <= variant)
        });
        let aging = self.aging();
        self.committed = match (kept, best) {
            (Some(kept), Some(best)) if rank(best, now, aging) > rank(kept, now, aging) => {
                Some((best.slot, best.min_variant))
            }
            (Some(_), _) => self.committed,
            (None, best) => best.map(|w| (w.slot, w.min_variant)),
        };
        self.committed
    }

    /// Waiting this long raises a request one priority level.
    fn aging(&self) -> Duration {
        self.settings.min_loaded.max(Duration::from_secs(1))
    }

    /// Close what must go for `target` to load. True when it may load now.
    fn make_room(
        &mut self,
        (slot, variant): (SlotId, usize),
        now: Instant,
        out: &mut Decisions,
    ) -> bool {
        let Some(need) = self.slots.get(&slot).map(|s| s.memory[variant]) else {
            return false;
        };
        // The model runs one variant at a time: its own engine goes first.
        let mut victims: Vec<SlotId> = Vec::new();
        if self.slots[&slot].resident.is_some() {
            victims.push(slot);
        }
        if let Some(budget) = self.settings.memory_budget_mb {
            let used: u64 = self
                .slots
                .values()
                .filter_map(|s| s.resident.as_ref().map(|r| s.memory[r.variant]))
                .sum();
            let mut free = budget
                .saturating_sub(used)
                .saturating_add(self.resident_memory(slot));
            let mut others: Vec<(SlotId, (bool, bool, Instant))> = self
                .slots
                .iter()
                .filter(|(id, _)| **id != slot)
                .filter_map(|(id, s)| {
                    let r = s.resident.as_ref()?;
                    Some((
                        *id,
                        (r.closing.is_none(), self.in_demand(*id, r), r.last_used),
                    ))
                })
                .collect();
            // Already closing first, then idle ones, then least recently used.
            others.sort_by_key(|(_, key)| *key);
            for (id, _) in others {
                if free >= need {
                    break;
                }
                free = free.saturating_add(self.resident_memory(id));
                victims.push(id);
            }
            // A variant larger than the budget (refused by config checks)
            // still gets to run alone rather than never.
        }
        let min_loaded = self.settings.min_loaded;
        for id in &victims {
            let demand = self.slots[id]
                .resident
                .as_ref()
                .is_some_and(|r| self.in_demand(*id, r));
            let Some(r) = self.slots.get_mut(id).and_then(|s| s.resident.as_mut()) else {
                continue;
            };
            if r.closing.is_some() {
                continue;
            }
            let protected_until = r.since + min_loaded;
            if demand && now < protected_until {
                out.wake(protected_until);
            } else {
                r.closing = Some((now, Reason::Evict));
            }
        }
        victims.iter().all(|id| self.slots[id].resident.is_none())
    }

    fn resident_memory(&self, slot: SlotId) -> u64 {
        let slot = &self.slots[&slot];
        slot.resident.as_ref().map_or(0, |r| slot.memory[r.variant])
    }

    /// Requests run on this engine or wait for it.
    fn in_demand(&self, slot: SlotId, resident: &Resident) -> bool {
        resident.claims > 0
            || self
                .waiters
                .iter()
                .any(|w| w.slot == slot && w.min_variant <= resident.variant)
    }

    fn close_idle(&mut self, now: Instant, out: &mut Decisions) {
        for slot in self.slots.values_mut() {
            let Some(ttl) = slot.idle_unload else {
                continue;
            };
            let Some(r) = slot.resident.as_mut() else {
                continue;
            };
            if r.closing.is_some() || r.claims > 0 {
                continue;
            }
            let due = r.last_used + ttl;
            if now >= due {
                r.closing = Some((now, Reason::Idle));
            } else {
                out.wake(due);
            }
        }
    }

    /// Hand closed engines to their managers to stop: once their claims
    /// have ended, or under them after the drain timeout.
    fn stop_closed(&mut self, now: Instant, out: &mut Decisions) {
        for (id, slot) in &mut self.slots {
            let Some(r) = slot.resident.as_mut() else {
                continue;
            };
            let Some((since, reason)) = r.closing else {
                continue;
            };
            if r.stopping {
                continue;
            }
            let forced_at = since + slot.drain_timeout;
            if r.claims == 0 || now >= forced_at {
                r.stopping = true;
                out.stops.push(Stop {
                    slot: *id,
                    epoch: r.epoch,
                    reason,
                    forced: r.claims > 0,
                });
            } else {
                out.wake(forced_at);
            }
        }
    }

    /// Memory of the engines loaded or loading, in MiB.
    pub(crate) fn memory_used(&self) -> u64 {
        self.slots.keys().map(|id| self.resident_memory(*id)).sum()
    }
}

/// The right to use one engine, from the scheduler: held (inside the
/// [`super::Lease`]) until the answer ends.
#[derive(Debug)]
pub struct Claim {
    scheduler: Arc<Inner>,
    slot: SlotId,
    epoch: u64,
    /// The variant to lease: the one loaded or about to load.
    pub(crate) variant: usize,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.scheduler
            .board()
            .release(self.slot, self.epoch, Instant::now());
        self.scheduler.wake.notify_one();
    }
}

#[derive(Debug)]
struct Inner {
    board: Mutex<Board>,
    wake: Notify,
    cancel: CancellationToken,
    driver_started: AtomicBool,
}

impl Inner {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decides which engines run; shared by every engine backend of a gateway
/// and kept across reloads. See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// What `/stats` shows about the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleStatus {
    pub memory_budget_mb: Option<u64>,
    pub memory_used_mb: u64,
    pub waiting: usize,
}

impl Scheduler {
    /// A scheduler with nothing registered.
    pub fn new(settings: ScheduleSettings) -> Arc<Self> {
        let board = Board {
            settings,
            ..Board::default()
        };
        Arc::new(Self {
            inner: Arc::new(Inner {
                board: Mutex::new(board),
                wake: Notify::new(),
                cancel: CancellationToken::new(),
                driver_started: AtomicBool::new(false),
            }),
        })
    }

    /// Applies reloaded settings; waiters and loaded engines are kept.
    pub fn reconfigure(&self, settings: ScheduleSettings) {
        self.inner.board().settings = settings;
        self.inner.wake.notify_one();
    }

    /// A manager for `model` whose engines this scheduler runs.
    pub fn manager(
        self: &Arc<Self>,
        model: super::EngineModel,
        settings: super::EngineSettings,
    ) -> Arc<EngineManager> {
        let idle = settings.idle_unload;
        let drain = settings.drain_timeout;
        let manager = EngineManager::new(model, settings);
        let slot =
            self.inner
                .board()
                .add_slot(Arc::downgrade(&manager), manager.model(), idle, drain);
        manager.attach(Arc::downgrade(self), slot);
        manager
    }

    /// A snapshot for `/stats`.
    pub fn status(&self) -> ScheduleStatus {
        let board = self.inner.board();
        ScheduleStatus {
            memory_budget_mb: board.settings.memory_budget_mb,
            memory_used_mb: board.memory_used(),
            waiting: board.waiters.len(),
        }
    }

    /// Requests waiting for the engine of `slot`, and whether it is
    /// closing.
    pub(crate) fn view(&self, slot: SlotId) -> (usize, bool) {
        let board = self.inner.board();
        let closing = board
            .slots
            .get(&slot)
            .and_then(|s| s.resident.as_ref())
            .is_some_and(|r| r.closing.is_some());
        (board.waiting(slot), closing)
    }

    /// The manager of `slot` is going away (a reload replaced it) and its
    /// engine with it: free its memory now, not at the next event.
    pub(crate) fn forget(&self, slot: SlotId) {
        self.inner.board().slots.remove(&slot);
        self.inner.wake.notify_one();
    }

    /// Wait until the engine of `slot` may serve a request that needs at
    /// least `min_variant`. Dropping the future gives up the place.
    pub(crate) async fn admit(
        &self,
        slot: SlotId,
        min_variant: usize,
        priority: Priority,
    ) -> Option<Claim> {
        self.start_driver();
        let (id, rx) = self
            .inner
            .board()
            .enqueue(slot, min_variant, priority, Instant::now());
        let _withdraw = Withdraw {
            inner: &self.inner,
            id,
        };
        self.inner.wake.notify_one();
        rx.await.ok()
    }

    fn start_driver(&self) {
        if !self.inner.driver_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(drive(Arc::clone(&self.inner)));
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

/// Removes a waiter whose request went away before its grant.
struct Withdraw<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.inner.board().withdraw(self.id);
    }
}

/// The driver: plans, carries out the decisions outside the lock, sleeps.
async fn drive(inner: Arc<Inner>) {
    loop {
        let (decisions, stops) = {
            let mut board = inner.board();
            board.prune();
            let decisions = board.plan(Instant::now());
            let mut stops = Vec::with_capacity(decisions.stops.len());
            for stop in &decisions.stops {
                match board.manager(stop.slot) {
                    Some(m) => stops.push((m, stop.slot, stop.epoch, stop.reason, stop.forced)),
                    // Gone since the pass began: its engine died with it.
                    None => {
                        board.stopped(stop.slot, stop.epoch);
                        inner.wake.notify_one();
                    }
                }
            }
            (decisions, stops)
        };
        // Sent outside the lock: a waiter that just went away drops the
        // claim here, and its release takes the lock.
        for grant in decisions.grants {
            let claim = Claim {
                scheduler: Arc::clone(&inner),
                slot: grant.slot,
                epoch: grant.epoch,
                variant: grant.variant,
            };
            let _ = grant.reply.send(claim);
        }
        for (manager, slot, epoch, reason, forced) in stops {
            let inner = Arc::clone(&inner);
            tokio::spawn(async move {
                manager.unload(reason, forced).await;
                inner.board().stopped(slot, epoch);
                inner.wake.notify_one();
            });
        }
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            () = inner.wake.notified() => {}
            () = sleep_until(decisions.wake_at.unwrap_or(far)) => {}
            () = inner.cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests;
