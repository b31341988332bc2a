//! Translate: OpenAI Chat Completions ⇄ Anthropic Messages, both ways,
//! streaming included.
//!
//! Two directions, each with a request, a response, a stream and an error
//! translation:
//!
//! - **Outbound** (an OpenAI client, an Anthropic upstream):
//!   [`openai_to_anthropic_request`], [`anthropic_to_openai_response`],
//!   [`AnthropicToOpenAiStream`], [`anthropic_error_to_openai`].
//! - **Inbound** (an Anthropic client, an OpenAI-compatible engine):
//!   [`anthropic_to_openai_request`], [`openai_to_anthropic_response`],
//!   [`OpenAiToAnthropicStream`], [`openai_error_to_anthropic`].
//!
//! Everything here is pure: bytes in, bytes out, no I/O. The only ambient
//! inputs are the clock (OpenAI's `created` field) and fresh ids when an
//! upstream gave none. Requests that cannot be expressed in the target API
//! fail with [`TranslateError`] (the caller answers 400); responses never
//! fail on content, since the model's work is already paid for.
//!
//! # Translation losses
//!
//! What does not survive the trip, by direction. Anything not listed either
//! maps exactly or is rejected with a [`TranslateError`].
//!
//! ## OpenAI request → Anthropic request
//!
//! | OpenAI field | What happens |
//! |---|---|
//! | `n` > 1 | **rejected** (Anthropic answers one choice) |
//! | `system` / `developer` messages | hoisted to the top-level `system`, joined with blank lines; their position in the conversation is lost |
//! | `temperature` > 1 | clamped to 1 (Anthropic's range is 0–1) |
//! | `temperature`, `top_p`, `top_k` with thinking on | dropped (Anthropic rejects sampling changes with thinking) |
//! | thinking budget ≥ `max_tokens` | clamped to `max_tokens - 1`; below 1024 (Anthropic's minimum) thinking is left off |
//! | `reasoning_effort` | approximated as a thinking budget: minimal/low 1024, medium 4096, high 16384; `none` is off |
//! | `frequency_penalty`, `presence_penalty`, `logit_bias`, `seed` | dropped |
//! | `logprobs`, `top_logprobs` | dropped |
//! | `response_format` (`json_object`, `json_schema`) | dropped: Anthropic has no structured-output switch here |
//! | `stream_options` | dropped: Anthropic streams always carry usage |
//! | `modalities`, `audio`, `prediction`, `store`, `service_tier`, `metadata`, `web_search_options`, `prompt_cache_key` | dropped |
//! | legacy `functions` / `function_call` | dropped (use `tools` / `tool_choice`) |
//! | tool `strict` | dropped |
//! | `image_url.detail` | dropped |
//! | message `name` | dropped |
//! | assistant `reasoning_content` in history | dropped: Anthropic needs signed thinking blocks |
//! | empty text parts, messages left without content | dropped |
//! | `input_audio` parts, `file` parts by `file_id`, non-function tools | **rejected** |
//!
//! ## Anthropic response / stream → OpenAI response / stream
//!
//! | Anthropic | OpenAI |
//! |---|---|
//! | `thinking` blocks | `reasoning_content` (non-standard, as DeepSeek and vLLM send it); the `signature` is dropped |
//! | `redacted_thinking`, server tool blocks, citations | dropped |
//! | `stop_sequence` (which sequence matched) | dropped; `finish_reason` is `stop` |
//! | `pause_turn` | `stop` |
//! | `model_context_window_exceeded` | `length` |
//! | `cache_creation_input_tokens` | counted in `prompt_tokens`, not itemized |
//!
//! ## Anthropic request → OpenAI request
//!
//! | Anthropic field | What happens |
//! |---|---|
//! | `system` blocks | one system message, joined with blank lines |
//! | `max_tokens` | sent as `max_tokens` (what OpenAI-compatible engines read), not `max_completion_tokens` |
//! | `top_k` | passed as `top_k` (vLLM and llama.cpp read it; OpenAI itself does not) |
//! | `thinking` | approximated as `reasoning_effort`: budget ≤ 2048 low, ≤ 8192 medium, else high |
//! | `thinking` / `redacted_thinking` blocks in history | dropped |
//! | `tool_result.is_error` | dropped |
//! | images inside `tool_result` | dropped (OpenAI tool messages carry text only) |
//! | `cache_control` anywhere | dropped |
//! | `service_tier`, `container`, `mcp_servers` | dropped |
//! | server tools (`web_search_…`, `bash_…`, …) | **rejected** |
//!
//! ## OpenAI response / stream → Anthropic response / stream
//!
//! | OpenAI | Anthropic |
//! |---|---|
//! | choices other than index 0 | dropped |
//! | `reasoning_content` / `reasoning` | a `thinking` block with an empty `signature` |
//! | `refusal` | a text block, `stop_reason: "refusal"` |
//! | tool `arguments` that are not a JSON object | kept as `{"_raw": "<arguments>"}` (not an error: the answer is already paid for) |
//! | `finish_reason: "stop"` | `end_turn` (OpenAI does not say whether a stop sequence matched) |
//! | `logprobs`, `system_fingerprint`, `service_tier` | dropped |
//! | `cache_creation_input_tokens` | always 0 (OpenAI does not report cache writes) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

mod errors;
mod mapping;
mod to_anthropic_request;
mod to_anthropic_response;
mod to_anthropic_stream;
mod to_openai_request;
mod to_openai_response;
mod to_openai_stream;

#[cfg(test)]
mod tests;

pub use errors::{anthropic_error_to_openai, openai_error_to_anthropic};
pub use to_anthropic_request::openai_to_anthropic_request;
pub use to_anthropic_response::openai_to_anthropic_response;
pub use to_anthropic_stream::OpenAiToAnthropicStream;
pub use to_openai_request::anthropic_to_openai_request;
pub use to_openai_response::anthropic_to_openai_response;
pub use to_openai_stream::AnthropicToOpenAiStream;

/// A translation failure: the request cannot be expressed in the target API.
///
/// The caller answers it as a client error (400, `invalid_request_error`),
/// naming `param` when one field is at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    /// What cannot be translated, for the client.
    pub message: String,
    /// The request field at fault, OpenAI-style (`"messages"`, `"n"`, ...).
    pub param: Option<&'static str>,
}

impl TranslateError {
    fn new(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param,
        }
    }

    /// A body that is not JSON of the expected shape; `what` names it
    /// ("request", "response").
    fn invalid_body(what: &str, error: &serde_json::Error) -> Self {
        Self::new(None, format!("invalid {what} body: {error}"))
    }
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
fn unix_now() -> u64 {
    // A clock before 1970 is a broken host, not a reason to fail a stream.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh id like `msg_18f2c3a4b5d6e7f8_3`, for when the upstream gave none.
/// Unique within the process (a counter) and across restarts (the clock).
fn fresh_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{nanos:x}_{n}")
}

/// Serializes a JSON value built in this module. Values built from
/// `serde_json::Value` always serialize (keys are strings), so the empty
/// fallback is unreachable rather than a silent loss.
fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
