//! Admission of one API request: parse and record the body, apply the slow
//! start and the injected faults, pick the model to answer as. Errors are
//! rendered in the wire format of the route that was called.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{reply, MockState, RECENT_LIMIT};

/// The wire format a route speaks, which decides the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    /// OpenAI (and Azure OpenAI): `{"error": {"message", "type", ...}}`.
    OpenAi,
    /// Anthropic Messages: `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

impl Dialect {
    /// An error response in this dialect's shape.
    pub(super) fn error(
        self,
        status: StatusCode,
        message: &str,
        retry_after: Option<u64>,
    ) -> Response {
        let body = match self {
            Dialect::OpenAi => {
                let kind = match status.as_u16() {
                    400 => "BadRequestError",
                    401 => "AuthenticationError",
                    404 => "NotFoundError",
                    429 => "RateLimitError",
                    _ => "InternalServerError",
                };
                reply::error(message, kind, status.as_u16())
            }
            Dialect::Anthropic => {
                let kind = match status.as_u16() {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Per-request fault injection (the body's `"mock"` object).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Directives {
    pub status: Option<u16>,
    pub message: Option<String>,
    pub retry_after: Option<u64>,
    pub delay_ms: Option<u64>,
    pub chunks: Option<u32>,
    pub tokens_per_second: Option<f64>,
    pub reset_after: Option<u32>,
    /// Apply `status` only to the first N requests carrying the same
    /// `fail_key`; later ones succeed (an engine that recovers).
    pub fail_first: Option<u32>,
    pub fail_key: Option<String>,
}

impl Directives {
    /// Tokens to generate, before any `max_tokens` cap.
    pub(super) fn chunks(&self, state: &MockState) -> u32 {
        self.chunks.unwrap_or(state.config.chunks)
    }

    /// The time between two generated tokens (zero = as fast as possible).
    pub(super) fn pace(&self, state: &MockState) -> Duration {
        match self
            .tokens_per_second
            .unwrap_or(state.config.tokens_per_second)
        {
            tps if tps > 0.0 => Duration::from_secs_f64(1.0 / tps),
            _ => Duration::ZERO,
        }
    }
}

/// What a route tells [`admit`] about itself.
#[derive(Clone, Copy)]
pub(super) struct Route<'a> {
    pub dialect: Dialect,
    /// The model to answer as when the body names none (an Azure
    /// deployment); `None` falls back to the first configured model, or —
    /// for Anthropic, where `model` is required — rejects the request.
    pub default_model: Option<&'a str>,
}

impl Route<'static> {
    /// An OpenAI route.
    pub(super) const OPENAI: Self = Route {
        dialect: Dialect::OpenAi,
        default_model: None,
    };
    /// An Anthropic route.
    pub(super) const ANTHROPIC: Self = Route {
        dialect: Dialect::Anthropic,
        default_model: None,
    };
}

/// Parses and records a request body, applies the slow start and injected
/// errors; returns the body, the model to answer as, and the directives.
pub(super) async fn admit(
    state: &MockState,
    body: &Bytes,
    route: Route<'_>,
) -> Result<(Value, String, Directives), Response> {
    let dialect = route.dialect;
    state.requests.fetch_add(1, Ordering::Relaxed);
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        dialect.error(
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
            dialect.error(
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
        return Err(dialect.error(status, message, directives.retry_after));
    }
    let model = model(state, &value, route)
        .map_err(|(status, message)| dialect.error(status, &message, None))?;
    Ok((value, model, directives))
}

/// The model to answer as: the body's, if the engine serves it; else the
/// status and message to refuse with.
fn model(
    state: &MockState,
    body: &Value,
    route: Route<'_>,
) -> Result<String, (StatusCode, String)> {
    match body.get("model").and_then(Value::as_str) {
        Some(model) if state.config.models.iter().any(|m| m == model) => Ok(model.to_owned()),
        Some(model) => Err((
            StatusCode::NOT_FOUND,
            match route.dialect {
                Dialect::OpenAi => format!("The model `{model}` does not exist."),
                Dialect::Anthropic => format!("model: {model}"),
            },
        )),
        None => match (route.default_model, route.dialect) {
            (Some(model), _) => Ok(model.to_owned()),
            (None, Dialect::Anthropic) => {
                Err((StatusCode::BAD_REQUEST, "model: Field required".into()))
            }
            (None, Dialect::OpenAi) => Ok(state
                .config
                .models
                .first()
                .cloned()
                .unwrap_or_else(|| "mock".into())),
        },
    }
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
