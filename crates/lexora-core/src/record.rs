//! Record: what happened to each request goes to `/stats`, `/metrics` and
//! the access log, exactly once.
//!
//! A [`RequestRecord`] is created when a request arrives and travels with
//! it — into the response body for streams — and is settled when dropped.
//! So a stream the client abandons is still counted (as status 499), and a
//! request is never recorded twice.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;
use tokio::time::Instant;

use crate::engine::Lease;
use crate::limit::Reservation;
use crate::parse::{Endpoint, Priority};
use crate::queue::Permit;
use crate::upstream::Backend;

/// The label `/stats` and `/metrics` count a request under when its model
/// or user is not one of their own: a model no backend serves, or one past
/// the most they keep apart.
pub(crate) const OTHER: &str = "(other)";

mod metrics;
pub mod stats;

use self::metrics::{Finished, RequestMetrics};
pub use stats::Stats;

/// Status recorded for a stream the client closed before its end (nginx's
/// convention).
pub const CLIENT_CLOSED: u16 = 499;

/// Token usage as engines report it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "UsageWire")]
pub struct Usage {
    /// Anthropic calls it `input_tokens`.
    pub prompt_tokens: u64,
    /// Anthropic calls it `output_tokens`.
    pub completion_tokens: u64,
}

/// [`Usage`] as written: OpenAI's names, Anthropic's, or both (some
/// engines write both; a serde alias would refuse that as a repeat).
#[derive(Deserialize)]
struct UsageWire {
    prompt_tokens: Option<u64>,
    input_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl From<UsageWire> for Usage {
    fn from(wire: UsageWire) -> Self {
        Self {
            prompt_tokens: wire.prompt_tokens.or(wire.input_tokens).unwrap_or(0),
            completion_tokens: wire.completion_tokens.or(wire.output_tokens).unwrap_or(0),
        }
    }
}

impl Usage {
    /// Combines partial reports (Anthropic streams give input tokens first
    /// and output tokens at the end): the larger count of each wins.
    pub fn merge(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.max(other.prompt_tokens),
            completion_tokens: self.completion_tokens.max(other.completion_tokens),
        }
    }
}

/// Where finished requests are counted.
#[derive(Debug, Default)]
pub struct Recorder {
    pub stats: Stats,
    metrics: RequestMetrics,
}

impl Recorder {
    /// Starts the record of one request.
    pub fn start(self: &Arc<Self>, endpoint: Endpoint, request_id: HeaderValue) -> RequestRecord {
        self.metrics.started();
        RequestRecord {
            recorder: Arc::clone(self),
            started: Instant::now(),
            request_id,
            endpoint,
            model: String::new(),
            routed: false,
            user: String::new(),
            backend: None,
            status: 0,
            error: None,
            usage: None,
            first_byte: None,
            finished: false,
            priority: None,
            permit: None,
            lease: None,
            reservation: None,
            answered: false,
        }
    }
}

/// One request on its way through the gateway.
#[derive(Debug)]
pub struct RequestRecord {
    recorder: Arc<Recorder>,
    started: Instant,
    pub request_id: HeaderValue,
    endpoint: Endpoint,
    model: String,
    /// A backend serves the model: only then is it a label of its own in
    /// the stats and metrics (the access log names any model).
    routed: bool,
    user: String,
    /// Shared, not copied: the name is only read by the access log.
    backend: Option<Arc<Backend>>,
    status: u16,
    error: Option<&'static str>,
    usage: Option<Usage>,
    first_byte: Option<Duration>,
    /// The response reached its end (for streams: the last byte was sent).
    finished: bool,
    priority: Option<Priority>,
    /// The backend slot, released when the request is over.
    permit: Option<Permit>,
    /// The engine lease of a `type: engine` backend: the engine is not
    /// swapped out until the answer (stream included) is over.
    lease: Option<Lease>,
    /// The rate-limit hold, settled to the real usage when the request is over.
    reservation: Option<Reservation>,
    /// An engine accepted the request (answered 2xx): tokens may have been
    /// spent even if no usage is reported.
    answered: bool,
}

impl RequestRecord {
    /// The model the request asked for (empty until identified).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Names the model and user once the request is parsed.
    pub fn identify(&mut self, model: &str, user: &str) {
        model.clone_into(&mut self.model);
        user.clone_into(&mut self.user);
    }

    /// A backend serves the request's model.
    pub fn routed(&mut self) {
        self.routed = true;
    }

    /// The queue priority the request got.
    pub fn set_priority(&mut self, priority: Priority) {
        self.priority = Some(priority);
    }

    /// Keeps the backend slot until the request is over (streams included).
    pub fn hold(&mut self, permit: Permit) {
        self.permit = Some(permit);
    }

    /// Keeps the engine lease until the request is over (streams included).
    pub fn hold_lease(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    /// Keeps the rate-limit reservation to settle at the end.
    pub fn hold_reservation(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// An engine accepted the request and is answering.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Counts a retry (another attempt after a failure).
    pub fn note_retry(&self) {
        self.recorder.stats.note_retry();
    }

    /// The backend of the current attempt.
    pub fn set_backend(&mut self, backend: &Arc<Backend>) {
        self.backend = Some(Arc::clone(backend));
    }

    /// The final status of a response that is complete once sent.
    pub fn finish(&mut self, status: u16, error: Option<&'static str>) {
        self.status = status;
        self.error = error;
        self.finished = true;
    }

    /// The status of a streamed response; the stream is not finished yet.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Marks the end of a stream, with an error kind if it ended badly.
    pub fn end_stream(&mut self, error: Option<&'static str>) {
        self.error = error;
        self.finished = true;
    }

    /// Adds what an engine reported (merged with earlier partial reports).
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(self.usage.map_or(usage, |seen| seen.merge(usage)));
    }

    /// The first byte of the answer is on its way to the client.
    pub fn first_byte(&mut self) {
        if self.first_byte.is_none() {
            self.first_byte = Some(self.started.elapsed());
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let latency = self.started.elapsed();
        if !self.finished && self.status < 400 {
            self.status = CLIENT_CLOSED;
            self.error = Some("client_closed");
        }
        let error = self.status >= 400 || self.error.is_some();
        let usage = self.usage.unwrap_or_default();
        self.permit = None;
        self.lease = None;
        if let Some(reservation) = self.reservation.take() {
            let now = Instant::now();
            match (self.usage, self.answered) {
                (Some(usage), _) => reservation.settle(
                    usage.prompt_tokens.saturating_add(usage.completion_tokens),
                    now,
                ),
                // No engine accepted it (refused, failed, never sent):
                // nothing was generated, so nothing is charged.
                (None, false) => reservation.cancel(now),
                // An engine answered but reported no usage: keep the estimate.
                (None, true) => drop(reservation),
            }
        }
        let asked = if self.model.is_empty() {
            "(none)"
        } else {
            &self.model
        };
        let model = if self.routed || self.model.is_empty() {
            asked
        } else {
            OTHER
        };
        let user = if self.user.is_empty() {
            crate::identify::ANONYMOUS
        } else {
            &self.user
        };
        let priority = self.priority.map_or("none", Priority::as_str);
        self.recorder.stats.record(
            model,
            user,
            self.priority,
            stats::Sample {
                error,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            },
        );

        self.recorder.metrics.finished(&Finished {
            endpoint: self.endpoint,
            model,
            status: self.status,
            latency,
            first_byte: self.first_byte,
            usage,
            error: self.error,
            priority,
        });

        let endpoint = self.endpoint.label();
        tracing::info!(
            target: "lexora::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            endpoint,
            model = asked,
            user,
            priority,
            backend = self.backend.as_ref().map_or("-", |b| b.name()),
            status = self.status,
            error = self.error.unwrap_or("-"),
            latency_ms = latency.as_secs_f64() * 1000.0,
            ttfb_ms = self.first_byte.map(|d| d.as_secs_f64() * 1000.0),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            "request"
        );
    }
}
