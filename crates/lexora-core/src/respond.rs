//! Respond: turn the engine's answer into the client's, settling usage.
//!
//! Streams go through [`sse::SseRelay`] as they arrive. Complete answers
//! are read (within the deadline) so their `usage` can be counted, then sent
//! as they came. Error answers are normalized to OpenAI's error shape,
//! keeping the engine's status, message and `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::body::{read_whole, Unread};
use crate::error::{error_json, GatewayError};
use crate::record::RequestRecord;
use crate::translate;
use crate::upstream::fields::FieldRules;
use crate::upstream::Wire;

pub mod sse;
mod stamp;
mod usage;

pub use stamp::Stamp;

#[cfg(test)]
mod tests;

/// Largest complete answer read from an engine (embeddings of long batches
/// are the big ones); a misbehaving upstream must not exhaust memory.
const MAX_ANSWER_BODY: usize = 64 * 1024 * 1024;

/// Headers a proxied answer carries in its map: content type, cache
/// control, `x-accel-buffering` (the gateway's own headers travel apart,
/// in a [`Stamp`]).
const RESPONSE_HEADERS: usize = 3;

/// Largest error body read from an engine; more is not a message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether the engine answered with an event stream.
pub fn is_event_stream(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Waits for the first bytes of a streamed answer. Until they arrive
/// nothing has been sent to the client, so a failure here is still an
/// ordinary (and retryable) error response rather than a broken stream.
/// Costs no latency: the client could not use the head without them.
pub async fn first_chunk(
    body: &mut Body,
    backend: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    backend: backend.to_owned(),
                    after: timeout,
                })
            }
            Ok(None) => return Ok(Bytes::new()),
            Ok(Some(Err(e))) => {
                return Err(GatewayError::UpstreamReset {
                    backend: backend.to_owned(),
                    reason: format!(
                        "before the first event: {}",
                        crate::upstream::root_cause(&e)
                    ),
                })
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(data);
                    }
                }
            }
        }
    }
}

/// Relays a streamed answer whose first bytes were already read.
/// `client_wire` is the API the client speaks; `id` names a made-up
/// Anthropic `message_start` if one is needed.
#[allow(clippy::too_many_arguments)]
pub fn stream(
    upstream: Response<Body>,
    first: Bytes,
    record: RequestRecord,
    strip_usage: bool,
    deadline: Instant,
    translation: Option<Translation>,
    fields: Arc<FieldRules>,
    client_wire: Wire,
    id: &str,
) -> Response {
    let (parts, body) = upstream.into_parts();
    // Only a Messages stream relayed as written may need a made-up start.
    let passthrough = (translation.is_none() && client_wire == Wire::Anthropic)
        .then(|| record.model().to_owned());
    let mut relay =
        sse::SseRelay::new(body, first, record, strip_usage, deadline).with_fields(fields);
    if let Some(translation) = translation {
        relay = relay.translated(translation.stream(), translation.to);
    } else if let Some(model) = passthrough {
        relay = relay.anthropic_passthrough(id, &model);
    }
    let mut response = Response::new(Body::new(relay));
    *response.status_mut() = parts.status;
    let headers = response.headers_mut();
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell buffering proxies in front of Lexora (nginx) to pass chunks on.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// How an answer must change for the client (engine and client speak
/// different APIs).
#[derive(Debug, Clone)]
pub struct Translation {
    pub from: Wire,
    pub to: Wire,
    /// The model name the client asked for (reported back to it).
    pub model: String,
    pub include_usage: bool,
}

impl Translation {
    /// `None` when both sides speak the same API.
    pub fn between(from: Wire, to: Wire, model: &str, include_usage: bool) -> Option<Self> {
        (from != to).then(|| Self {
            from,
            to,
            model: model.to_owned(),
            include_usage,
        })
    }

    fn response(&self, body: &[u8]) -> Result<Bytes, translate::TranslateError> {
        let out = match self.to {
            Wire::OpenAi => translate::anthropic_to_openai_response(body, &self.model)?,
            Wire::Anthropic => translate::openai_to_anthropic_response(body, &self.model)?,
        };
        Ok(Bytes::from(out))
    }

    fn stream(&self) -> Box<dyn sse::StreamTransform> {
        match self.to {
            Wire::OpenAi => Box::new(translate::AnthropicToOpenAiStream::new(
                &self.model,
                self.include_usage,
            )),
            Wire::Anthropic => Box::new(translate::OpenAiToAnthropicStream::new(&self.model)),
        }
    }
}

/// Reads a complete answer, records its usage, and passes it on.
pub async fn complete(
    upstream: Response<Body>,
    record: &mut RequestRecord,
    backend: &str,
    deadline: Instant,
    timeout: Duration,
    translation: Option<&Translation>,
    fields: &FieldRules,
) -> Result<Response, GatewayError> {
    let (parts, body) = upstream.into_parts();
    let mut bytes = read_body(body, MAX_ANSWER_BODY, backend, deadline, timeout).await?;
    record.first_byte();
    if !fields.is_empty() {
        // An answer the rules cannot read (not an object) goes as it came.
        if let Ok(rewritten) = fields.apply(&bytes) {
            bytes = rewritten;
        }
    }
    if let Some(translation) = translation {
        bytes = translation
            .response(&bytes)
            .map_err(|e| GatewayError::UpstreamReset {
                backend: backend.to_owned(),
                reason: format!("the answer could not be translated: {e}"),
            })?;
    }
    if let Some(usage) = usage::of_answer(&bytes) {
        record.set_usage(usage);
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = parts.status;
    response.headers_mut().reserve(RESPONSE_HEADERS);
    let content_type = match translation {
        Some(_) => HeaderValue::from_static("application/json"),
        None => parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    Ok(response)
}

/// Converts an engine's answer that is not a success into a
/// [`GatewayError`].
pub async fn upstream_error(
    upstream: Response<Body>,
    wire: Wire,
    backend: &str,
    deadline: Instant,
    timeout: Duration,
) -> GatewayError {
    let (parts, body) = upstream.into_parts();
    // Answers whose body is not passed on: the gateway's own fault, or
    // nothing a client can act on.
    let status = parts.status.as_u16();
    let refused = match status {
        401 | 403 => Some((
            "backend refused the gateway's credentials",
            GatewayError::UpstreamAuth {
                backend: backend.to_owned(),
                status,
            },
        )),
        400..=599 => None,
        _ => Some((
            "backend answered with a status that is neither a success nor an error",
            GatewayError::UpstreamInvalid {
                backend: backend.to_owned(),
                status,
            },
        )),
    };
    if let Some((why, error)) = refused {
        tracing::warn!(backend, status, "{why}");
        return error;
    }
    let bytes = match read_error_body(body, backend, deadline, timeout).await {
        Ok(bytes) => bytes,
        Err(error) => return error,
    };
    GatewayError::UpstreamStatus {
        status: parts.status,
        body: match wire {
            Wire::OpenAi => normalize_error_body(parts.status, &bytes),
            Wire::Anthropic => Bytes::from(translate::anthropic_error_to_openai(&bytes)),
        },
        retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
    }
}

/// An error answer's body, cut at [`MAX_ERROR_BODY`]: engines that echo
/// the offending input in a validation error can write more, and the
/// client must still get the engine's status (a failed read would become
/// a retried 502 counted against the backend). The rest is not read; the
/// connection is not reused.
async fn read_error_body(
    mut body: Body,
    backend: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let mut kept = bytes::BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let room = MAX_ERROR_BODY - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
            if data.len() >= room {
                break;
            }
        }
        Ok::<_, axum::Error>(())
    };
    let read = tokio::time::timeout_at(deadline, read).await;
    read_outcome(
        read.map(|r| r.map_err(|e| crate::upstream::root_cause(&e))),
        backend,
        timeout,
    )?;
    Ok(kept.freeze())
}

async fn read_body(
    body: Body,
    limit: usize,
    backend: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let read = tokio::time::timeout_at(deadline, read_whole(body, limit)).await;
    read_outcome(
        read.map(|r| {
            r.map_err(|e| match e {
                Unread::TooLong => format!("longer than {limit} bytes"),
                Unread::Failed(e) => crate::upstream::root_cause(&e),
            })
        }),
        backend,
        timeout,
    )
}

/// What a read of an answer's body from `backend` came to: its value, or
/// the timeout or failure (the root cause given) as the client's error.
fn read_outcome<T>(
    read: Result<Result<T, String>, tokio::time::error::Elapsed>,
    backend: &str,
    timeout: Duration,
) -> Result<T, GatewayError> {
    match read {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            backend: backend.to_owned(),
            after: timeout,
        }),
        Ok(Err(cause)) => Err(GatewayError::UpstreamReset {
            backend: backend.to_owned(),
            reason: format!("while reading the answer: {cause}"),
        }),
        Ok(Ok(value)) => Ok(value),
    }
}

#[derive(Deserialize)]
struct ErrorShapes {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    detail: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// An engine error body in OpenAI's shape. Bodies already in that shape
/// pass unchanged; vLLM's old flat shape, FastAPI's `detail`, a bare
/// `{"error": "text"}` and plain text are wrapped, keeping the message.
pub fn normalize_error_body(status: StatusCode, body: &[u8]) -> Bytes {
    let default_kind = match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "invalid_request_error",
        429 => "rate_limit_error",
        _ => "upstream_error",
    };
    let as_text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if let Ok(shapes) = serde_json::from_slice::<ErrorShapes>(body) {
        match &shapes.error {
            Some(Value::Object(inner)) if inner.get("message").is_some_and(Value::is_string) => {
                return Bytes::copy_from_slice(body);
            }
            Some(Value::Object(inner)) if inner.contains_key("message") => {
                let message = inner.get("message").map(as_text).unwrap_or_default();
                return error_json(&message, default_kind, None, None);
            }
            Some(other) => return error_json(&as_text(other), default_kind, None, None),
            None => {}
        }
        if let Some(message) = shapes.message.as_ref().or(shapes.detail.as_ref()) {
            let kind = shapes.kind.as_deref().unwrap_or(default_kind);
            return error_json(&as_text(message), kind, None, None);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("backend answered {status}")
    } else {
        text.chars().take(2000).collect()
    };
    error_json(&message, default_kind, None, None)
}
