//! Upstream: one [`Backend`] per configured engine, and how a request gets
//! to it.
//!
//! A backend is reached over pooled keep-alive HTTP (with `TCP_NODELAY`,
//! the configured connect timeout, TLS for hosted providers) or, for
//! `type: mock`, by calling the built-in engine's router in-process. Both
//! give back an `http::Response` whose body streams as the engine writes it.
//! Transport failures become [`GatewayError`]s here, at the edge.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use crate::attempt::BackendPolicy;
use crate::config::{BackendConfig, BackendKind};
use crate::error::GatewayError;
use crate::mock::MockEngine;
use crate::parse::Endpoint;

pub mod adapter;
pub mod health;

pub use adapter::{Adapter, Wire};
pub use health::BackendHealth;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

enum Transport {
    Http {
        client: Box<HttpClient>,
        base: String,
    },
    InProcess(axum::Router),
}

/// A configured engine or provider and its observed health.
pub struct Backend {
    pub config: BackendConfig,
    /// Queue and breaker; shared with the backend of the same name in the
    /// next config after a reload.
    pub policy: Arc<BackendPolicy>,
    transport: Transport,
    adapter: Adapter,
    /// Credentials and configured extra headers, marked sensitive so they
    /// never print.
    headers: Vec<(http::HeaderName, HeaderValue)>,
    health: ArcSwap<BackendHealth>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Builds the backend's transport (HTTP pool or in-process engine).
    pub fn new(config: BackendConfig, policy: Arc<BackendPolicy>) -> Result<Self, GatewayError> {
        let transport = match (&config.kind, &config.url) {
            (BackendKind::Mock, _) => {
                Transport::InProcess(MockEngine::new(config.mock.clone()).router())
            }
            (_, Some(url)) => Transport::Http {
                client: Box::new(http_client(config.connect_timeout)?),
                base: url.as_str().trim_end_matches('/').to_owned(),
            },
            (_, None) => {
                return Err(GatewayError::Internal {
                    message: format!("backend `{}` has no URL", config.name),
                })
            }
        };
        let adapter = Adapter::new(&config);
        let mut headers = adapter.auth_headers(&config)?;
        headers.extend(config.headers.iter().cloned());
        let health = ArcSwap::from_pointee(BackendHealth::unknown(&config));
        Ok(Self {
            config,
            policy,
            transport,
            adapter,
            headers,
            health,
        })
    }

    /// The backend's name from config.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The latest probe result.
    pub fn health(&self) -> Arc<BackendHealth> {
        self.health.load_full()
    }

    pub(crate) fn set_health(&self, health: BackendHealth) {
        self.health.store(Arc::new(health));
    }

    /// Whether this backend should get a request for `model`.
    pub fn serves(&self, model: &str) -> bool {
        if self.config.models.iter().any(|m| m == model) {
            return true;
        }
        let health = self.health.load();
        if health.models.iter().any(|m| m == model) {
            return true;
        }
        // A backend configured without a model list serves whatever its
        // engine serves; until a probe has listed that, let the engine decide.
        self.config.models.is_empty() && health.models.is_empty()
    }

    /// The backend's dialect.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// Sends a client request in this backend's dialect: `model` is the
    /// public model to ask for (mapped to the provider's id here);
    /// `renamed` says it differs from the body's. Returns the answer head
    /// and the API its body speaks.
    pub async fn forward(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        model: Option<&str>,
        renamed: bool,
        request_id: &HeaderValue,
    ) -> Result<(Response<Body>, Wire), GatewayError> {
        let mapped = model
            .and_then(|m| self.config.upstream_models.get(m))
            .map(String::as_str);
        let outbound = self.adapter.prepare(
            endpoint,
            body,
            mapped.or(model),
            renamed || mapped.is_some(),
        )?;
        let response = self
            .send(Method::POST, &outbound.path, outbound.body, request_id)
            .await?;
        Ok((response, outbound.wire))
    }

    /// Sends one request and waits for the response head. The body of the
    /// returned response streams from the engine.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let uri = match &self.transport {
            Transport::Http { base, .. } => format!("{base}{path}"),
            Transport::InProcess(_) => path.to_owned(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(crate::identify::REQUEST_ID, request_id)
            .body(Full::new(body))
            .map_err(|e| GatewayError::Internal {
                message: format!("building the upstream request: {e}"),
            })?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        match &self.transport {
            Transport::Http { client, .. } => client
                .request(request)
                .await
                .map(|response| response.map(Body::new))
                .map_err(|e| self.classify(&e)),
            Transport::InProcess(router) => match router.clone().oneshot(request).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            },
        }
    }

    /// Turns a client error into what the gateway tells its client.
    fn classify(&self, error: &hyper_util::client::legacy::Error) -> GatewayError {
        let backend = self.config.name.clone();
        let reason = root_cause(error);
        let timed_out = chain_has_io_kind(error, std::io::ErrorKind::TimedOut);
        if error.is_connect() {
            // Nothing was sent, so a connect timeout is as safe to retry
            // elsewhere as a refused connection.
            let reason = if timed_out {
                format!(
                    "connecting timed out after {}s",
                    self.config.connect_timeout.as_secs_f64()
                )
            } else {
                reason
            };
            return GatewayError::UpstreamConnect { backend, reason };
        }
        GatewayError::UpstreamReset { backend, reason }
    }
}

fn http_client(connect_timeout: Duration) -> Result<HttpClient, GatewayError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https))
}

/// The innermost error message, which names the actual cause
/// ("Connection refused (os error 111)") rather than the wrapper.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn chain_has_io_kind(error: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn root_cause_reaches_the_innermost_error() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "refused");
        let wrapped = Outer(io);
        assert!(wrapped.source().is_some());
        assert_eq!(root_cause(&wrapped), "refused");
        assert!(chain_has_io_kind(&wrapped, std::io::ErrorKind::TimedOut));
        assert!(!chain_has_io_kind(
            &wrapped,
            std::io::ErrorKind::ConnectionReset
        ));
    }
}
