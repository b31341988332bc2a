//! Error bodies both ways. The HTTP status stays the caller's: both APIs
//! tie their error types to statuses, so only the body changes.
//!
//! | Anthropic `type` (status) | OpenAI `type` / `code` |
//! |---|---|
//! | `invalid_request_error` (400) | `invalid_request_error` |
//! | `authentication_error` (401) | `authentication_error` / `invalid_api_key` |
//! | `permission_error` (403) | `permission_error` |
//! | `not_found_error` (404) | `not_found_error` |
//! | `request_too_large` (413) | `invalid_request_error` / `request_too_large` |
//! | `rate_limit_error` (429) | `rate_limit_error` / `rate_limit_exceeded` |
//! | `api_error` (500) | `server_error` / `api_error` |
//! | `overloaded_error` (529) | `server_error` / `overloaded` |
//!
//! Towards Anthropic the status decides (it is what Anthropic's SDKs and
//! types key on); without one (an error inside a stream) the OpenAI `type`
//! and `code` do.

use serde_json::{json, Value};

use super::to_bytes;

/// Anthropic error body → OpenAI error body
/// (`{"error": {"message", "type", "param", "code"}}`). The caller keeps
/// the HTTP status. A body that is not Anthropic-shaped keeps its text as
/// the message.
pub fn anthropic_error_to_openai(body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| v.get("error").unwrap_or(v));
    let mut object = openai_error_object(error);
    let has_message = error.is_some_and(|e| e.is_string() || e.get("message").is_some());
    if let Some(text) = raw_text(body).filter(|_| !has_message) {
        object["message"] = json!(text);
    }
    to_bytes(&json!({ "error": object }))
}

/// OpenAI error body → Anthropic error body
/// (`{"type": "error", "error": {"type", "message"}}`). `status` is the
/// upstream's HTTP status and picks the Anthropic type; the caller keeps
/// it. Also reads the near-OpenAI shapes engines send (`{"error": "..."}`,
/// `{"message": ...}`, `{"detail": ...}`) and plain text.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (message, kind, code) = match &parsed {
        Some(value) => read_openai_error(value),
        None => (None, None, None),
    };
    let message = message
        .or_else(|| raw_text(body))
        .unwrap_or_else(|| format!("upstream answered with status {status}"));
    let kind = anthropic_type(Some(status), kind.as_deref(), code.as_deref());
    to_bytes(&anthropic_error(kind, &message))
}

const DEFAULT_MESSAGE: &str = "upstream error";

/// An Anthropic `error` object → the OpenAI `error` object (`message`,
/// `type`, `param`, `code`). Also used for `error` events in streams.
pub(super) fn openai_error_object(error: Option<&Value>) -> Value {
    let field = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str);
    // `{"error": "..."}` is not Anthropic's shape, but its text is the message.
    let message = error
        .and_then(Value::as_str)
        .or_else(|| field("message"))
        .unwrap_or(DEFAULT_MESSAGE);
    let (kind, code) = match field("type").unwrap_or("api_error") {
        "invalid_request_error" => ("invalid_request_error", None),
        "authentication_error" => ("authentication_error", Some("invalid_api_key")),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("not_found_error", None),
        "request_too_large" => ("invalid_request_error", Some("request_too_large")),
        "rate_limit_error" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "overloaded_error" => ("server_error", Some("overloaded")),
        "api_error" => ("server_error", Some("api_error")),
        // billing_error, timeout_error, and types added later keep their
        // name: it says more than a guess would.
        other => (other, None),
    };
    json!({"message": message, "type": kind, "param": null, "code": code})
}

/// The Anthropic error body for `kind` and `message`.
pub(super) fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Message, type and code of an OpenAI-ish error document.
pub(super) fn read_openai_error(value: &Value) -> (Option<String>, Option<String>, Option<String>) {
    let error = value.get("error").unwrap_or(value);
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::String(_) | Value::Null => None,
            // FastAPI's `detail` lists; codes that are numbers.
            other => Some(other.to_string()),
        }
    };
    let message = match error {
        Value::String(s) => Some(s.clone()),
        _ => text(error.get("message"))
            .or_else(|| text(value.get("message")))
            .or_else(|| text(value.get("detail"))),
    };
    let kind = text(error.get("type"));
    let code = text(error.get("code"));
    (message, kind, code)
}

/// The Anthropic error type for an upstream status (when there is one)
/// or for OpenAI's `type` and `code`.
pub(super) fn anthropic_type(
    status: Option<u16>,
    kind: Option<&str>,
    code: Option<&str>,
) -> &'static str {
    if code == Some("overloaded") {
        return "overloaded_error";
    }
    match status {
        Some(400 | 422) => return "invalid_request_error",
        Some(401) => return "authentication_error",
        Some(403) => return "permission_error",
        Some(404) => return "not_found_error",
        Some(413) => return "request_too_large",
        Some(429) => return "rate_limit_error",
        Some(503 | 529) => return "overloaded_error",
        Some(500..=599) => return "api_error",
        Some(402..=499) => return "invalid_request_error",
        // No status, or a success status on an error body (a stream):
        // the type decides.
        _ => {}
    }
    match kind.unwrap_or("") {
        "invalid_request_error" | "invalid_request" | "BadRequestError" => "invalid_request_error",
        "authentication_error" | "invalid_api_key" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => "rate_limit_error",
        "service_unavailable" | "overloaded_error" => "overloaded_error",
        _ => match code {
            Some("request_too_large") => "request_too_large",
            Some("rate_limit_exceeded") => "rate_limit_error",
            _ => "api_error",
        },
    }
}

/// A non-JSON body's text as a message (trimmed, bounded), if any.
fn raw_text(body: &[u8]) -> Option<String> {
    // Bounded so an HTML error page does not become a huge message.
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('{') {
        return None;
    }
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}
