//! The manager of one model's engine: which variant runs, starting,
//! swapping, restarting after crashes, unloading, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::time::{sleep, sleep_until, Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::EngineHttp;
use super::lease::{Gate, Lease};
use super::process::{EngineProcess, Labels, KILL_WAIT};
use super::prompt::Prompt;
use super::schedule::{Reason, Scheduler, SlotId};
use super::state::{lock, Running, Shared, Transition};
use super::{idle, EngineError, EngineModel, EngineSettings, EngineState, EngineStatus, Variant};
use crate::parse::Priority;

/// How often a starting engine is asked for `/health`; llama-server with a
/// small model is ready within ~0.1 s, so poll often.
const READY_POLL: Duration = Duration::from_millis(25);

/// Runs one engine process at a time for one model. See the module docs.
#[derive(Debug)]
pub struct EngineManager {
    model: EngineModel,
    settings: EngineSettings,
    client: EngineHttp,
    /// Serializes transitions (start, swap, restart, unload, shutdown) and
    /// the taking of leases. Concurrent acquirers of one variant queue here
    /// and find it ready, so they share one start; and no lease is taken on
    /// an engine that is being drained or stopped.
    turn: tokio::sync::Mutex<()>,
    shared: Mutex<Shared>,
    /// Cancelled by shutdown: ends the idle task and aborts waits.
    cancel: CancellationToken,
    /// Output readers, process watchers and the idle task.
    tasks: TaskTracker,
    idle_task_started: AtomicBool,
    /// The scheduler deciding when this engine may load, if any; then it
    /// (not this manager's own idle task) unloads idle engines.
    scheduler: OnceLock<(Weak<Scheduler>, SlotId)>,
}

impl EngineManager {
    /// A manager with no engine running; the first [`Self::acquire`]
    /// starts one.
    pub fn new(mut model: EngineModel, settings: EngineSettings) -> Arc<Self> {
        model.variants.sort_by_key(|v| v.context);
        Arc::new(Self {
            model,
            settings,
            client: EngineHttp::new(),
            turn: tokio::sync::Mutex::new(()),
            shared: Mutex::new(Shared::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            idle_task_started: AtomicBool::new(false),
            scheduler: OnceLock::new(),
        })
    }

    /// Put this manager under `scheduler` as `slot`.
    pub(super) fn attach(&self, scheduler: Weak<Scheduler>, slot: SlotId) {
        let _ = self.scheduler.set((scheduler, slot));
    }

    /// The model this manager runs.
    pub fn model(&self) -> &EngineModel {
        &self.model
    }

    /// The smallest variant whose context fits `needed` tokens.
    pub fn select(&self, needed: u32) -> Result<&Variant, EngineError> {
        self.select_index(needed).map(|i| &self.model.variants[i])
    }

    fn select_index(&self, needed: u32) -> Result<usize, EngineError> {
        self.model
            .variants
            .iter()
            .position(|v| v.context >= needed)
            .ok_or_else(|| EngineError::NoVariantFits {
                model: self.model.name.clone(),
                needed,
                largest: self.model.variants.last().map_or(0, |v| v.context),
            })
    }

    /// A lease on an engine that can serve a request of `needed` tokens.
    /// Under a [`Scheduler`], waits (by `priority`) until it lets this
    /// model's engine run, and may get a larger variant that is already
    /// loaded; alone, acquires the smallest variant that fits.
    pub async fn lease(
        self: &Arc<Self>,
        needed: u32,
        priority: Priority,
    ) -> Result<Lease, EngineError> {
        let smallest = self.select_index(needed)?;
        let Some((scheduler, slot)) = self
            .scheduler
            .get()
            .and_then(|(s, slot)| Some((s.upgrade()?, *slot)))
        else {
            return self.acquire_index(smallest).await;
        };
        let claim = tokio::select! {
            claim = scheduler.admit(slot, smallest, priority) => claim,
            () = self.cancel.cancelled() => None,
        };
        drop(scheduler);
        let claim = claim.ok_or_else(|| self.shutting_down())?;
        let mut lease = self.acquire_index(claim.variant).await?;
        lease.claim = Some(claim);
        Ok(lease)
    }

    /// Requests the scheduler keeps waiting for this engine, and whether it
    /// is closing this engine (no new requests; stops when they end).
    fn scheduled_view(&self) -> (usize, bool) {
        self.scheduler
            .get()
            .and_then(|(s, slot)| Some(s.upgrade()?.view(*slot)))
            .unwrap_or((0, false))
    }

    /// Token count of a prompt: from the running engine's `POST /tokenize`
    /// when one runs, else [`estimate_tokens`].
    pub async fn count_tokens(&self, text: &str) -> u32 {
        if let Some(base_url) = self.running_url() {
            if let Some(tokens) = self.client.tokenize(&base_url, text).await {
                return tokens;
            }
        }
        estimate_tokens(text)
    }

    /// Prompt tokens of a request body (chat, completion, Messages API) as
    /// the engine will see them: a chat goes through the running engine's
    /// chat template and tokenizer; without an engine, the text estimate
    /// plus an allowance for the template's markers.
    pub async fn count_request(&self, body: &bytes::Bytes) -> u32 {
        let prompt = Prompt::of(body);
        if let Some(base_url) = self.running_url() {
            let templated = match &prompt {
                Prompt::Chat { messages, .. } => {
                    self.client.apply_template(&base_url, messages).await
                }
                Prompt::Text(_) => None,
            };
            let counted = match &templated {
                Some(text) => self.client.tokenize(&base_url, text).await,
                None => self
                    .client
                    .tokenize(&base_url, prompt.text())
                    .await
                    .map(|n| n.saturating_add(prompt.template_allowance())),
            };
            if let Some(tokens) = counted {
                return tokens;
            }
        }
        estimate_tokens(prompt.text()).saturating_add(prompt.template_allowance())
    }

    fn running_url(&self) -> Option<String> {
        lock(&self.shared)
            .current
            .as_ref()
            .filter(|r| r.alive())
            .map(|r| r.base_url.clone())
    }

    /// What `Retry-After` to suggest when an acquire failed.
    pub fn retry_after(&self) -> Duration {
        self.settings.restart_backoff.max(Duration::from_secs(1))
    }

    /// A snapshot for status endpoints.
    pub fn status(&self) -> EngineStatus {
        let (waiting, closing) = self.scheduled_view();
        let mut status = lock(&self.shared).status(&self.model);
        status.waiting = waiting;
        if closing && status.state == EngineState::Ready {
            status.state = EngineState::Draining;
        }
        status
    }

    /// Ensure `variant` runs and is ready, and lease it. Swaps out another
    /// variant (drain its leases up to `drain_timeout`, stop it), restarts
    /// a crashed engine after `restart_backoff`.
    pub async fn acquire(self: &Arc<Self>, variant: &str) -> Result<Lease, EngineError> {
        let index = self.variant_index(variant)?;
        self.acquire_index(index).await
    }

    async fn acquire_index(self: &Arc<Self>, index: usize) -> Result<Lease, EngineError> {
        // The transition runs in a task of its own: a request that gives up
        // (its timeout passed, its client left) must not kill an engine
        // half-loaded for it and for every request waiting behind it. Its
        // lease, if nobody waits for it any more, is dropped with the task.
        let manager = Arc::clone(self);
        let transition = self
            .tasks
            .spawn(async move { manager.transition_to(index).await });
        match transition.await {
            Ok(result) => result,
            Err(failed) => Err(EngineError::Spawn {
                model: self.model.name.clone(),
                variant: self.model.variants[index].name.clone(),
                reason: format!("the engine's start failed: {failed}"),
            }),
        }
    }

    /// [`Self::acquire_index`]'s work, with the turn held throughout.
    async fn transition_to(self: &Arc<Self>, index: usize) -> Result<Lease, EngineError> {
        let _turn = self.turn.lock().await;
        let transition = Transition(&self.shared);
        if lock(&self.shared).shut_down {
            return Err(self.shutting_down());
        }
        self.note_crash();
        if let Some(lease) = self.lease_on(index) {
            return Ok(lease);
        }
        let swap_started = self.stop_other(&transition, index).await?;
        let restarting = self.wait_backoff().await?;
        transition.set(EngineState::Starting, Some(index));
        let start_begun = Instant::now();
        let running = match self.start(index).await {
            Ok(running) => running,
            Err(error) => {
                if !matches!(error, EngineError::ShuttingDown { .. }) {
                    let mut shared = lock(&self.shared);
                    shared.crashed_at = Some(Instant::now());
                    shared.last_error = Some(error.to_string());
                }
                return Err(error);
            }
        };
        {
            let mut shared = lock(&self.shared);
            shared.current = Some(running);
            shared.crashed_at = None;
            shared.starts += 1;
            if restarting {
                shared.restarts += 1;
            }
            if let Some(started) = swap_started {
                shared.swaps += 1;
                shared.swap_time += started.elapsed();
            }
            // The scheduler stopped another variant for this one.
            if let Some((_, stop_took)) = shared.evicted.take().filter(|(old, _)| *old != index) {
                shared.swaps += 1;
                shared.swap_time += stop_took + start_begun.elapsed();
            }
        }
        drop(transition);
        self.start_idle_task();
        self.lease_on(index)
            .ok_or_else(|| self.exited_during_start(index))
    }

    /// Stop the engine and the background tasks; used at shutdown. Later
    /// acquires fail with [`EngineError::ShuttingDown`].
    pub async fn shutdown(&self) {
        // First, so a start or drain in progress gives up the turn.
        self.cancel.cancel();
        let _turn = self.turn.lock().await;
        let current = {
            let mut shared = lock(&self.shared);
            shared.shut_down = true;
            shared.crashed_at = None;
            shared.current.take()
        };
        if let Some(running) = current {
            self.stop(&running, "shutdown").await;
        }
        self.tasks.close();
        let limit = self.settings.stop_timeout + KILL_WAIT;
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(target: "lexora::engine", model = %self.model.name, "engine tasks did not finish at shutdown");
        }
    }

    /// Stop the engine if nobody leased it for `ttl`. Skips the round if a
    /// transition is in progress: that engine is about to be used.
    pub(super) async fn unload_if_idle(&self, ttl: Duration) {
        let Ok(_turn) = self.turn.try_lock() else {
            return;
        };
        let idle = lock(&self.shared)
            .current
            .clone()
            .filter(|r| r.alive() && r.gate.idle_for().is_some_and(|d| d >= ttl));
        if let Some(running) = idle {
            self.stop(&running, "idle").await;
            lock(&self.shared).current = None;
        }
    }

    /// Stop the engine for the scheduler: after its leases drained, or at
    /// once when `forced` (the drain timeout passed).
    pub(super) async fn unload(&self, reason: Reason, forced: bool) {
        let _turn = self.turn.lock().await;
        let Some(running) = lock(&self.shared).current.clone() else {
            return;
        };
        if forced {
            tracing::warn!(
                target: "lexora::engine",
                model = %self.model.name,
                leases = running.gate.held(),
                "drain timeout passed; stopping the engine under its remaining requests"
            );
        }
        let begun = Instant::now();
        self.stop(&running, reason.as_str()).await;
        let mut shared = lock(&self.shared);
        shared.current = None;
        shared.evicted = match reason {
            Reason::Evict => {
                shared.evictions += 1;
                Some((running.variant, begun.elapsed()))
            }
            Reason::Idle => None,
        };
    }

    fn variant_index(&self, variant: &str) -> Result<usize, EngineError> {
        self.model
            .variants
            .iter()
            .position(|v| v.name == variant)
            .ok_or_else(|| EngineError::UnknownVariant {
                model: self.model.name.clone(),
                variant: variant.to_owned(),
            })
    }

    /// A lease on the running engine if it is `index` and alive.
    fn lease_on(&self, index: usize) -> Option<Lease> {
        let shared = lock(&self.shared);
        let running = shared.current.as_ref()?;
        if running.variant != index || !running.alive() {
            return None;
        }
        Some(Lease::new(
            running.base_url.clone(),
            self.model.variants[index].name.clone(),
            running.process.pid(),
            running.gate.clone(),
        ))
    }

    /// If the engine exited on its own, forget it and remember the crash.
    fn note_crash(&self) {
        let mut shared = lock(&self.shared);
        let Some(exit) = shared.current.as_ref().and_then(|r| r.process.exited()) else {
            return;
        };
        shared.current = None;
        shared.crashed_at = Some(exit.at);
        shared.last_error = Some(format!("engine exited unexpectedly ({})", exit.describe()));
    }

    /// Drain and stop a running engine of another variant. Returns when
    /// the swap began (after the drain), `None` if nothing ran.
    async fn stop_other(
        &self,
        transition: &Transition<'_>,
        index: usize,
    ) -> Result<Option<Instant>, EngineError> {
        let Some(old) = lock(&self.shared).current.clone() else {
            return Ok(None);
        };
        transition.set(EngineState::Draining, None);
        let drained = tokio::select! {
            drained = old.gate.drain(self.settings.drain_timeout) => drained,
            () = self.cancel.cancelled() => return Err(self.shutting_down()),
        };
        if !drained {
            tracing::warn!(
                target: "lexora::engine",
                model = %self.model.name,
                variant = %self.model.variants[old.variant].name,
                leases = old.gate.held(),
                "drain timeout passed; stopping the engine under its remaining requests"
            );
        }
        let started = Instant::now();
        let to = &self.model.variants[index].name;
        self.stop(&old, &format!("swap to {to}")).await;
        lock(&self.shared).current = None;
        Ok(Some(started))
    }

    /// After a crash, wait out the backoff. True if this start is a restart.
    async fn wait_backoff(&self) -> Result<bool, EngineError> {
        let Some(crashed_at) = lock(&self.shared).crashed_at else {
            return Ok(false);
        };
        tokio::select! {
            () = sleep_until(crashed_at + self.settings.restart_backoff) => Ok(true),
            () = self.cancel.cancelled() => Err(self.shutting_down()),
        }
    }

    /// Spawn variant `index` on a free loopback port and wait for health.
    async fn start(&self, index: usize) -> Result<Running, EngineError> {
        let variant = &self.model.variants[index];
        let labels = Labels {
            model: self.model.name.as_str().into(),
            variant: variant.name.as_str().into(),
        };
        let spawn_error = |reason: String| EngineError::Spawn {
            model: self.model.name.clone(),
            variant: variant.name.clone(),
            reason,
        };
        let port = free_port().map_err(|e| spawn_error(format!("no free port: {e}")))?;
        let process =
            EngineProcess::spawn(&variant.binary, &variant.args, port, &labels, &self.tasks)
                .map_err(|e| spawn_error(format!("{}: {e}", variant.binary.display())))?;
        let begun = Instant::now();
        let base_url = format!("http://127.0.0.1:{port}");
        tracing::info!(target: "lexora::engine", model = %self.model.name, variant = %variant.name, pid = process.pid(), %base_url, "starting engine");
        let deadline = begun + self.settings.ready_timeout;
        loop {
            if let Some(exit) = process.exited() {
                return Err(EngineError::ExitedDuringStart {
                    model: self.model.name.clone(),
                    variant: variant.name.clone(),
                    status: exit.describe(),
                });
            }
            if self.client.healthy(&base_url).await {
                break;
            }
            if Instant::now() >= deadline {
                process.stop(self.settings.stop_timeout).await;
                return Err(EngineError::NotReady {
                    model: self.model.name.clone(),
                    variant: variant.name.clone(),
                    after: self.settings.ready_timeout,
                });
            }
            tokio::select! {
                () = sleep(READY_POLL) => {}
                () = self.cancel.cancelled() => {
                    process.stop(self.settings.stop_timeout).await;
                    return Err(self.shutting_down());
                }
            }
        }
        tracing::info!(target: "lexora::engine", model = %self.model.name, variant = %variant.name, pid = process.pid(), ready_ms = begun.elapsed().as_millis() as u64, "engine ready");
        Ok(Running {
            variant: index,
            base_url,
            ready_at: Instant::now(),
            gate: Gate::new(),
            process: Arc::new(process),
        })
    }

    async fn stop(&self, running: &Running, reason: &str) {
        let variant = &self.model.variants[running.variant].name;
        let pid = running.process.pid();
        tracing::info!(target: "lexora::engine", model = %self.model.name, %variant, pid, reason, "stopping engine");
        if running
            .process
            .stop(self.settings.stop_timeout)
            .await
            .is_none()
        {
            tracing::error!(target: "lexora::engine", model = %self.model.name, %variant, pid, "engine did not exit after SIGKILL");
        }
    }

    fn start_idle_task(self: &Arc<Self>) {
        let Some(ttl) = self.settings.idle_unload else {
            return;
        };
        if self.scheduler.get().is_some() {
            return;
        }
        if !self.idle_task_started.swap(true, Ordering::Relaxed) {
            self.tasks
                .spawn(idle::run(Arc::downgrade(self), ttl, self.cancel.clone()));
        }
    }

    fn shutting_down(&self) -> EngineError {
        EngineError::ShuttingDown {
            model: self.model.name.clone(),
        }
    }

    fn exited_during_start(&self, index: usize) -> EngineError {
        EngineError::ExitedDuringStart {
            model: self.model.name.clone(),
            variant: self.model.variants[index].name.clone(),
            status: "exited right after becoming ready".to_owned(),
        }
    }
}

impl Drop for EngineManager {
    fn drop(&mut self) {
        // Ends the idle task; the engine process is killed when its last
        // owner (this manager's state) drops.
        self.cancel.cancel();
        if let Some((scheduler, slot)) = self.scheduler.get() {
            if let Some(scheduler) = scheduler.upgrade() {
                scheduler.forget(*slot);
            }
        }
    }
}

/// A prompt's token count without an engine: bytes / 3, rounded up. BPE
/// vocabularies average 3–4 bytes per token on English text, so this
/// overestimates a little, which errs toward a larger variant rather than
/// a context overflow.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(3)).unwrap_or(u32::MAX)
}

/// Ask the kernel for a free loopback port. The listener is closed before
/// the engine binds it; if another process takes it in between, the
/// engine exits during start and the acquire fails with a 503.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
