//! The built-in mock engine: an OpenAI-compatible server for the demo, the
//! tests and the benchmarks (`lexora mock`, or `type: mock` in-process).
//!
//! It answers chat, completions, embeddings, models, `/tokenize` and
//! `/health` with deterministic content and real usage counts, streams at a
//! configurable pace, and injects faults on request. A request may carry a
//! `"mock"` object (which Lexora forwards like any unknown field):
//!
//! | key | effect |
//! |---|---|
//! | `status`, `message` | answer with this error status instead |
//! | `retry_after` | `Retry-After` header on that error |
//! | `delay_ms` | wait before the response head (slow start) |
//! | `chunks` | completion tokens to generate |
//! | `tokens_per_second` | streaming pace (0 = as fast as possible) |
//! | `reset_after` | abort the connection after this many stream chunks |
//! | `fail_first`, `fail_key` | apply `status` only to the first N requests with this key |
//!
//! `GET /mock/requests` lists the bodies received (newest last) and
//! `GET /mock/stats` counts streams and non-streamed answers completed and
//! cancelled, so tests can
//! see exactly what reached the engine.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::MockConfig;

pub mod reply;
mod stream;

/// How many received bodies `/mock/requests` keeps.
const RECENT_LIMIT: usize = 256;

/// A mock engine; cheap to clone, all clones share counters.
#[derive(Clone)]
pub struct MockEngine {
    state: Arc<MockState>,
}

struct MockState {
    config: MockConfig,
    requests: AtomicU64,
    streams: stream::StreamCounters,
    /// Non-streamed answers, counted the same way.
    answers: stream::StreamCounters,
    recent: Mutex<VecDeque<Value>>,
    /// Requests seen per `fail_key`.
    failures: Mutex<std::collections::HashMap<String, u32>>,
}

/// Per-request fault injection (the body's `"mock"` object).
#[derive(Debug, Default, Deserialize)]
struct Directives {
    status: Option<u16>,
    message: Option<String>,
    retry_after: Option<u64>,
    delay_ms: Option<u64>,
    chunks: Option<u32>,
    tokens_per_second: Option<f64>,
    reset_after: Option<u32>,
    /// Apply `status` only to the first N requests carrying the same
    /// `fail_key`; later ones succeed (an engine that recovers).
    fail_first: Option<u32>,
    fail_key: Option<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

impl MockEngine {
    /// An engine with the given behaviour.
    pub fn new(config: MockConfig) -> Self {
        Self {
            state: Arc::new(MockState {
                config,
                requests: AtomicU64::new(0),
                streams: stream::StreamCounters::default(),
                answers: stream::StreamCounters::default(),
                recent: Mutex::new(VecDeque::new()),
                failures: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// The engine's HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/tokenize", post(tokenize))
            .route("/mock/requests", get(recent).delete(clear_recent))
            .route("/mock/stats", get(stats))
            .fallback(|| async { error_response(StatusCode::NOT_FOUND, "unknown endpoint", None) })
            .with_state(self.state.clone())
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error_response(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response {
    let kind = match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        _ => "InternalServerError",
    };
    let mut response = (status, Json(reply::error(message, kind, status.as_u16()))).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

async fn models(State(state): State<Arc<MockState>>) -> Json<Value> {
    let created = now_unix();
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "lexora-mock"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// Parses and records a request body, applies the slow start and injected
/// errors; returns the body, the model to answer as, and the directives.
async fn admit(state: &MockState, body: &Bytes) -> Result<(Value, String, Directives), Response> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {e}"),
            None,
        )
    })?;
    if let Ok(mut recent) = state.recent.lock() {
        if recent.len() == RECENT_LIMIT {
            recent.pop_front();
        }
        recent.push_back(value.clone());
    }
    let directives: Directives = value
        .get("mock")
        .map(|m| serde_json::from_value(m.clone()))
        .transpose()
        .map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                &format!("invalid mock directives: {e}"),
                None,
            )
        })?
        .unwrap_or_default();
    let delay = directives
        .delay_ms
        .map(Duration::from_millis)
        .unwrap_or(state.config.latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = directives
        .status
        .filter(|_| should_fail(state, &directives))
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = directives.message.as_deref().unwrap_or("injected failure");
        return Err(error_response(status, message, directives.retry_after));
    }
    let model = match value.get("model").and_then(Value::as_str) {
        Some(model) if state.config.models.iter().any(|m| m == model) => model.to_owned(),
        Some(model) => {
            return Err(error_response(
                StatusCode::NOT_FOUND,
                &format!("The model `{model}` does not exist."),
                None,
            ))
        }
        None => state
            .config
            .models
            .first()
            .cloned()
            .unwrap_or_else(|| "mock".into()),
    };
    Ok((value, model, directives))
}

/// Whether an injected `status` applies to this request (see `fail_first`).
fn should_fail(state: &MockState, directives: &Directives) -> bool {
    let Some(limit) = directives.fail_first else {
        return true;
    };
    let key = directives.fail_key.clone().unwrap_or_default();
    let mut failures = state.failures.lock().unwrap_or_else(|e| e.into_inner());
    let seen = failures.entry(key).or_insert(0);
    *seen += 1;
    *seen <= limit
}

async fn chat(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    generate(state, body, Kind::Chat).await
}

async fn completions(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    generate(state, body, Kind::Completion).await
}

async fn generate(state: Arc<MockState>, body: Bytes, kind: Kind) -> Response {
    let (request, model, directives) = match admit(&state, &body).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let mut chunks = directives.chunks.unwrap_or(state.config.chunks);
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
        pace: match directives
            .tokens_per_second
            .unwrap_or(state.config.tokens_per_second)
        {
            tps if tps > 0.0 => Duration::from_secs_f64(1.0 / tps),
            _ => Duration::ZERO,
        },
        reset_after: directives.reset_after,
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
    let choice = match kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish,
        }),
        Kind::Completion => {
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

async fn embeddings(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let (request, model, _) = match admit(&state, &body).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let Some(inputs) = request.get("input").and_then(reply::embedding_inputs) else {
        return error_response(
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

#[derive(Deserialize)]
struct TokenizeRequest {
    content: String,
}

async fn tokenize(Json(request): Json<TokenizeRequest>) -> Json<Value> {
    Json(json!({"tokens": reply::tokenize(&request.content)}))
}

async fn recent(State(state): State<Arc<MockState>>) -> Json<Value> {
    let requests: Vec<Value> = state
        .recent
        .lock()
        .map(|recent| recent.iter().cloned().collect())
        .unwrap_or_default();
    Json(json!({"requests": requests}))
}

async fn clear_recent(State(state): State<Arc<MockState>>) -> StatusCode {
    if let Ok(mut recent) = state.recent.lock() {
        recent.clear();
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<MockState>>) -> Json<Value> {
    let (streams, answers) = (&state.streams, &state.answers);
    Json(json!({
        "requests": state.requests.load(Ordering::Relaxed),
        "active_streams": streams.active.load(Ordering::Relaxed),
        "completed_streams": streams.completed.load(Ordering::Relaxed),
        "cancelled_streams": streams.cancelled.load(Ordering::Relaxed),
        "active_answers": answers.active.load(Ordering::Relaxed),
        "completed_answers": answers.completed.load(Ordering::Relaxed),
        "cancelled_answers": answers.cancelled.load(Ordering::Relaxed),
    }))
}
