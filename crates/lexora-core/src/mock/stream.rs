//! The mock engine's SSE streams. [`respond`] drives any [`Script`] (the
//! event sequence of one wire format) at its pace, with the counters and the
//! injected connection reset; [`Plan`] is the OpenAI script: a role chunk,
//! one chunk per token, a finish chunk, the usage chunk when asked, `[DONE]`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::reply;

/// Counts shared by all streams of one engine.
#[derive(Clone, Default)]
pub(super) struct StreamCounters {
    pub active: Arc<AtomicI64>,
    pub completed: Arc<AtomicU64>,
    pub cancelled: Arc<AtomicU64>,
}

/// What one answer will contain.
pub(super) struct Plan {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub chat: bool,
    pub prompt: u32,
    pub chunks: u32,
    pub finish: &'static str,
    pub include_usage: bool,
    pub pace: Duration,
    pub reset_after: Option<u32>,
    /// Call this tool instead of writing text (see [`super::openai`]).
    pub tool: Option<String>,
    /// When events are stamped (see
    /// [`MockConfig::stamp_events`](crate::config::MockConfig)): when the
    /// request reached the engine, µs since the Unix epoch. Every JSON
    /// event then carries it as `"mock_received_us"`, beside its own write
    /// time as `"mock_sent_us"`, so a client can tell the engine's time
    /// from the time spent getting to it and back.
    pub stamp: Option<u64>,
}

/// The arguments of the mock's tool call, streamed in two fragments.
pub(super) const TOOL_ARGUMENTS: [&str; 2] = ["{\"city\": ", "\"Paris\"}"];
pub(super) const TOOL_CALL_ID: &str = "call_mock_1";

/// Counts a generation as cancelled unless it ran to the end.
pub(super) struct Guard {
    counters: StreamCounters,
    finished: bool,
}

impl Guard {
    /// Counts one generation as active until the guard is dropped.
    pub(super) fn start(counters: StreamCounters) -> Self {
        counters.active.fetch_add(1, Ordering::Relaxed);
        Self {
            counters,
            finished: false,
        }
    }

    pub(super) fn complete(mut self) {
        self.finished = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
        let counter = if self.finished {
            &self.counters.completed
        } else {
            &self.counters.cancelled
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The events of one streamed answer, produced lazily so a long stream
/// costs no memory up front.
pub(super) trait Script: Send + 'static {
    /// A position in the stream.
    type Step: Send + 'static;
    /// Where the stream starts.
    fn first(&self) -> Self::Step;
    /// The bytes to send at `step`; `None` ends the stream.
    fn event(&self, step: &Self::Step) -> Option<Bytes>;
    /// The step after `step`.
    fn next(&self, step: &Self::Step) -> Self::Step;
    /// How long to wait before sending `step` (the generation pace).
    fn pause(&self, step: &Self::Step) -> Duration;
    /// Abort the connection after this many events.
    fn reset_after(&self) -> Option<u32>;
}

/// A position in an OpenAI stream.
pub(super) enum Step {
    Role,
    Token(u32),
    /// Fragment `n` of the tool call (0 names the tool).
    Tool(usize),
    Finish,
    Usage,
    Done,
    End,
}

impl Plan {
    fn chunk(&self, choice: Value) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

impl Script for Plan {
    type Step = Step;

    fn first(&self) -> Step {
        // Completions have no role chunk: start at the first token.
        if self.chat {
            Step::Role
        } else if self.chunks > 0 {
            Step::Token(0)
        } else {
            Step::Finish
        }
    }

    fn event(&self, step: &Step) -> Option<Bytes> {
        let mut value = match step {
            Step::Role => self.chunk(json!({
                "index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null
            })),
            Step::Tool(n) => {
                let call = match (n, &self.tool) {
                    (0, Some(name)) => json!({"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": name, "arguments": ""}}),
                    (n, _) => json!({"index": 0, "function": {"arguments": TOOL_ARGUMENTS.get(n - 1).copied().unwrap_or_default()}}),
                };
                self.chunk(json!({"index": 0, "delta": {"tool_calls": [call]}, "logprobs": null, "finish_reason": null}))
            }
            Step::Token(i) if self.chat => self.chunk(json!({
                "index": 0, "delta": {"content": reply::token(*i)}, "logprobs": null, "finish_reason": null
            })),
            Step::Token(i) => self.chunk(json!({
                "index": 0, "text": reply::token(*i), "logprobs": null, "finish_reason": null
            })),
            Step::Finish if self.chat => self.chunk(json!({
                "index": 0, "delta": {}, "logprobs": null, "finish_reason": self.finish
            })),
            Step::Finish => self.chunk(json!({
                "index": 0, "text": "", "logprobs": null, "finish_reason": self.finish
            })),
            Step::Usage => json!({
                "id": self.id,
                "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": reply::usage(self.prompt, self.chunks),
            }),
            Step::Done => return Some(Bytes::from_static(b"data: [DONE]\n\n")),
            Step::End => return None,
        };
        if let Some(received) = self.stamp {
            value["mock_received_us"] = json!(received);
            value["mock_sent_us"] = json!(unix_micros());
        }
        Some(Bytes::from(format!("data: {value}\n\n")))
    }

    fn next(&self, step: &Step) -> Step {
        match step {
            Step::Role if self.tool.is_some() => Step::Tool(0),
            Step::Tool(n) if *n < TOOL_ARGUMENTS.len() => Step::Tool(n + 1),
            Step::Tool(_) => Step::Finish,
            Step::Role if self.chat && self.chunks > 0 => Step::Token(0),
            Step::Role if self.chat => Step::Finish,
            Step::Role => Step::End,
            Step::Token(i) if i + 1 < self.chunks => Step::Token(i + 1),
            Step::Token(_) => Step::Finish,
            Step::Finish if self.include_usage => Step::Usage,
            Step::Finish | Step::Usage => Step::Done,
            Step::Done | Step::End => Step::End,
        }
    }

    fn pause(&self, step: &Step) -> Duration {
        match step {
            Step::Token(i) if *i > 0 => self.pace,
            _ => Duration::ZERO,
        }
    }

    fn reset_after(&self) -> Option<u32> {
        self.reset_after
    }
}

/// Now on the wall clock, which every process on the machine shares.
pub(super) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Streams the script as `text/event-stream`.
pub(super) fn respond<S: Script>(script: S, counters: StreamCounters) -> Response {
    let guard = Guard::start(counters);
    let first = Some(script.first());
    let state = (script, first, 0u32, guard);
    let events = futures_util::stream::unfold(state, |(script, step, sent, guard)| async move {
        // `None` is the state after a reset: nothing more is sent, and the
        // guard counts the stream as cancelled when it is dropped.
        let step = step?;
        let pause = script.pause(&step);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        if script.reset_after().is_some_and(|limit| sent >= limit) {
            // An error item makes hyper abort the connection mid-body: the
            // client sees a reset, as from a crashed engine.
            let error = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock reset");
            return Some((Err(error), (script, None, sent, guard)));
        }
        let Some(bytes) = script.event(&step) else {
            guard.complete();
            return None;
        };
        let next = script.next(&step);
        Some((Ok(bytes), (script, Some(next), sent + 1, guard)))
    });
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
