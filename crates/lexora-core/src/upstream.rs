//! Upstream: one [`Backend`] per configured engine, and how a request gets
//! to it.
//!
//! A backend is reached over pooled keep-alive HTTP (with `TCP_NODELAY`,
//! the configured connect timeout, TLS for hosted providers) or, for
//! `type: mock`, by calling the built-in engine's router in-process, or,
//! for `type: engine`, over HTTP to the engine process an
//! [`EngineManager`] runs for the request (see [`crate::engine`]). All
//! give back an `http::Response` whose body streams as the engine writes it.
//! Transport failures become [`GatewayError`]s here, at the edge.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::uri::Scheme;
use http::{header, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics::{histogram, Histogram};
use tower::ServiceExt;

use crate::attempt::BackendPolicy;
use crate::config::{BackendConfig, BackendKind};
use crate::engine::{EngineError, EngineManager, Lease};
use crate::error::GatewayError;
use crate::h1;
use crate::mock::MockEngine;
use crate::parse::{ParsedRequest, Priority};
use crate::probe::{self, Stage};

pub mod adapter;
pub mod fields;
pub mod health;
mod origin;
pub mod pool;

use origin::Origin;

pub use adapter::{Adapter, Wire};
pub use health::BackendHealth;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

enum Transport {
    /// Plain HTTP with idle connections kept: Lexora's own pool of one
    /// origin (see [`pool`]).
    Pooled {
        pool: pool::Pool,
        origin: Origin,
    },
    /// HTTPS (hosted providers), or plain HTTP without idle connections,
    /// through hyper-util's general client.
    Http {
        client: Box<HttpClient>,
        base: String,
        /// `base` parsed once; `None` if it does not split into parts, and
        /// then every request parses `base` and its path together.
        origin: Option<Origin>,
    },
    InProcess(axum::Router),
    /// Local engine processes; each request goes to the base URL of the
    /// [`Lease`] it got.
    Engine {
        client: Box<HttpClient>,
        manager: Arc<EngineManager>,
    },
}

/// The content type of every request to a backend.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// What Lexora takes back: an answer, or a stream of events.
const ACCEPT_ANSWERS: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");

/// `max_tokens` assumed for variant selection when a request sets none.
const DEFAULT_ENGINE_MAX_TOKENS: u64 = 256;

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
    /// `lexora_queue_wait_seconds` for this backend, registered by the
    /// first request rather than looked up by every one.
    queue_wait: OnceLock<Histogram>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// The headers every request to `config`'s backend carries
    /// (credentials, configured extras): what can refuse a backend, checked
    /// for all before any is built (see [`crate::route::Routes::new`]).
    pub fn headers(
        config: &BackendConfig,
    ) -> Result<Vec<(http::HeaderName, HeaderValue)>, GatewayError> {
        let mut headers = Adapter::new(config).auth_headers(config)?;
        headers.extend(config.headers.iter().cloned());
        Ok(headers)
    }

    /// Builds the backend's transport (HTTP pool or in-process engine),
    /// with the `headers` [`Self::headers`] gave. An engine backend's
    /// manager joins the live scheduler here.
    pub fn new(
        config: BackendConfig,
        policy: Arc<BackendPolicy>,
        headers: Vec<(http::HeaderName, HeaderValue)>,
    ) -> Result<Self, GatewayError> {
        let transport = match (&config.kind, &config.url) {
            (BackendKind::Mock, _) => {
                Transport::InProcess(MockEngine::new(config.mock.clone()).router())
            }
            (BackendKind::Engine { model, settings }, _) => Transport::Engine {
                client: Box::new(http_client(config.connect_timeout, false)?),
                manager: policy.engine_manager(model, settings),
            },
            (_, Some(url)) => {
                let base = url.as_str().trim_end_matches('/');
                let keep_idle = config.provider != "llamacpp";
                match Origin::parse(base) {
                    Some(origin) if keep_idle && origin.scheme == Scheme::HTTP => {
                        Transport::Pooled {
                            pool: pool::Pool::new(
                                origin.authority.host(),
                                origin.authority.port_u16().unwrap_or(80),
                                config.connect_timeout,
                            ),
                            origin,
                        }
                    }
                    origin => Transport::Http {
                        client: Box::new(http_client(config.connect_timeout, keep_idle)?),
                        base: base.to_owned(),
                        origin,
                    },
                }
            }
            (_, None) => {
                return Err(GatewayError::Internal {
                    message: format!("backend `{}` has no URL", config.name),
                })
            }
        };
        let adapter = Adapter::new(&config);
        let health = ArcSwap::from_pointee(BackendHealth::unknown(&config));
        Ok(Self {
            config,
            policy,
            transport,
            adapter,
            headers: last_of_each(headers),
            health,
            queue_wait: OnceLock::new(),
        })
    }

    /// Records how long a request waited for a slot at this backend.
    pub fn record_queue_wait(&self, wait: Duration) {
        self.queue_wait
            .get_or_init(
                || histogram!("lexora_queue_wait_seconds", "backend" => self.name().to_owned()),
            )
            .record(wait.as_secs_f64());
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

    /// Whether this backend serves `endpoint`: its type can, and
    /// `endpoints` in config (if any) lists it.
    pub fn serves_api(&self, endpoint: crate::parse::Endpoint) -> bool {
        self.adapter.serves(endpoint)
            && self
                .config
                .endpoints
                .as_ref()
                .is_none_or(|list| list.contains(&endpoint))
    }

    /// The engine manager of a `type: engine` backend.
    pub fn engine(&self) -> Option<&Arc<EngineManager>> {
        match &self.transport {
            Transport::Engine { manager, .. } => Some(manager),
            _ => None,
        }
    }

    /// Sends a client request in this backend's dialect: `model` is the
    /// public model to ask for (mapped to the provider's id here);
    /// `renamed` says it differs from the body's. Engine backends pick a
    /// variant from the request's size and wait their turn by `priority`.
    /// Returns the answer head, the API its body speaks and, for engine
    /// backends, the lease that must be held until the answer is over.
    pub async fn forward(
        &self,
        request: &ParsedRequest,
        model: Option<&str>,
        renamed: bool,
        priority: Priority,
        request_id: &HeaderValue,
    ) -> Result<(Response<Body>, Wire, Option<Lease>), GatewayError> {
        let mapped = model
            .and_then(|m| self.config.upstream_models.get(m))
            .map(String::as_str);
        let outbound = self.adapter.prepare(
            request.endpoint,
            &request.body,
            mapped.or(model),
            renamed || mapped.is_some(),
        )?;
        let body = if self.config.request_fields.is_empty() {
            outbound.body
        } else {
            self.config
                .request_fields
                .apply(&outbound.body)
                .map_err(|message| GatewayError::InvalidRequest {
                    message: format!("backend `{}` (request_fields): {message}", self.name()),
                    param: None,
                })?
        };
        let lease = match self.engine() {
            Some(manager) => Some(
                self.lease_engine(manager, &request.body, request.max_tokens, priority)
                    .await?,
            ),
            None => None,
        };
        let base = lease.as_ref().map(|l| l.base_url.as_str());
        let response = self
            .send_to(base, Method::POST, &outbound.path, body, request_id)
            .await?;
        Ok((response, outbound.wire, lease))
    }

    /// Leases an engine whose context fits the prompt plus `max_tokens`
    /// (starting or swapping engines when the scheduler lets it).
    async fn lease_engine(
        &self,
        manager: &Arc<EngineManager>,
        body: &Bytes,
        max_tokens: Option<u64>,
        priority: Priority,
    ) -> Result<Lease, GatewayError> {
        let prompt = manager.count_request(body).await;
        let answer =
            u32::try_from(max_tokens.unwrap_or(DEFAULT_ENGINE_MAX_TOKENS)).unwrap_or(u32::MAX);
        let needed = prompt.saturating_add(answer);
        manager
            .lease(needed, priority)
            .await
            .map_err(|e| self.engine_error(manager, &e))
    }

    fn engine_error(&self, manager: &EngineManager, error: &EngineError) -> GatewayError {
        if error.is_client_error() {
            return GatewayError::InvalidRequest {
                message: error.to_string(),
                param: Some("messages"),
            };
        }
        tracing::warn!(backend = self.name(), %error, "engine unavailable");
        GatewayError::EngineUnavailable {
            message: format!("backend `{}`: {error}", self.name()),
            retry_after: manager.retry_after(),
        }
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
        self.send_to(None, method, path, body, request_id).await
    }

    /// [`Self::send`] to an engine's `base` URL (engine backends have none
    /// of their own; it comes from each request's lease).
    async fn send_to(
        &self,
        base: Option<&str>,
        method: Method,
        path: &str,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let (client, uri, host) = match (&self.transport, base) {
            // Pooled backends have a URL of their own, never a lease's.
            (Transport::Pooled { pool, origin }, _) => {
                return self
                    .send_pooled(pool, origin, &method, path, body, request_id)
                    .await;
            }
            (Transport::InProcess(router), _) => {
                let uri = Uri::try_from(path).map_err(http::Error::from);
                let request = self.request(method, uri, None, body, request_id)?;
                return match router.clone().oneshot(request.map(Full::new)).await {
                    Ok(response) => Ok(response),
                    Err(never) => match never {},
                };
            }
            (Transport::Http { client, .. } | Transport::Engine { client, .. }, Some(base)) => (
                client,
                Uri::try_from(format!("{base}{path}")).map_err(http::Error::from),
                None,
            ),
            (
                Transport::Http {
                    client,
                    origin: Some(origin),
                    ..
                },
                None,
            ) => (client, origin.uri(path), origin.host.clone()),
            (Transport::Http { client, base, .. }, None) => (
                client,
                Uri::try_from(format!("{base}{path}")).map_err(http::Error::from),
                None,
            ),
            (Transport::Engine { .. }, None) => {
                return Err(GatewayError::Internal {
                    message: format!("engine backend `{}` has no running engine", self.name()),
                })
            }
        };
        let request = self.request(method, uri, host, body, request_id)?;
        client
            .request(request.map(Full::new))
            .await
            .map(|response| response.map(Body::new))
            .map_err(|e| self.classify(&e))
    }

    /// A request for hyper's client or the in-process engine, with
    /// Lexora's own headers and then the configured ones.
    fn request(
        &self,
        method: Method,
        uri: Result<Uri, http::Error>,
        host: Option<HeaderValue>,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Request<Bytes>, GatewayError> {
        let uri = uri.map_err(|e| GatewayError::Internal {
            message: format!("building the upstream request: {e}"),
        })?;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        // Sized once for all of them rather than grown header by header.
        headers.reserve(4 + self.headers.len());
        headers.insert(header::CONTENT_TYPE, JSON);
        headers.insert(header::ACCEPT, ACCEPT_ANSWERS);
        headers.insert(crate::identify::REQUEST_ID, request_id.clone());
        if let Some(host) = host {
            // Before the configured headers, which may set their own.
            headers.insert(header::HOST, host);
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    /// Sends a request on the backend's own pool. Its head is written
    /// straight from the origin, the request id and the configured
    /// headers: no request, URI or header map is built for it, which cost
    /// about 2,000 instructions per request.
    async fn send_pooled(
        &self,
        pool: &pool::Pool,
        origin: &Origin,
        method: &Method,
        path: &str,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        probe::mark(Stage::Sending);
        if !h1::is_target(&origin.prefix) || !h1::is_target(path) {
            return Err(GatewayError::Internal {
                message: format!("building the upstream request: invalid path {path:?}"),
            });
        }
        let json = JSON;
        let accept = ACCEPT_ANSWERS;
        let own = [
            (&header::HOST, origin.host.as_ref()),
            (&header::CONTENT_TYPE, Some(&json)),
            (&header::ACCEPT, Some(&accept)),
            (&crate::identify::REQUEST_ID, Some(request_id)),
        ];
        // The configured headers replace Lexora's own of the same names.
        let own = own
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .filter(|(name, _)| !self.headers.iter().any(|(set, _)| set == *name));
        let configured = self.headers.iter().map(|(name, value)| (name, value));
        let mut head = Vec::with_capacity(256);
        h1::encode_request(
            method,
            &[&origin.prefix, path],
            own.chain(configured),
            body.len(),
            &mut head,
        );
        pool.send(&head, body)
            .await
            .map(|response| response.map(Body::new))
            .map_err(|e| self.transport_error(e.connect, e.timed_out, e.reason))
    }

    /// Turns a client error into what the gateway tells its client.
    fn classify(&self, error: &hyper_util::client::legacy::Error) -> GatewayError {
        self.transport_error(
            error.is_connect(),
            chain_has_io_kind(error, std::io::ErrorKind::TimedOut),
            root_cause(error),
        )
    }

    /// What the client is told when the request got no answer head:
    /// `connect` if no connection could be opened (nothing was sent).
    fn transport_error(&self, connect: bool, timed_out: bool, reason: String) -> GatewayError {
        let backend = self.config.name.clone();
        if connect {
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

/// `headers` with one header of each name, the last given (a configured
/// header over the credentials' of the same name): requests written
/// straight into a head ([`Backend::send_pooled`]) must say the same as
/// those whose header map took the headers one by one, each replacing.
fn last_of_each(
    headers: Vec<(http::HeaderName, HeaderValue)>,
) -> Vec<(http::HeaderName, HeaderValue)> {
    let mut kept: Vec<(http::HeaderName, HeaderValue)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        kept.retain(|(known, _)| *known != name);
        kept.push((name, value));
    }
    kept
}

/// `keep_idle`: pool idle connections for reuse. Not for llama-server: its
/// HTTP server gives each connection a thread of a small pool until the
/// connection closes or idles for 5 s, so idle pooled connections starve
/// the new ones of a burst (seen: requests stalled in steps of 5 s).
/// Closing after each answer costs a loopback handshake per request.
fn http_client(connect_timeout: Duration, keep_idle: bool) -> Result<HttpClient, GatewayError> {
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
        .pool_max_idle_per_host(if keep_idle { 1024 } else { 0 })
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
