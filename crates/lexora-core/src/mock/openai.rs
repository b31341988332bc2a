//! The OpenAI-compatible answers: chat, completions and embeddings. The
//! Azure OpenAI routes reuse them with the deployment as default model.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::admit::{admit, Route};
use super::{now_unix, reply, stream, MockState};

/// Which generation endpoint was called.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    generate(state, body, Kind::Chat, Route::OPENAI).await
}

/// `POST /v1/completions`.
pub(super) async fn completions(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    generate(state, body, Kind::Completion, Route::OPENAI).await
}

/// `POST /v1/embeddings`.
pub(super) async fn embeddings(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    embed(state, body, Route::OPENAI).await
}

/// A chat or text completion, streamed when the body asks for it.
pub(super) async fn generate(
    state: Arc<MockState>,
    body: Bytes,
    kind: Kind,
    route: Route<'_>,
) -> Response {
    // Before the configured latency: that is the engine's time too.
    let received = state.config.stamp_events.then(stream::unix_micros);
    let (request, model, directives) = match admit(&state, &body, route).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let mut chunks = directives.chunks(&state);
    let mut finish = "stop";
    let limit = request
        .get("max_tokens")
        .or_else(|| request.get("max_completion_tokens"))
        .and_then(Value::as_u64);
    if let Some(limit) = limit.map(|l| u32::try_from(l).unwrap_or(u32::MAX)) {
        if limit < chunks {
            chunks = limit;
            finish = "length";
        }
    }
    let tool = matches!(kind, Kind::Chat)
        .then(|| tool_call(&request))
        .flatten();
    if tool.is_some() {
        // The mock's tool call counts as two completion tokens.
        chunks = 2;
        finish = "tool_calls";
    }
    let prompt = reply::prompt_tokens(&request);
    let n = state.requests.load(Ordering::Relaxed);
    let created = now_unix();
    let plan = stream::Plan {
        id: match kind {
            Kind::Chat => format!("chatcmpl-mock-{n}"),
            Kind::Completion => format!("cmpl-mock-{n}"),
        },
        model,
        created,
        chat: matches!(kind, Kind::Chat),
        prompt,
        chunks,
        finish,
        include_usage: request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        pace: directives.pace(&state),
        reset_after: directives.reset_after,
        tool,
        stamp: received,
    };
    if request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return stream::respond(plan, state.streams.clone());
    }
    // A non-streamed answer still takes as long as generating it would;
    // the guard notices when the caller gives up before it is done.
    let guard = stream::Guard::start(state.answers.clone());
    if !plan.pace.is_zero() {
        tokio::time::sleep(plan.pace * chunks).await;
    }
    guard.complete();
    let text = reply::text(chunks);
    let choice = match (kind, &plan.tool) {
        (Kind::Chat, Some(name)) => json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [{
                "id": stream::TOOL_CALL_ID, "type": "function",
                "function": {"name": name, "arguments": stream::TOOL_ARGUMENTS.concat()},
            }]},
            "logprobs": null,
            "finish_reason": finish,
        }),
        (Kind::Chat, None) => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish,
        }),
        (Kind::Completion, _) => {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        }
    };
    Json(json!({
        "id": plan.id,
        "object": match kind { Kind::Chat => "chat.completion", Kind::Completion => "text_completion" },
        "created": created,
        "model": plan.model,
        "choices": [choice],
        "usage": reply::usage(prompt, chunks),
    }))
    .into_response()
}

/// The tool to call: the first offered function, when the conversation
/// ends with a user message asking about the weather (after a tool result
/// the mock answers in text, as a model would).
fn tool_call(request: &Value) -> Option<String> {
    let name = request.pointer("/tools/0/function/name")?.as_str()?;
    let last_user = request
        .get("messages")?
        .as_array()?
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let text = match last_user.get("content")? {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let asks = text
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("weather"));
    asks.then(|| name.to_owned())
}

/// An embeddings answer: one deterministic unit vector per input.
pub(super) async fn embed(state: Arc<MockState>, body: Bytes, route: Route<'_>) -> Response {
    let (request, model, _) = match admit(&state, &body, route).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let Some(inputs) = request.get("input").and_then(reply::embedding_inputs) else {
        return route.dialect.error(
            StatusCode::BAD_REQUEST,
            "`input` must be a string, an array of strings, or token arrays",
            None,
        );
    };
    let dim = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or(state.config.embedding_dim)
        .clamp(1, 8192);
    let prompt: u32 = inputs.iter().map(|t| reply::count_words(t).max(1)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": reply::embedding(text, dim)}))
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }))
    .into_response()
}
