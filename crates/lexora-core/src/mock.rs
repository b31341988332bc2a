//! The built-in mock engine: an OpenAI-compatible server for the demo, the
//! tests and the benchmarks (`lexora mock`, or `type: mock` in-process).
//! It can also stand in for hosted providers (Azure OpenAI, Anthropic) in
//! tests that check the exact requests a gateway sends.
//!
//! | route | answers |
//! |---|---|
//! | `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` | OpenAI shapes, streamed when asked |
//! | `GET /v1/models`, `POST /tokenize`, `GET /health` | model list, token ids, liveness |
//! | `POST /openai/deployments/{deployment}/chat/completions` (also `/completions`, `/embeddings`) | Azure OpenAI: as the OpenAI routes; `?api-version=` required (else 404 `{"error":{"code":"404","message":"Resource not found"}}`); the deployment is the model when the body names none |
//! | `POST /v1/messages` | Anthropic Messages, streamed as Anthropic events when asked; `tool_use` when `tools` are offered and the last user message mentions "weather" (see `mock/anthropic.rs`) |
//! | `POST /v1/messages/count_tokens` | `{"input_tokens": N}` |
//! | `GET /mock/requests`, `DELETE` | bodies received by the API routes, newest last |
//! | `GET /mock/log`, `DELETE` | `{"entries": [{"method", "path", "headers", "body"}]}`: every request to the API routes (not `/mock/*`, `/health`), path with query, lower-case header names, body as JSON or `null` |
//! | `GET /mock/stats` | streams and non-streamed answers completed and cancelled |
//!
//! Answers are deterministic content with real usage counts, streamed at a
//! configurable pace, and faults are injected on request. A request may
//! carry a `"mock"` object (which Lexora forwards like any unknown field);
//! it works on every generating route, with errors in that route's shape:
//!
//! | key | effect |
//! |---|---|
//! | `status`, `message` | answer with this error status instead |
//! | `retry_after` | `Retry-After` header on that error |
//! | `delay_ms` | wait before the response head (slow start) |
//! | `chunks` | completion tokens to generate |
//! | `tokens_per_second` | streaming pace (0 = as fast as possible) |
//! | `reset_after` | abort the connection after this many stream chunks (events) |
//! | `fail_first`, `fail_key` | apply `status` only to the first N requests with this key |

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::MockConfig;
use admit::Dialect;

mod admit;
mod anthropic;
mod azure;
mod log;
mod openai;
pub mod reply;
mod stream;
#[cfg(test)]
mod tests;

/// How many received bodies `/mock/requests` (and entries `/mock/log`)
/// keeps.
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
    /// `/mock/log` entries, newest last.
    log: Mutex<VecDeque<Value>>,
    /// Requests seen per `fail_key`.
    failures: Mutex<HashMap<String, u32>>,
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
                log: Mutex::new(VecDeque::new()),
                failures: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The engine's HTTP routes.
    pub fn router(&self) -> Router {
        let azure = "/openai/deployments/{deployment}";
        Router::new()
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(openai::chat))
            .route("/v1/completions", post(openai::completions))
            .route("/v1/embeddings", post(openai::embeddings))
            .route(&format!("{azure}/chat/completions"), post(azure::chat))
            .route(&format!("{azure}/completions"), post(azure::completions))
            .route(&format!("{azure}/embeddings"), post(azure::embeddings))
            .route("/v1/messages", post(anthropic::messages))
            .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
            .route("/tokenize", post(tokenize))
            .route("/mock/requests", get(recent).delete(clear_recent))
            .route("/mock/log", get(log::entries).delete(log::clear))
            .route("/mock/stats", get(stats))
            .fallback(|| async {
                Dialect::OpenAi.error(StatusCode::NOT_FOUND, "unknown endpoint", None)
            })
            // Outermost, so the log sees every request as it arrived.
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                log::record,
            ))
            .with_state(self.state.clone())
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
