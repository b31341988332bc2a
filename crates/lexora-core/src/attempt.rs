//! Attempt: get an answer head from some backend, within the deadline.
//!
//! For each try the next candidate backend (those serving the model, then
//! those of its fallback models) is asked in order: its circuit breaker may
//! refuse at once, its queue bounds the requests in flight, then the request
//! is sent. A retryable failure (connect error, reset, 502/503/504, 429)
//! moves on to the next candidate at once (failover); when every candidate
//! has had its turn, the next round waits an exponential backoff (or the
//! engine's `Retry-After`). All of this happens before any byte reaches the
//! client, and never past the request's deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::Response;
use metrics::counter;
use tokio::time::Instant;

use crate::config::{BreakerConfig, QueueSettings, RetryConfig};
use crate::engine::{EngineManager, EngineModel, EngineSettings, Scheduler};
use crate::error::GatewayError;
use crate::parse::{ParsedRequest, Priority};
use crate::queue::{BackendQueue, Permit, QueueConfig, QueueError};
use crate::record::RequestRecord;
use crate::respond;
use crate::route::Candidate;
use crate::upstream::{Backend, Wire};

pub mod breaker;
pub mod retry;

pub use breaker::{Admission, Breaker};

/// The per-backend policy state that outlives config reloads.
#[derive(Debug)]
pub struct BackendPolicy {
    pub queue: Arc<BackendQueue>,
    pub breaker: Breaker,
    /// The engine manager of a `type: engine` backend, kept across reloads
    /// so a reload does not start a second engine beside the running one.
    engine: std::sync::Mutex<Option<ManagedEngine>>,
    /// The gateway's engine scheduler, which new engine managers join.
    scheduler: Arc<Scheduler>,
}

type ManagedEngine = (EngineModel, EngineSettings, Arc<EngineManager>);

impl BackendPolicy {
    /// The manager for this engine configuration: the running one when the
    /// configuration is unchanged, else a new one (the old engine stops when
    /// the last request using it ends).
    pub fn engine_manager(
        &self,
        model: &EngineModel,
        settings: &EngineSettings,
    ) -> Arc<EngineManager> {
        let mut slot = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((m, s, manager)) = slot.as_ref() {
            if m == model && s == settings {
                return Arc::clone(manager);
            }
        }
        let manager = self.scheduler.manager(model.clone(), settings.clone());
        *slot = Some((model.clone(), settings.clone(), Arc::clone(&manager)));
        manager
    }

    /// A fresh queue and a closed breaker; engine managers join `scheduler`.
    pub fn new(
        max_concurrency: Option<usize>,
        queue: &QueueSettings,
        breaker: &BreakerConfig,
        scheduler: Arc<Scheduler>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue: BackendQueue::new(queue_config(max_concurrency, queue)),
            breaker: Breaker::new(breaker.clone()),
            engine: std::sync::Mutex::new(None),
            scheduler,
        })
    }

    /// Applies reloaded settings, keeping waiters, in-flight requests and
    /// the breaker's state.
    pub fn reconfigure(
        &self,
        max_concurrency: Option<usize>,
        queue: &QueueSettings,
        breaker: &BreakerConfig,
    ) {
        self.queue.reconfigure(queue_config(max_concurrency, queue));
        self.breaker.reconfigure(breaker.clone());
    }
}

fn queue_config(max_concurrency: Option<usize>, queue: &QueueSettings) -> QueueConfig {
    QueueConfig {
        max_concurrency,
        max_size: queue.max_size,
        weights: queue.weights,
        aging_step: queue.aging_step,
    }
}

/// A successful answer head and what must live as long as its body.
pub struct Answer {
    pub backend: Arc<Backend>,
    pub upstream: Response<Body>,
    /// The API the answer's body speaks.
    pub wire: Wire,
    /// For streams: the first bytes, already read.
    pub first: Option<Bytes>,
    pub queue_wait: Duration,
}

/// What the attempt needs to know about the request.
pub struct Plan<'a> {
    pub request: &'a ParsedRequest,
    pub priority: Priority,
    /// When the whole request must be done.
    pub deadline: Instant,
    /// When waiting for a free backend slot gives up.
    pub queue_deadline: Instant,
    pub timeout: Duration,
}

/// Tries `candidates` (from [`crate::route::Routes::candidates`]) until one
/// answers successfully or the retry budget is spent.
pub async fn run(
    candidates: &[Candidate],
    retry: &RetryConfig,
    plan: Plan<'_>,
    record: &mut RequestRecord,
) -> Result<Answer, GatewayError> {
    let mut cursor = 0usize;
    let mut last_error: Option<GatewayError> = None;
    let mut refused_for: Option<Duration> = None;
    let mut tries = 0u32;
    let mut tried_in_round = false;
    let mut wait_hint: Option<Duration> = None;

    while tries <= retry.max_retries {
        // A full round over the candidates ends here: pause before the next,
        // unless every breaker refused (then there is nothing to wait for).
        if cursor >= candidates.len() {
            if !tried_in_round {
                break;
            }
            tried_in_round = false;
            cursor = 0;
            let jitter: f64 = rand::random();
            let pause =
                retry::backoff(retry, tries, jitter).max(wait_hint.take().unwrap_or_default());
            if Instant::now() + pause >= plan.deadline {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        let Some((index, backend, admission)) = next_admitted(candidates, cursor) else {
            cursor = candidates.len();
            continue;
        };
        if let Admission::Refused { retry_after } = admission {
            // next_admitted only returns a refusal when all the rest refuse.
            refused_for = Some(refused_for.map_or(retry_after, |d| d.min(retry_after)));
            cursor = candidates.len();
            continue;
        }
        cursor = index + 1;
        tries += 1;
        if tries > 1 {
            record.note_retry();
            counter!("lexora_retries_total", "backend" => backend.name().to_owned()).increment(1);
        }
        record.set_backend(backend);
        let candidate_model = candidates[index].1.as_deref();
        let probe = ProbeGuard::new(&backend.policy.breaker, admission == Admission::Probe);
        // A request given less time than the backend's own timeout (the
        // client's `x_timeout`) says nothing of the backend's health when
        // its deadline passes: one client must not be able to open the
        // breaker for everyone with a tiny timeout.
        let own_timeout = plan.timeout >= backend.config.timeout;
        match attempt(backend, candidate_model, &plan, record).await {
            Ok(answer) => {
                probe.settle();
                backend.policy.breaker.record_success();
                return Ok(answer);
            }
            Err(error @ GatewayError::QueueFull { .. }) if cursor < candidates.len() => {
                // Never reached this backend: the next one that serves the
                // model is tried at once, as failover rather than a retry.
                tries -= 1;
                last_error.get_or_insert(error);
                continue;
            }
            Err(error) => {
                tried_in_round = true;
                let timed_out = matches!(error, GatewayError::UpstreamTimeout { .. });
                if counts_as_failure(&error) && (own_timeout || !timed_out) {
                    probe.settle();
                    backend.policy.breaker.record_failure(Instant::now());
                } else if matches!(error, GatewayError::UpstreamStatus { .. }) {
                    // The backend answered (a 4xx): it is alive.
                    probe.settle();
                    backend.policy.breaker.record_success();
                }
                // Otherwise the request never reached the backend (queue,
                // bad request): a probe is abandoned by the guard's drop.
                if !error.retryable() {
                    // A later try that times out in the queue must not hide
                    // why the earlier ones failed.
                    return Err(match (error, last_error) {
                        (GatewayError::QueueTimeout { .. }, Some(earlier)) => earlier,
                        (error, _) => error,
                    });
                }
                if let GatewayError::UpstreamStatus { retry_after, .. } = &error {
                    wait_hint = retry::retry_after(retry_after.as_ref());
                }
                tracing::debug!(backend = backend.name(), %error, "attempt failed; trying again");
                last_error = Some(error);
            }
        }
    }
    Err(match (last_error, refused_for) {
        (Some(error), _) => error,
        (None, retry_after) => GatewayError::BreakerOpen {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        },
    })
}

/// Makes sure a half-open breaker's probe reports back: if the attempt
/// ends without reaching the backend (cancelled by a client that left,
/// stopped by the queue), the probe is abandoned so the next request probes
/// instead of the breaker staying half-open forever.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl<'a> ProbeGuard<'a> {
    fn new(breaker: &'a Breaker, probe: bool) -> Self {
        Self {
            breaker,
            armed: probe,
        }
    }

    /// The outcome was reported to the breaker.
    fn settle(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.abandon_probe(Instant::now());
        }
    }
}

/// The first candidate from `cursor` on whose breaker does not refuse, or
/// the first refusing one when all refuse (to report its wait).
fn next_admitted(
    candidates: &[Candidate],
    cursor: usize,
) -> Option<(usize, &Arc<Backend>, Admission)> {
    let now = Instant::now();
    let mut refused = None;
    for (index, (backend, _)) in candidates.iter().enumerate().skip(cursor) {
        match backend.policy.breaker.admit(now) {
            Admission::Refused { retry_after } => {
                refused.get_or_insert((index, backend, Admission::Refused { retry_after }));
            }
            admission => return Some((index, backend, admission)),
        }
    }
    refused
}

/// Failures that say the backend is unwell (not the request).
fn counts_as_failure(error: &GatewayError) -> bool {
    match error {
        GatewayError::UpstreamConnect { .. }
        | GatewayError::UpstreamReset { .. }
        | GatewayError::UpstreamInvalid { .. }
        | GatewayError::UpstreamTimeout { .. } => true,
        GatewayError::UpstreamStatus { status, .. } => {
            matches!(status.as_u16(), 500 | 502 | 503 | 504)
        }
        _ => false,
    }
}

/// One try at one backend: queue slot, send, check the head (and the first
/// chunk of a stream, so a stream that dies at once is still retryable).
async fn attempt(
    backend: &Arc<Backend>,
    model: Option<&str>,
    plan: &Plan<'_>,
    record: &mut RequestRecord,
) -> Result<Answer, GatewayError> {
    let permit: Permit = backend
        .policy
        .queue
        .acquire(plan.priority, plan.queue_deadline)
        .await
        .map_err(|e| match e {
            QueueError::Full { size, retry_after } => GatewayError::QueueFull {
                backend: backend.name().to_owned(),
                size,
                retry_after,
            },
            QueueError::Timeout { waited } => GatewayError::QueueTimeout {
                backend: backend.name().to_owned(),
                waited,
            },
        })?;
    let queue_wait = permit.waited();
    let request = plan.request;
    let sent = backend.forward(
        request,
        model.or(request.model.as_deref()),
        model.is_some(),
        plan.priority,
        &record.request_id,
    );
    let (upstream, wire, lease) = tokio::time::timeout_at(plan.deadline, sent)
        .await
        .map_err(|_| GatewayError::UpstreamTimeout {
            backend: backend.name().to_owned(),
            after: plan.timeout,
        })??;
    if !upstream.status().is_success() {
        return Err(respond::upstream_error(
            upstream,
            wire,
            backend.name(),
            plan.deadline,
            plan.timeout,
        )
        .await);
    }
    let mut answer = Answer {
        backend: Arc::clone(backend),
        upstream,
        wire,
        first: None,
        queue_wait,
    };
    if respond::is_event_stream(&answer.upstream) {
        let first = respond::first_chunk(
            answer.upstream.body_mut(),
            backend.name(),
            plan.deadline,
            plan.timeout,
        )
        .await?;
        answer.first = Some(first);
    }
    record.hold(permit);
    if let Some(lease) = lease {
        record.hold_lease(lease);
    }
    record.answered();
    Ok(answer)
}
