//! What a manager knows about its engine, and the states derived from it.
//!
//! Only [`EngineState::Starting`] and [`EngineState::Draining`] are stored
//! (as the transition in progress); the others follow from the facts
//! (is there a process, has it exited, did the last one crash), so a state
//! can never disagree with the process it describes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::{Duration, Instant};

use super::lease::Gate;
use super::process::EngineProcess;
use super::{EngineModel, EngineState, EngineStatus};

/// The engine that runs (or ran until it crashed).
#[derive(Debug, Clone)]
pub(super) struct Running {
    pub variant: usize,
    pub base_url: String,
    pub ready_at: Instant,
    pub gate: Arc<Gate>,
    pub process: Arc<EngineProcess>,
}

impl Running {
    pub(super) fn alive(&self) -> bool {
        self.process.exited().is_none()
    }
}

/// Everything status readers may look at without waiting for a transition.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// A transition in progress: `Starting` or `Draining`.
    pub transition: Option<EngineState>,
    /// The variant being started, for status while `Starting`.
    pub pending: Option<usize>,
    pub current: Option<Running>,
    /// When the last engine crashed or failed to start; cleared by a
    /// successful start.
    pub crashed_at: Option<Instant>,
    pub shut_down: bool,
    pub swaps: u64,
    pub swap_time: Duration,
    pub restarts: u64,
    /// Engine processes started (first start, swaps, restarts, reloads
    /// after an eviction or idle unload).
    pub starts: u64,
    /// Engines stopped by the scheduler to make room for another.
    pub evictions: u64,
    /// The variant the scheduler last evicted and how long stopping it
    /// took: starting another variant next completes a swap.
    pub evicted: Option<(usize, Duration)>,
    pub last_error: Option<String>,
}

impl Shared {
    pub(super) fn state(&self) -> EngineState {
        if let Some(transition) = self.transition {
            return transition;
        }
        match &self.current {
            Some(running) if !running.alive() => EngineState::Crashed,
            Some(_) => EngineState::Ready,
            None if self.crashed_at.is_some() => EngineState::Crashed,
            None => EngineState::Stopped,
        }
    }

    pub(super) fn status(&self, model: &EngineModel) -> EngineStatus {
        let alive = self.current.as_ref().filter(|r| r.alive());
        let variant = self
            .pending
            .or(self.current.as_ref().map(|r| r.variant))
            .and_then(|i| model.variants.get(i))
            .map(|v| v.name.clone());
        EngineStatus {
            model: model.name.clone(),
            state: self.state(),
            variant,
            pid: alive.map(|r| r.process.pid()),
            uptime: alive.map(|r| r.ready_at.elapsed()),
            leases: self.current.as_ref().map_or(0, |r| r.gate.held()),
            swaps: self.swaps,
            swap_time: self.swap_time,
            restarts: self.restarts,
            starts: self.starts,
            evictions: self.evictions,
            waiting: 0,
            last_error: self.last_error.clone(),
        }
    }
}

pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks a transition for status readers and clears it however the
/// transition ends, including when the acquiring future is dropped.
pub(super) struct Transition<'a>(pub &'a Mutex<Shared>);

impl Transition<'_> {
    pub(super) fn set(&self, state: EngineState, pending: Option<usize>) {
        let mut shared = lock(self.0);
        shared.transition = Some(state);
        shared.pending = pending;
    }
}

impl Drop for Transition<'_> {
    fn drop(&mut self) {
        let mut shared = lock(self.0);
        shared.transition = None;
        shared.pending = None;
    }
}
