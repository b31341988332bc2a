//! Engine: run local inference engines (llama-server first) as child
//! processes, one [`EngineManager`] per model.
//!
//! A model has several [`Variant`]s that differ mainly in the context each
//! request gets. The gateway asks [`EngineManager::select`] for the smallest
//! variant that fits a request (prompt tokens from
//! [`EngineManager::count_tokens`] plus `max_tokens`), then
//! [`EngineManager::acquire`] for a [`Lease`] on it. Acquiring another
//! variant than the running one swaps engines: wait for the old engine's
//! leases to drain, stop it (SIGTERM, then SIGKILL), start the new one on a
//! free loopback port and wait for `GET /health`.
//!
//! Children never outlive the manager: they are spawned with
//! `kill_on_drop`, stopped explicitly by [`EngineManager::shutdown`], and the
//! tasks that watch them and copy their output into the log (target
//! `lexora::engine`) are tracked.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

mod client;
mod error;
mod idle;
mod lease;
mod manager;
mod process;
mod prompt;
mod schedule;
mod state;

#[cfg(test)]
mod tests;

pub use error::EngineError;
pub use lease::Lease;
pub use manager::{estimate_tokens, EngineManager};
pub use schedule::{Claim, ScheduleSettings, ScheduleStatus, Scheduler};

/// One way to run a model: the engine binary, its arguments, the context it
/// gives each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Unique within the model; what [`EngineManager::acquire`] takes.
    pub name: String,
    /// The engine executable, e.g. `llama-server`.
    pub binary: PathBuf,
    /// Engine arguments without `--host`/`--port`, which the manager adds
    /// (it picks a free loopback port for every start).
    pub args: Vec<String>,
    /// Tokens one request may use (prompt plus answer). For llama-server
    /// this is `-c` divided by `-np`.
    pub context: u32,
    /// Estimated memory use in MiB, counted against the scheduler's
    /// `memory_budget_mb`.
    pub memory_mb: Option<u64>,
}

/// A model served by local engine processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineModel {
    /// The model name clients ask for.
    pub name: String,
    /// Ways to run it; [`EngineManager::new`] sorts them by context.
    pub variants: Vec<Variant>,
}

/// Timeouts and policies of the engine lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// How long a started engine may take to answer `GET /health` with 200.
    pub ready_timeout: Duration,
    /// How long a swap waits for the old engine's leases; after that the
    /// old engine is stopped anyway, so one long request cannot block every
    /// other variant forever.
    pub drain_timeout: Duration,
    /// Grace between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// Stop an engine nobody has leased for this long; `None` keeps it.
    pub idle_unload: Option<Duration>,
    /// Wait after a crash (or failed start) before starting again, so a
    /// broken engine is not restarted in a tight loop.
    pub restart_backoff: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            idle_unload: None,
            restart_backoff: Duration::from_secs(2),
        }
    }
}

/// Lifecycle state of a model's engine, as `/health` and `/stats` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineState {
    /// No engine process.
    Stopped,
    /// Spawned, waiting for `/health`.
    Starting,
    /// Serving leases.
    Ready,
    /// Waiting for leases to end before a swap or unload.
    Draining,
    /// The process exited while it should have been serving, or failed to
    /// start; the next acquire restarts it after the backoff.
    Crashed,
}

impl EngineState {
    /// The lowercase name used in status documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Crashed => "crashed",
        }
    }
}

/// A snapshot of one manager for status endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStatus {
    /// The model name.
    pub model: String,
    /// Current lifecycle state.
    pub state: EngineState,
    /// The running (or starting) variant.
    pub variant: Option<String>,
    /// PID of the engine process, while there is one.
    pub pid: Option<u32>,
    /// Time since the engine became ready.
    pub uptime: Option<Duration>,
    /// Leases currently held.
    pub leases: usize,
    /// Times one variant was replaced by another.
    pub swaps: u64,
    /// Total time spent stopping the old and starting the new engine in
    /// swaps (the drain wait is not included: that is request time).
    pub swap_time: Duration,
    /// Starts after a crash or failed start.
    pub restarts: u64,
    /// Engine processes started, for any reason.
    pub starts: u64,
    /// Times the scheduler stopped this engine to make room for another.
    pub evictions: u64,
    /// Requests waiting for the scheduler to let this engine run.
    pub waiting: usize,
    /// The last start failure or crash, for operators.
    pub last_error: Option<String>,
}
