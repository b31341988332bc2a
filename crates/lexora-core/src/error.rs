//! The one error type of the request path and its mapping to HTTP.
//!
//! Every failure a client can see is a [`GatewayError`]. Its variants say
//! where the fault came from (the client, the upstream engine, or Lexora
//! itself) so later policies (retries, breakers) can ask whether another
//! attempt is safe. [`GatewayError::status`] and [`GatewayError::body`] are
//! the single place that decides what the client receives: an OpenAI-shaped
//! `{"error": {"message", "type", "param", "code"}}` document.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

#[cfg(test)]
mod tests;

/// Where a fault originated; decides blame in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we cannot serve.
    Downstream,
    /// The engine or provider failed or refused.
    Upstream,
    /// Lexora itself.
    Internal,
}

/// Every error a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The body is not valid JSON, or not a JSON object.
    #[error("{message}")]
    InvalidJson { message: String },
    /// A field has the wrong type or value.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// The body is larger than `server.max_body_size`.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The client did not finish sending its body in time.
    #[error("the request body did not arrive within {}s", .after.as_secs())]
    BodyTimeout { after: Duration },
    /// No backend serves the requested model.
    #[error("the model `{model}` does not exist or is not served by this gateway")]
    ModelNotFound { model: String },
    /// A path the gateway does not serve.
    #[error("unknown endpoint {path}")]
    UnknownEndpoint { path: String },
    /// Could not open a connection to the backend.
    #[error("could not connect to backend `{backend}`: {reason}")]
    UpstreamConnect { backend: String, reason: String },
    /// The backend closed or reset the connection before answering in full.
    #[error("backend `{backend}` closed the connection: {reason}")]
    UpstreamReset { backend: String, reason: String },
    /// The backend did not answer within the request's deadline.
    #[error("backend `{backend}` did not answer within {}s", .after.as_secs_f64())]
    UpstreamTimeout { backend: String, after: Duration },
    /// The backend answered with a status that is neither a success nor
    /// an error (an informational one as its final answer, a redirect, or
    /// past 599): nothing an inference client can act on, so it is not
    /// passed on.
    #[error("backend `{backend}` answered with status {status}, neither a success nor an error")]
    UpstreamInvalid { backend: String, status: u16 },
    /// The backend answered with an error status; its body is already
    /// OpenAI-shaped (see [`crate::respond::normalize_error_body`]).
    #[error("backend answered {status}")]
    UpstreamStatus {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
    },
    /// No valid API key.
    #[error("{message}")]
    Unauthorized { message: String },
    /// The key may not do this (a model it is not allowed, an admin call).
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    /// A per-user limit is exhausted.
    #[error("rate limit reached for {user} ({dimension}); try again in {}s", .retry_after.as_secs_f64().ceil())]
    RateLimited {
        user: String,
        dimension: &'static str,
        retry_after: Duration,
        info: Box<crate::limit::RateInfo>,
    },
    /// The backend's queue has no room.
    #[error("backend `{backend}` is saturated: {size} requests are already waiting")]
    QueueFull {
        backend: String,
        size: usize,
        retry_after: Duration,
    },
    /// The request's timeout passed while it waited for a free slot.
    #[error("waited {:.1}s for a free slot at backend `{backend}` until the request timed out", .waited.as_secs_f64())]
    QueueTimeout { backend: String, waited: Duration },
    /// Every backend for the model has its circuit breaker open.
    #[error("every backend for this model is failing; try again in {}s", .retry_after.as_secs_f64().ceil())]
    BreakerOpen { retry_after: Duration },
    /// A reload was refused because the new configuration is invalid.
    #[error("{message}")]
    InvalidConfig { message: String },
    /// The provider refused Lexora's own credentials: a gateway
    /// misconfiguration, not the client's fault. The provider's body is not
    /// passed on (some echo part of the key).
    #[error(
        "backend `{backend}` refused the gateway's credentials (HTTP {status}); check its api_key"
    )]
    UpstreamAuth { backend: String, status: u16 },
    /// No backend is able to take the request right now.
    #[error("{message}")]
    Unavailable { message: String },
    /// A local engine could not be started or swapped in; the client may
    /// try again after `retry_after`.
    #[error("{message}")]
    EngineUnavailable {
        message: String,
        retry_after: Duration,
    },
    /// A bug or resource failure inside Lexora.
    #[error("internal error: {message}")]
    Internal { message: String },
}

/// The JSON document every error response carries.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// The inner `error` object, as OpenAI clients parse it.
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl GatewayError {
    /// Where the fault came from.
    pub fn origin(&self) -> ErrorSource {
        match self {
            Self::InvalidJson { .. }
            | Self::InvalidRequest { .. }
            | Self::PayloadTooLarge { .. }
            | Self::BodyTimeout { .. }
            | Self::ModelNotFound { .. }
            | Self::UnknownEndpoint { .. }
            | Self::Unauthorized { .. }
            | Self::Forbidden { .. }
            | Self::RateLimited { .. }
            | Self::InvalidConfig { .. } => ErrorSource::Downstream,
            Self::QueueFull { .. } | Self::QueueTimeout { .. } | Self::BreakerOpen { .. } => {
                ErrorSource::Internal
            }
            Self::UpstreamConnect { .. }
            | Self::UpstreamReset { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamInvalid { .. }
            | Self::UpstreamStatus { .. }
            | Self::UpstreamAuth { .. }
            | Self::Unavailable { .. }
            | Self::EngineUnavailable { .. } => ErrorSource::Upstream,
            Self::Internal { .. } => ErrorSource::Internal,
        }
    }

    /// Whether sending the same request again (to this or another backend)
    /// may succeed. Only meaningful before any byte reached the client.
    pub fn retryable(&self) -> bool {
        match self {
            Self::UpstreamConnect { .. }
            | Self::UpstreamReset { .. }
            | Self::Unavailable { .. } => true,
            Self::UpstreamStatus { status, .. } => matches!(status.as_u16(), 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The HTTP status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson { .. } | Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::QueueTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BreakerOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound { .. } | Self::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            Self::UpstreamConnect { .. }
            | Self::UpstreamReset { .. }
            | Self::UpstreamInvalid { .. }
            | Self::UpstreamAuth { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamStatus { status, .. } => *status,
            Self::Unavailable { .. } | Self::EngineUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI `type` and `code` fields for this error.
    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::InvalidJson { .. } => ("invalid_request_error", Some("invalid_json")),
            Self::InvalidRequest { .. } => ("invalid_request_error", None),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Self::BodyTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            Self::ModelNotFound { .. } => ("invalid_request_error", Some("model_not_found")),
            Self::UnknownEndpoint { .. } => ("invalid_request_error", Some("unknown_url")),
            Self::Unauthorized { .. } => ("authentication_error", Some("invalid_api_key")),
            Self::Forbidden { code, .. } => ("permission_error", Some(*code)),
            Self::RateLimited { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            Self::QueueFull { .. } => ("rate_limit_error", Some("queue_full")),
            Self::QueueTimeout { .. } => ("timeout_error", Some("queue_timeout")),
            Self::BreakerOpen { .. } => ("service_unavailable", Some("circuit_open")),
            Self::InvalidConfig { .. } => ("invalid_request_error", Some("invalid_config")),
            Self::UpstreamConnect { .. } => ("upstream_error", Some("upstream_unreachable")),
            Self::UpstreamReset { .. } => ("upstream_error", Some("upstream_reset")),
            Self::UpstreamTimeout { .. } => ("timeout_error", Some("upstream_timeout")),
            Self::UpstreamInvalid { .. } => ("upstream_error", Some("upstream_invalid_status")),
            Self::UpstreamStatus { .. } => ("upstream_error", None),
            Self::UpstreamAuth { .. } => ("upstream_error", Some("upstream_auth_failed")),
            Self::Unavailable { .. } => ("service_unavailable", Some("no_backend_available")),
            Self::EngineUnavailable { .. } => ("service_unavailable", Some("engine_unavailable")),
            Self::Internal { .. } => ("internal_error", None),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { param, .. } => *param,
            Self::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// The serialized OpenAI-shaped body.
    pub fn body(&self) -> Bytes {
        if let Self::UpstreamStatus { body, .. } = self {
            return body.clone();
        }
        let message = self.to_string();
        let (kind, code) = self.kind_and_code();
        error_json(&message, kind, self.param(), code)
    }

    /// A short label for metrics (`lexora_errors_total{kind=...}`).
    pub fn metric_kind(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::UnknownEndpoint { .. } => "unknown_endpoint",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::QueueFull { .. } => "queue_full",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::BreakerOpen { .. } => "circuit_open",
            Self::InvalidConfig { .. } => "invalid_config",
            Self::UpstreamConnect { .. } => "upstream_connect",
            Self::UpstreamReset { .. } => "upstream_reset",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamInvalid { .. } => "upstream_invalid_status",
            Self::UpstreamStatus { .. } => "upstream_status",
            Self::UpstreamAuth { .. } => "upstream_auth",
            Self::Unavailable { .. } => "unavailable",
            Self::EngineUnavailable { .. } => "engine_unavailable",
            Self::Internal { .. } => "internal",
        }
    }
}

/// Serializes one OpenAI-shaped error document.
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            param,
            code,
        },
    };
    // Serializing a struct of strings cannot fail; fall back to a fixed body
    // rather than panic if it ever did.
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"error":{"message":"internal error","type":"internal_error","param":null,"code":null}}"#))
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            Self::UpstreamStatus {
                retry_after: Some(value),
                ..
            } => {
                headers.insert(header::RETRY_AFTER, value.clone());
            }
            Self::RateLimited {
                retry_after, info, ..
            } => {
                headers.insert(header::RETRY_AFTER, retry_after_value(*retry_after));
                info.write_headers(headers);
            }
            Self::QueueFull { retry_after, .. }
            | Self::BreakerOpen { retry_after }
            | Self::EngineUnavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after_value(*retry_after));
            }
            _ => {}
        }
        response
            .extensions_mut()
            .insert(ErrorKind(self.metric_kind()));
        response
    }
}

/// Whole seconds, rounded up: a client that waits this long will pass.
fn retry_after_value(wait: Duration) -> HeaderValue {
    HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// Marks a response as an error, for the access log and metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);
