//! The Anthropic Messages API: `POST /v1/messages` and
//! `POST /v1/messages/count_tokens`, in Anthropic's wire format, so the mock
//! can stand in for a hosted provider when a test checks what a gateway
//! sends and how it translates the answer.
//!
//! The text and token counts are those of the OpenAI routes. When the
//! request offers `tools` and the last user message mentions "weather", the
//! answer is a `tool_use` block calling the first tool with
//! `{"city": "Paris"}` (streamed as two `input_json_delta` fragments), so
//! tool-call translation can be tested without a model. Errors, including
//! injected ones, use Anthropic's `{"type": "error", "error": {...}}` shape.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::admit::{admit, Dialect, Route};
use super::{reply, stream as sse, MockState};

mod stream;
#[cfg(test)]
mod tests;

/// The id of the one tool call the mock makes.
const TOOL_USE_ID: &str = "toolu_mock_1";

/// The tool input, in the fragments a stream sends; they concatenate to
/// `{"city": "Paris"}`.
const TOOL_INPUT_FRAGMENTS: [&str; 2] = ["{\"city\": ", "\"Paris\"}"];

/// What the assistant answers.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Answer {
    /// `tokens` generated words; `stop_reason` is `end_turn` or `max_tokens`.
    Text {
        tokens: u32,
        stop_reason: &'static str,
    },
    /// A call of the named tool.
    ToolUse { name: String },
}

impl Answer {
    /// `usage.output_tokens`: generated words, or the tool input's words.
    fn output_tokens(&self) -> u32 {
        match self {
            Answer::Text { tokens, .. } => *tokens,
            Answer::ToolUse { .. } => TOOL_INPUT_FRAGMENTS
                .iter()
                .map(|f| reply::count_words(f))
                .sum(),
        }
    }

    fn stop_reason(&self) -> &'static str {
        match self {
            Answer::Text { stop_reason, .. } => stop_reason,
            Answer::ToolUse { .. } => "tool_use",
        }
    }

    /// How many `content_block_delta` events a stream sends.
    fn deltas(&self) -> u32 {
        match self {
            Answer::Text { tokens, .. } => *tokens,
            Answer::ToolUse { .. } => TOOL_INPUT_FRAGMENTS.len() as u32,
        }
    }

    /// The complete content block of a non-streamed answer.
    fn block(&self) -> Value {
        match self {
            Answer::Text { tokens, .. } => json!({"type": "text", "text": reply::text(*tokens)}),
            Answer::ToolUse { name } => json!({
                "type": "tool_use", "id": TOOL_USE_ID, "name": name, "input": {"city": "Paris"}
            }),
        }
    }

    /// The block as `content_block_start` announces it: still empty.
    fn empty_block(&self) -> Value {
        match self {
            Answer::Text { .. } => json!({"type": "text", "text": ""}),
            Answer::ToolUse { name } => json!({
                "type": "tool_use", "id": TOOL_USE_ID, "name": name, "input": {}
            }),
        }
    }

    /// The `i`-th `delta` of a stream.
    fn delta(&self, i: u32) -> Value {
        match self {
            Answer::Text { .. } => json!({"type": "text_delta", "text": reply::token(i)}),
            Answer::ToolUse { .. } => json!({
                "type": "input_json_delta",
                "partial_json": TOOL_INPUT_FRAGMENTS.get(i as usize).copied().unwrap_or(""),
            }),
        }
    }
}

/// `POST /v1/messages`.
pub(super) async fn messages(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let (request, model, directives) = match admit(&state, &body, Route::ANTHROPIC).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    // Anthropic, unlike OpenAI, has no default output limit.
    let max_tokens = match request.get("max_tokens") {
        None | Some(Value::Null) => return invalid("max_tokens: Field required"),
        Some(value) => match value.as_u64() {
            Some(limit) => u32::try_from(limit).unwrap_or(u32::MAX),
            None => return invalid("max_tokens: Input should be a valid integer"),
        },
    };
    let answer = match tool_call(&request) {
        Some(name) => Answer::ToolUse { name },
        None => {
            let tokens = directives.chunks(&state);
            if max_tokens < tokens {
                Answer::Text {
                    tokens: max_tokens,
                    stop_reason: "max_tokens",
                }
            } else {
                Answer::Text {
                    tokens,
                    stop_reason: "end_turn",
                }
            }
        }
    };
    let script = stream::Script {
        id: format!("msg_mock_{}", state.requests.load(Ordering::Relaxed)),
        model,
        prompt: reply::messages_prompt_tokens(&request),
        answer,
        pace: directives.pace(&state),
        reset_after: directives.reset_after,
    };
    if request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return sse::respond(script, state.streams.clone());
    }
    // As on the OpenAI routes, a non-streamed answer takes as long as
    // generating it would, and a caller giving up is counted.
    let guard = sse::Guard::start(state.answers.clone());
    if !script.pace.is_zero() {
        tokio::time::sleep(script.pace * script.answer.deltas()).await;
    }
    guard.complete();
    Json(json!({
        "id": script.id,
        "type": "message",
        "role": "assistant",
        "model": script.model,
        "content": [script.answer.block()],
        "stop_reason": script.answer.stop_reason(),
        "stop_sequence": null,
        "usage": {"input_tokens": script.prompt, "output_tokens": script.answer.output_tokens()},
    }))
    .into_response()
}

/// `POST /v1/messages/count_tokens`.
pub(super) async fn count_tokens(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    match admit(&state, &body, Route::ANTHROPIC).await {
        Ok((request, _, _)) => {
            Json(json!({"input_tokens": reply::messages_prompt_tokens(&request)})).into_response()
        }
        Err(response) => response,
    }
}

fn invalid(message: &str) -> Response {
    Dialect::Anthropic.error(StatusCode::BAD_REQUEST, message, None)
}

/// The tool to call: the first offered one, when the last user message
/// asks about the weather.
fn tool_call(request: &Value) -> Option<String> {
    let name = request
        .get("tools")?
        .as_array()?
        .first()?
        .get("name")?
        .as_str()?;
    let last_user = request
        .get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let asks = text_of(last_user.get("content"))
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("weather"));
    asks.then(|| name.to_owned())
}

/// The text of a message's content: a string, or its text blocks joined.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}
