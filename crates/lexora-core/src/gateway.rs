//! The gateway: shared state and the request path, stage by stage.
//!
//! [`Gateway::proxy`] is the whole path of DESIGN.md in one screen:
//! identify → parse → route → rate limit → attempt (queue, breaker, retry,
//! failover) → respond → record. Each stage is a function of its own
//! module; this file only orders them.
//!
//! Configuration-derived state (backends, keys, limits) lives in a
//! [`Runtime`] swapped atomically on reload: a request keeps the runtime it
//! started with. State that must survive a reload — limiter buckets, queues
//! and breakers (by backend name), statistics — lives beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::time::Instant;

use crate::attempt::{self, BackendPolicy};
use crate::body::{self, Unread};
use crate::config::{ApiKey, Config, ConfigError, PolicyConfig};
use crate::engine::Scheduler;
use crate::error::GatewayError;
use crate::identify::{self, auth, auth::Keys};
use crate::limit::{self, LimitSpec, Limiter};
use crate::parse::{self, Endpoint};
use crate::probe::{self, Stage};
use crate::record::{Recorder, RequestRecord};
use crate::respond::{self, Stamp};
use crate::route::Routes;
use crate::upstream::fields::FieldRules;
use crate::upstream::Wire;

/// Reads the configuration again (file, environment, flags) for a reload.
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Everything derived from one version of the configuration.
pub struct Runtime {
    pub config: Config,
    pub routes: Routes,
    pub keys: Keys,
}

/// Everything a request needs, shared by all requests.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    /// Queues and breakers by backend name, kept across reloads.
    policies: Mutex<HashMap<String, Arc<BackendPolicy>>>,
    /// Decides which local engines run; kept across reloads.
    pub engines: Arc<Scheduler>,
    loader: ConfigLoader,
    /// Serializes reloads (SIGHUP and `/admin/reload` at once).
    reloading: tokio::sync::Mutex<()>,
    pub recorder: Arc<Recorder>,
    pub limiter: Limiter,
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
        translation: Option<respond::Translation>,
        /// The backend's `response_fields`.
        fields: Arc<FieldRules>,
    },
}

impl Gateway {
    /// Builds the gateway's backends from `config`; `loader` is called on
    /// reload.
    pub fn new(
        config: Config,
        metrics: Option<PrometheusHandle>,
        loader: ConfigLoader,
    ) -> Result<Arc<Self>, GatewayError> {
        let policies = Mutex::new(HashMap::new());
        let engines = Scheduler::new(config.engines.clone());
        let runtime = build_runtime(config, &policies, &engines, None)?;
        if runtime.keys.is_open() {
            tracing::warn!("no API keys configured: the gateway is open to every client (set auth.keys to require keys)");
        }
        Ok(Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            policies,
            engines,
            loader,
            reloading: tokio::sync::Mutex::new(()),
            recorder: Arc::new(Recorder::default()),
            limiter: Limiter::new(),
            started: std::time::Instant::now(),
            metrics,
        }))
    }

    /// The configuration-derived state now in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Re-reads the configuration and swaps it in. An invalid configuration
    /// is refused and the running one stays; requests in flight finish on
    /// the configuration they started with.
    pub async fn reload(&self) -> Result<(), GatewayError> {
        let _one_at_a_time = self.reloading.lock().await;
        // Reading files and running a Lua script block: keep them off the
        // threads that serve requests.
        let loader = Arc::clone(&self.loader);
        let config = tokio::task::spawn_blocking(move || loader())
            .await
            .map_err(|e| GatewayError::Internal {
                message: format!("the config loader failed: {e}"),
            })?
            .map_err(|e| GatewayError::InvalidConfig {
                message: format!("configuration not reloaded: {e}"),
            })?;
        let old = self.runtime();
        if config.server.host != old.config.server.host
            || config.server.port != old.config.server.port
            || config.server.listen != old.config.server.listen
            || config.server.busy_poll != old.config.server.busy_poll
        {
            tracing::warn!("server.host, server.port, server.listen_v4/v6 and server.busy_poll_us changes take effect at the next restart");
        }
        let runtime = build_runtime(config, &self.policies, &self.engines, Some(&old))?;
        if runtime.keys.is_open() {
            tracing::warn!("no API keys configured: the gateway is open to every client");
        }
        self.runtime.store(Arc::new(runtime));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Serves one OpenAI request end to end. Never fails: errors become
    /// OpenAI-shaped responses. Every response carries `x-request-id`.
    pub async fn proxy(self: Arc<Self>, endpoint: Endpoint, request: Request<Body>) -> Response {
        let (mut response, stamp) = self.proxy_stamped(endpoint, request).await;
        stamp.write_headers(response.headers_mut());
        response
    }

    /// [`proxy`](Self::proxy), with the gateway's own headers (request
    /// id, rate limits, queue wait) handed back beside the response
    /// instead of in it, for the HTTP/1.1 server to write straight into
    /// the answer's head.
    pub async fn proxy_stamped(
        self: Arc<Self>,
        endpoint: Endpoint,
        request: Request<Body>,
    ) -> (Response, Stamp) {
        probe::mark(Stage::Dispatched);
        let runtime = self.runtime();
        let request_id = identify::request_id(request.headers());
        let mut record = self.recorder.start(endpoint, request_id.clone());
        let mut stamp = Stamp::new(request_id);
        let response = match self
            .forward(&runtime, endpoint, request, &mut record, &mut stamp)
            .await
        {
            Ok(Forwarded::Complete(response)) => {
                record.finish(response.status().as_u16(), None);
                response
            }
            Ok(Forwarded::Stream {
                upstream,
                first,
                strip_usage,
                deadline,
                translation,
                fields,
            }) => {
                record.set_status(upstream.status().as_u16());
                respond::stream(
                    upstream,
                    first,
                    record,
                    strip_usage,
                    deadline,
                    translation,
                    fields,
                    endpoint.wire(),
                    stamp.request_id.to_str().unwrap_or("lexora"),
                )
            }
            Err(error) => {
                record.finish(error.status().as_u16(), Some(error.metric_kind()));
                if error.status().is_server_error() {
                    tracing::warn!(request_id = stamp.request_id.to_str().unwrap_or("-"), %error, "request failed");
                }
                let mut response = error.into_response();
                if endpoint.wire() == Wire::Anthropic {
                    anthropic_error(&mut response).await;
                }
                response
            }
        };
        probe::mark(Stage::Returned);
        (response, stamp)
    }

    async fn forward(
        &self,
        runtime: &Runtime,
        endpoint: Endpoint,
        request: Request<Body>,
        record: &mut RequestRecord,
        stamp: &mut Stamp,
    ) -> Result<Forwarded, GatewayError> {
        let (parts, body) = request.into_parts();
        let key = runtime.keys.authenticate(&parts.headers)?;
        let config = &runtime.config;
        let body = read_request(body, &parts.headers, config.server.max_body_size).await?;
        probe::mark(Stage::Read);
        let parsed = parse::parse(
            endpoint,
            body,
            &parts.headers,
            config.default_model.as_deref(),
        )?;
        probe::mark(Stage::Parsed);
        let user = identify::user(&parsed, key.as_deref());
        record.identify(parsed.model.as_deref().unwrap_or(""), user);
        if let Some(key) = &key {
            auth::check_model(key, parsed.model.as_deref())?;
        }
        let priority = auth::priority(parsed.extensions.priority, key.as_deref());
        record.set_priority(priority);

        let fallbacks = parsed
            .model
            .as_deref()
            .and_then(|model| config.policies.fallbacks.get(model))
            .map_or(&[][..], Vec::as_slice);
        let mut candidates = runtime
            .routes
            .candidates(parsed.model.as_deref(), fallbacks)?;
        // Backends that do not serve this API are skipped, as if they did
        // not have the model; when none does, the client learns why.
        candidates.retain(|(backend, _)| backend.serves_api(endpoint));
        record.routed();
        probe::mark(Stage::Routed);
        if candidates.is_empty() {
            let why = if endpoint == Endpoint::CountTokens {
                "token counting needs a backend that speaks the Messages API (anthropic, llamacpp)"
            } else {
                "an Anthropic backend has no completions or embeddings, and `backends.NAME.endpoints` limits any backend's APIs"
            };
            return Err(GatewayError::InvalidRequest {
                message: format!(
                    "no backend of model `{}` serves {}: {why}",
                    parsed.model.as_deref().unwrap_or_default(),
                    endpoint.path()
                ),
                param: Some("model"),
            });
        }

        let spec = limit_spec(&config.policies, user, key.as_deref());
        // Counting tokens generates nothing; it is not charged.
        if !spec.is_unlimited() && endpoint != Endpoint::CountTokens {
            // A huge max_tokens must not put the user in debt for years: no
            // estimate exceeds what the bucket can hold.
            let estimate = limit::estimate_tokens(&parsed.body, parsed.max_tokens)
                .min(spec.tokens_per_minute.unwrap_or(u64::MAX));
            match self.limiter.reserve(user, &spec, estimate, Instant::now()) {
                Ok(reservation) => {
                    stamp.rate = Some(reservation.info().clone());
                    record.hold_reservation(reservation);
                }
                Err(rejection) => {
                    self.recorder.stats.note_rate_limited();
                    counter!("lexora_rate_limited_total", "dimension" => rejection.dimension)
                        .increment(1);
                    return Err(GatewayError::RateLimited {
                        user: user.to_owned(),
                        dimension: rejection.dimension,
                        retry_after: rejection.retry_after,
                        info: Box::new(rejection.info),
                    });
                }
            }
        }

        probe::mark(Stage::Admitted);
        let timeout = parsed
            .extensions
            .timeout
            .or(candidates
                .first()
                .map(|(backend, _)| backend.config.timeout))
            .unwrap_or(Duration::from_secs(120));
        let now = Instant::now();
        let deadline = now + timeout;
        let queue_timeout = parsed
            .extensions
            .timeout
            .unwrap_or(config.policies.queue.default_timeout);
        let plan = attempt::Plan {
            request: &parsed,
            priority,
            deadline,
            queue_deadline: deadline.min(now + queue_timeout),
            timeout,
        };
        let answer = attempt::run(&candidates, &config.policies.retry, plan, record).await?;
        answer.backend.record_queue_wait(answer.queue_wait);
        stamp.queue_wait = Some(answer.queue_wait).filter(|w| !w.is_zero());
        if let Some(wait) = stamp.queue_wait {
            self.recorder.stats.note_queue_wait(wait);
        }
        let translation = respond::Translation::between(
            answer.wire,
            endpoint.wire(),
            parsed.model.as_deref().unwrap_or_default(),
            parsed.client_wants_usage,
        );
        if let Some(first) = answer.first {
            return Ok(Forwarded::Stream {
                upstream: answer.upstream,
                first,
                strip_usage: parsed.stream && !parsed.client_wants_usage,
                deadline,
                translation,
                fields: Arc::clone(&answer.backend.config.response_fields),
            });
        }
        let backend = answer.backend.name();
        respond::complete(
            answer.upstream,
            record,
            backend,
            deadline,
            timeout,
            translation.as_ref(),
            &answer.backend.config.response_fields,
        )
        .await
        .map(Forwarded::Complete)
    }
}

/// Rewrites an OpenAI-shaped error response into Anthropic's error shape
/// (for clients of `/v1/messages`), keeping status and headers.
async fn anthropic_error(response: &mut Response) {
    let body = std::mem::take(response.body_mut());
    // The gateway's own error body: short, in memory.
    let bytes = body::read_whole(body, usize::MAX).await.unwrap_or_default();
    let converted = crate::translate::openai_error_to_anthropic(response.status().as_u16(), &bytes);
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(converted);
}

/// Builds the runtime of `config`, reusing queues and breakers of backends
/// that keep their name and the health of those that keep their URL.
fn build_runtime(
    config: Config,
    policies: &Mutex<HashMap<String, Arc<BackendPolicy>>>,
    engines: &Arc<Scheduler>,
    previous: Option<&Runtime>,
) -> Result<Runtime, GatewayError> {
    let mut policies = policies.lock().unwrap_or_else(|e| e.into_inner());
    let settings = &config.policies;
    // Build every backend first and touch the live policies only once all
    // succeeded: a refused reload must change nothing.
    let mut chosen = Vec::with_capacity(config.backends.len());
    let routes = Routes::new(&config.backends, |backend| {
        let policy = policies.get(&backend.name).cloned().unwrap_or_else(|| {
            BackendPolicy::new(
                backend.max_concurrency,
                &settings.queue,
                &settings.breaker,
                Arc::clone(engines),
            )
        });
        chosen.push((
            backend.name.clone(),
            backend.max_concurrency,
            Arc::clone(&policy),
        ));
        policy
    })
    .map_err(|e| GatewayError::InvalidConfig {
        message: format!("configuration not applied: {e}"),
    })?;
    for (name, max_concurrency, policy) in chosen {
        policy.reconfigure(max_concurrency, &settings.queue, &settings.breaker);
        policies.insert(name, policy);
    }
    engines.reconfigure(config.engines.clone());
    // Backends that are gone take their queue and breaker with them.
    policies.retain(|name, _| config.backends.iter().any(|b| &b.name == name));
    if let Some(previous) = previous {
        for backend in routes.backends() {
            let same =
                previous.routes.backends().iter().find(|old| {
                    old.name() == backend.name() && old.config.url == backend.config.url
                });
            if let Some(old) = same {
                backend.set_health((*old.health()).clone());
            }
        }
    }
    Ok(Runtime {
        keys: Keys::new(&config.policies.auth),
        routes,
        config,
    })
}

/// A user's limits: the defaults, then `rate_limits.users`, then the key's.
fn limit_spec(policies: &PolicyConfig, user: &str, key: Option<&ApiKey>) -> LimitSpec {
    let limits = &policies.limits;
    let mut spec = LimitSpec {
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        rate: limits.rate,
    };
    if let Some((requests, tokens)) = limits.users.get(user) {
        spec.requests_per_minute = requests.or(spec.requests_per_minute);
        spec.tokens_per_minute = tokens.or(spec.tokens_per_minute);
    }
    if let Some(key) = key {
        spec.requests_per_minute = key.requests_per_minute.or(spec.requests_per_minute);
        spec.tokens_per_minute = key.tokens_per_minute.or(spec.tokens_per_minute);
    }
    spec
}

/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

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
    // A client that trickles its body (slowloris) must not hold a task and
    // a connection forever.
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, body::read_whole(body, limit));
    let Ok(read) = read.await else {
        return Err(GatewayError::BodyTimeout {
            after: BODY_READ_TIMEOUT,
        });
    };
    match read {
        Ok(bytes) => Ok(bytes),
        Err(Unread::TooLong) => Err(GatewayError::PayloadTooLarge { limit }),
        Err(Unread::Failed(e)) => Err(GatewayError::InvalidRequest {
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
