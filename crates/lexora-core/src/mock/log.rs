//! The request log behind `GET /mock/log`: method, path with query, headers
//! and body of every request to the API routes, so a test can check exactly
//! what a gateway sent to a provider (auth headers, Azure's `api-version`,
//! translated bodies). `/mock/*` and `/health` are left out: they are the
//! test's own traffic, not the gateway's.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Map, Value};

use super::admit::Dialect;
use super::{MockState, RECENT_LIMIT};

/// The largest body the log buffers; larger ones are refused, as the API
/// routes would refuse them anyway.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Middleware: records the request, then hands it on unchanged.
pub(super) async fn record(
    State(state): State<Arc<MockState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/health" || path.starts_with("/mock/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, BODY_LIMIT).await else {
        return Dialect::OpenAi.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            None,
        );
    };
    let entry = json!({
        "method": parts.method.as_str(),
        "path": parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str()),
        "headers": headers(&parts.headers),
        "body": body_value(&bytes),
    });
    if let Ok(mut log) = state.log.lock() {
        if log.len() == RECENT_LIMIT {
            log.pop_front();
        }
        log.push_back(entry);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Headers as an object; repeated names are joined with ", " as HTTP allows.
fn headers(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

/// The body as JSON; `null` when empty, the raw text when it is not JSON
/// (so a malformed body still shows what was sent).
fn body_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `GET /mock/log`: `{"entries": [...]}`, newest last.
pub(super) async fn entries(State(state): State<Arc<MockState>>) -> Json<Value> {
    let entries: Vec<Value> = state
        .log
        .lock()
        .map(|log| log.iter().cloned().collect())
        .unwrap_or_default();
    Json(json!({"entries": entries}))
}

/// `DELETE /mock/log`.
pub(super) async fn clear(State(state): State<Arc<MockState>>) -> StatusCode {
    if let Ok(mut log) = state.log.lock() {
        log.clear();
    }
    StatusCode::NO_CONTENT
}
