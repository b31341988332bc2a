//! Ingress: the HTTP server (connections in `ingress/h1.rs`), its routes, and
//! graceful shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{Method, Request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::admin;
use crate::gateway::{self, Gateway};
use crate::parse::Endpoint;
use crate::respond::Stamp;
use crate::status;
use crate::telemetry::METRICS_UPKEEP;
use crate::upstream::health;

pub mod busy_poll;
mod h1;

use busy_poll::BusyPoll;

/// How long accepting pauses after an error other than a client giving up
/// (most likely out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How often idle per-user limiter state is swept.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// Every route of the gateway.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut routes = Router::new();
    for endpoint in Endpoint::ALL {
        routes = routes.route(
            endpoint.path(),
            post(
                move |State(gateway): State<Arc<Gateway>>, request: Request<Body>| {
                    gateway.proxy(endpoint, request)
                },
            ),
        );
    }
    routes
        .route("/v1/models", get(status::models))
        .route("/health", get(status::health))
        .route("/health/ready", get(status::ready))
        .route("/stats", get(status::stats))
        .route("/metrics", get(status::metrics))
        .route("/admin/reload", post(admin::reload))
        .fallback(gateway::unknown_endpoint)
        .method_not_allowed_fallback(gateway::wrong_method)
        .with_state(gateway)
}

/// What answers every request of every client connection (served by
/// [`h1::serve`], HTTP/2 through hyper). A proxied request (a `POST` to one
/// of [`Endpoint::ALL`]) goes straight to [`Gateway::proxy`]: it is nearly
/// every request, and axum's routing, extractor and service layers cost
/// about 6 % of the gateway's instructions per answer. Everything else,
/// wrong methods on those paths included, goes through [`router`].
#[derive(Clone)]
struct Ingress {
    gateway: Arc<Gateway>,
    router: Router,
    busy_poll: Option<BusyPoll>,
}

impl h1::Handler for Ingress {
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, (Response, Option<Stamp>)> {
        let proxied = match request.method() {
            &Method::POST => Endpoint::from_path(request.uri().path()),
            _ => None,
        };
        // Two dispatches, with and without busy polling, so that the
        // default path boxes one future and wraps no body.
        let Some(busy_poll) = &self.busy_poll else {
            return match proxied {
                Some(endpoint) => Box::pin(
                    Arc::clone(&self.gateway)
                        .proxy_stamped(endpoint, request)
                        .map(|(response, stamp)| (response, Some(stamp))),
                ),
                None => Box::pin(self.route(request).map(|response| (response, None))),
            };
        };
        // Every request, and every piece of every answer (a stream's
        // chunks), starts another polling window.
        busy_poll.poke();
        let busy_poll = busy_poll.clone();
        let poked = move |response: Response| response.map(|body| busy_poll.body(body));
        match proxied {
            Some(endpoint) => Box::pin(
                Arc::clone(&self.gateway)
                    .proxy_stamped(endpoint, request)
                    .map(move |(response, stamp)| (poked(response), Some(stamp))),
            ),
            None => Box::pin(
                self.route(request)
                    .map(move |response| (poked(response), None)),
            ),
        }
    }
}

impl Ingress {
    /// Answers a request that is not proxied through [`router`].
    fn route(&self, request: Request<Body>) -> impl Future<Output = Response> {
        self.router
            .clone()
            .oneshot(request)
            .map(|response| response.unwrap_or_else(|never| match never {}))
    }
}

/// Accepts connections on `listener` until `shutdown` fires, serving each
/// in a task of its own, tracked by `connections`; `closing` tells them to
/// finish the request in progress and close.
async fn accept(
    listener: TcpListener,
    service: Ingress,
    connections: &TaskTracker,
    closing: &CancellationToken,
    shutdown: &CancellationToken,
) {
    loop {
        let tcp = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // The client gave up before we got to it.
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => continue,
                // Out of file descriptors, most likely: wait for some to be
                // closed rather than spin.
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Small SSE chunks must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        // Read per connection: a reload applies to the next ones.
        let limits = {
            let runtime = service.gateway.runtime();
            let server = &runtime.config.server;
            h1::Limits {
                idle: server.idle_timeout,
                send: server.send_timeout,
            }
        };
        connections.spawn(h1::serve(tcp, service.clone(), closing.clone(), limits));
    }
}

/// Serves on every listener until `shutdown` fires, then lets in-flight
/// requests and streams finish for `server.shutdown_grace` before
/// returning.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Vec<TcpListener>,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let tasks = TaskTracker::new();
    let background = CancellationToken::new();

    let probed = Arc::clone(&gateway);
    let current = move || {
        let runtime = probed.runtime();
        (
            runtime.routes.backends().to_vec(),
            runtime.config.health.clone(),
        )
    };
    tasks.spawn(health::run(current, background.clone()));

    // Forget the limiter state of users idle long enough to be full again.
    let limits = Arc::clone(&gateway);
    let cancel = background.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(LIMITER_SWEEP) => {
                    limits.limiter.evict_idle(tokio::time::Instant::now());
                }
            }
        }
    });

    if let Some(handle) = gateway.metrics.clone() {
        let cancel = background.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(METRICS_UPKEEP);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => handle.run_upkeep(),
                }
            }
        });
    }

    if let Some(listener) = metrics_listener {
        let metrics_only = Router::new()
            .route("/metrics", get(status::metrics))
            .with_state(Arc::clone(&gateway));
        let cancel = background.clone();
        tasks.spawn(async move {
            let server = axum::serve(listener, metrics_only)
                .with_graceful_shutdown(cancel.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }

    let grace = gateway.runtime().config.server.shutdown_grace;
    let busy_poll = gateway.runtime().config.server.busy_poll.map(BusyPoll::new);
    if let Some(poller) = &busy_poll {
        for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
            tasks.spawn(poller.clone().run(background.clone()));
        }
    }
    let engines = Arc::clone(&gateway);
    let service = Ingress {
        router: router(Arc::clone(&gateway)),
        gateway,
        busy_poll,
    };
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let served =
        async {
            futures_util::future::join_all(listeners.into_iter().map(|listener| {
                accept(listener, service.clone(), &connections, &closing, &shutdown)
            }))
            .await;
            // The listeners are closed: new clients are refused while the
            // connections left finish what they started.
            tracing::info!(
                grace_seconds = grace.as_secs_f64(),
                "shutting down: draining in-flight requests"
            );
            closing.cancel();
            connections.close();
            tokio::select! {
                () = connections.wait() => {}
                () = tokio::time::sleep(grace) => {
                    tracing::warn!("grace period over; closing the remaining connections");
                }
            }
        };
    served.await;
    background.cancel();
    tasks.close();
    tasks.wait().await;
    // No engine process outlives Lexora.
    let managers: Vec<_> = engines
        .runtime()
        .routes
        .backends()
        .iter()
        .filter_map(|b| b.engine().cloned())
        .collect();
    futures_util::future::join_all(managers.iter().map(|m| m.shutdown())).await;
    Ok(())
}
