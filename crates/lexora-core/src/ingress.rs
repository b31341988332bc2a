//! Ingress: the HTTP server, its routes, and graceful shutdown.

use std::future::IntoFuture;
use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use http::Request;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::gateway::{self, Gateway};
use crate::parse::Endpoint;
use crate::status;
use crate::telemetry::METRICS_UPKEEP;
use crate::upstream::health;

/// How often idle per-user limiter state is swept.
const LIMITER_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Every route of the gateway.
pub fn router(gateway: Arc<Gateway>) -> Router {
    fn proxy(
        endpoint: Endpoint,
    ) -> impl Fn(
        State<Arc<Gateway>>,
        Request<Body>,
    ) -> futures_util::future::BoxFuture<'static, axum::response::Response>
           + Clone {
        move |State(gateway): State<Arc<Gateway>>, request: Request<Body>| {
            Box::pin(gateway.proxy(endpoint, request))
        }
    }
    Router::new()
        .route(
            "/v1/chat/completions",
            post(proxy(Endpoint::ChatCompletions)),
        )
        .route("/v1/completions", post(proxy(Endpoint::Completions)))
        .route("/v1/embeddings", post(proxy(Endpoint::Embeddings)))
        .route("/v1/messages", post(proxy(Endpoint::Messages)))
        .route(
            "/v1/messages/count_tokens",
            post(proxy(Endpoint::CountTokens)),
        )
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
    let engines = Arc::clone(&gateway);
    let routes = router(gateway);
    let servers = listeners.into_iter().map(|listener| {
        let listener = listener.tap_io(|tcp| {
            // Small SSE chunks must leave at once, not wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, routes.clone())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future()
    });
    let server = futures_util::future::try_join_all(servers);
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result.map(drop),
        () = async {
            shutdown.cancelled().await;
            tracing::info!(grace_seconds = grace.as_secs_f64(), "shutting down: draining in-flight requests");
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; closing the remaining connections");
            Ok(())
        }
    };
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
    result
}
