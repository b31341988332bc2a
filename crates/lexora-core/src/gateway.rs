//! The gateway: shared state and the request path, stage by stage.
//!
//! [`Gateway::proxy`] is the whole path of DESIGN.md in one screen:
//! identify → parse → route → send → respond → record. Each stage is a
//! function of its own module; this file only orders them.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::error::GatewayError;
use crate::identify;
use crate::parse::{self, Endpoint};
use crate::record::{Recorder, RequestRecord};
use crate::respond;
use crate::route::Routes;

/// Everything a request needs, shared by all requests.
pub struct Gateway {
    pub config: Config,
    pub routes: Routes,
    pub recorder: Arc<Recorder>,
    /// When this gateway started (wall clock for `uptime`).
    pub started: std::time::Instant,
    /// Renders `/metrics`; `None` when metrics are disabled.
    pub metrics: Option<PrometheusHandle>,
}

/// How a forwarded request comes back.
enum Forwarded {
    Complete(Response),
    Stream {
        upstream: Response<Body>,
        first: Bytes,
        strip_usage: bool,
        deadline: Instant,
    },
}

impl Gateway {
    /// Builds the gateway's backends from `config`.
    pub fn new(
        config: Config,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Arc<Self>, GatewayError> {
        Ok(Arc::new(Self {
            routes: Routes::new(&config.backends)?,
            config,
            recorder: Arc::new(Recorder::default()),
            started: std::time::Instant::now(),
            metrics,
        }))
    }

    /// Serves one OpenAI request end to end. Never fails: errors become
    /// OpenAI-shaped responses. Every response carries `x-request-id`.
    pub async fn proxy(self: Arc<Self>, endpoint: Endpoint, request: Request<Body>) -> Response {
        let request_id = identify::request_id(request.headers());
        let mut record = self.recorder.start(endpoint, request_id.clone());
        let mut response = match self.forward(endpoint, request, &mut record).await {
            Ok(Forwarded::Complete(response)) => {
                record.finish(response.status().as_u16(), None);
                response
            }
            Ok(Forwarded::Stream {
                upstream,
                first,
                strip_usage,
                deadline,
            }) => {
                record.set_status(upstream.status().as_u16());
                respond::stream(upstream, first, record, strip_usage, deadline)
            }
            Err(error) => {
                record.finish(error.status().as_u16(), Some(error.metric_kind()));
                if error.status().is_server_error() {
                    tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), %error, "request failed");
                }
                error.into_response()
            }
        };
        response
            .headers_mut()
            .insert(identify::REQUEST_ID, request_id);
        response
    }

    async fn forward(
        &self,
        endpoint: Endpoint,
        request: Request<Body>,
        record: &mut RequestRecord,
    ) -> Result<Forwarded, GatewayError> {
        let (parts, body) = request.into_parts();
        let body = read_request(body, &parts.headers, self.config.server.max_body_size).await?;
        let parsed = parse::parse(
            endpoint,
            body,
            &parts.headers,
            self.config.default_model.as_deref(),
        )?;
        record.identify(
            parsed.model.as_deref().unwrap_or(""),
            identify::user(&parsed),
        );

        let backend = self.routes.pick(parsed.model.as_deref())?;
        record.set_backend(backend.name());
        let timeout = parsed.extensions.timeout.unwrap_or(backend.config.timeout);
        let deadline = Instant::now() + timeout;
        let sent = backend.send(
            Method::POST,
            endpoint.path(),
            parsed.body,
            &record.request_id,
        );
        let upstream = tokio::time::timeout_at(deadline, sent)
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                backend: backend.name().to_owned(),
                after: timeout,
            })??;

        if !upstream.status().is_success() {
            return Err(respond::upstream_error(upstream, backend.name(), deadline, timeout).await);
        }
        if respond::is_event_stream(&upstream) {
            let (parts, mut body) = upstream.into_parts();
            let first = respond::first_chunk(&mut body, backend.name(), deadline, timeout).await?;
            return Ok(Forwarded::Stream {
                upstream: Response::from_parts(parts, body),
                first,
                strip_usage: parsed.stream && !parsed.client_wants_usage,
                deadline,
            });
        }
        respond::complete(upstream, record, backend.name(), deadline, timeout)
            .await
            .map(Forwarded::Complete)
    }
}

/// Reads the client's body up to `limit` bytes.
async fn read_request(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(GatewayError::PayloadTooLarge { limit }),
        Err(e) => Err(GatewayError::InvalidRequest {
            message: format!("could not read the request body: {e}"),
            param: None,
        }),
    }
}

/// The OpenAI-shaped 404 for paths Lexora does not serve.
pub async fn unknown_endpoint(request: Request<Body>) -> Response {
    GatewayError::UnknownEndpoint {
        path: request.uri().path().to_owned(),
    }
    .into_response()
}

/// The OpenAI-shaped 405 for a known path with the wrong method.
pub async fn wrong_method(request: Request<Body>) -> Response {
    let message = format!(
        "method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    );
    let body = crate::error::error_json(
        &message,
        "invalid_request_error",
        None,
        Some("method_not_allowed"),
    );
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
