//! What the gateway says about itself: `/health`, `/health/ready`,
//! `/stats`, `/metrics` and the model list `/v1/models`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use metrics::gauge;
use serde::Serialize;
use serde_json::{json, Value};

use crate::gateway::Gateway;
use crate::upstream::Backend;

/// The crate version, reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct BackendView {
    #[serde(rename = "type")]
    kind: &'static str,
    url: Option<String>,
    status: &'static str,
    models: Vec<String>,
    latency_ms: Option<f64>,
    error: Option<String>,
    checked_at: Option<u64>,
    circuit_breaker: &'static str,
    in_flight: usize,
    waiting: usize,
    max_concurrency: Option<usize>,
    /// For `type: engine` backends: the engine process.
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<EngineView>,
}

#[derive(Serialize)]
struct EngineView {
    state: &'static str,
    variant: Option<String>,
    pid: Option<u32>,
    uptime_seconds: Option<f64>,
    leases: usize,
    swaps: u64,
    swap_seconds: f64,
    restarts: u64,
    starts: u64,
    evictions: u64,
    waiting: usize,
    last_error: Option<String>,
}

fn engine_view(backend: &Backend) -> Option<EngineView> {
    let status = backend.engine()?.status();
    Some(EngineView {
        state: status.state.as_str(),
        variant: status.variant,
        pid: status.pid,
        uptime_seconds: status.uptime.map(|d| d.as_secs_f64()),
        leases: status.leases,
        swaps: status.swaps,
        swap_seconds: status.swap_time.as_secs_f64(),
        restarts: status.restarts,
        starts: status.starts,
        evictions: status.evictions,
        waiting: status.waiting,
        last_error: status.last_error,
    })
}

fn backend_view(backend: &Backend) -> BackendView {
    let health = backend.health();
    let mut models = backend.config.models.clone();
    for model in &health.models {
        if !models.contains(model) {
            models.push(model.clone());
        }
    }
    BackendView {
        kind: backend.config.kind.label(),
        // Never show credentials embedded in a URL.
        url: backend
            .config
            .url
            .as_ref()
            .map(|url| crate::config::secret::without_userinfo(url.as_str()).into_owned()),
        status: health.status,
        models,
        latency_ms: health.latency_ms,
        error: health.error.clone(),
        checked_at: health.checked_at,
        circuit_breaker: backend.policy.breaker.state_name(),
        in_flight: backend.policy.queue.in_flight(),
        waiting: backend.policy.queue.waiting(),
        max_concurrency: backend.config.max_concurrency,
        engine: engine_view(backend),
    }
}

fn uptime_text(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    if days > 0 {
        format!("{days}d {hours}h {minutes}m")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m {}s", seconds % 60)
    }
}

/// `GET /health`: always 200 while the process serves; the body says how
/// well (`healthy`, `degraded`, `unhealthy`) and why.
pub async fn health(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    let runtime = gateway.runtime();
    let backends = runtime.routes.backends();
    let reachable = backends.iter().filter(|b| b.health().reachable()).count();
    let status = match reachable {
        n if n == backends.len() => "healthy",
        0 => "unhealthy",
        _ => "degraded",
    };
    let uptime = gateway.started.elapsed().as_secs();
    let views: BTreeMap<&str, BackendView> = backends
        .iter()
        .map(|b| (b.name(), backend_view(b)))
        .collect();
    // Seed 001's `vllm_status` speaks of the main engine: the backend named
    // vllm, else the first one.
    let main = backends
        .iter()
        .find(|b| b.name() == "vllm")
        .or(backends.first());
    let model = runtime
        .config
        .default_model
        .clone()
        .or_else(|| runtime.routes.models().into_iter().next().map(|(m, _)| m));
    Json(json!({
        "status": status,
        "service": "lexora",
        "version": VERSION,
        "model": model,
        "uptime": uptime_text(uptime),
        "uptime_seconds": uptime,
        "vllm_status": if main.is_some_and(|b| b.health().reachable()) { "connected" } else { "disconnected" },
        "backends": views,
    }))
}

/// `GET /health/ready`: 200 when at least one backend is reachable.
pub async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let runtime = gateway.runtime();
    let reachable: Vec<&str> = runtime
        .routes
        .backends()
        .iter()
        .filter(|b| b.health().reachable())
        .map(|b| b.name())
        .collect();
    let status = if reachable.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"ready": !reachable.is_empty(), "reachable_backends": reachable})),
    )
        .into_response()
}

/// `GET /stats`: seed 001's fields plus per-model and per-user breakdowns.
pub async fn stats(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    let view = gateway.recorder.stats.view();
    let mut value = serde_json::to_value(view).unwrap_or_else(|_| json!({}));
    let runtime = gateway.runtime();
    let backends: BTreeMap<&str, Value> = runtime
        .routes
        .backends()
        .iter()
        .map(|b| {
            let policy = &b.policy;
            let [high, normal, low] = policy.queue.waiting_by_priority();
            let view = json!({
                "circuit_breaker": policy.breaker.state_name(),
                "consecutive_failures": policy.breaker.failures(),
                "breaker_opened": policy.breaker.opened_total(),
                "in_flight": policy.queue.in_flight(),
                "waiting": {"high": high, "normal": normal, "low": low},
                "engine": engine_view(b),
            });
            (b.name(), view)
        })
        .collect();
    if let Value::Object(map) = &mut value {
        map.insert(
            "uptime_seconds".into(),
            json!(gateway.started.elapsed().as_secs()),
        );
        map.insert("limited_users".into(), json!(gateway.limiter.users()));
        let engines = gateway.engines.status();
        map.insert(
            "engine_memory".into(),
            json!({
                "budget_mb": engines.memory_budget_mb,
                "used_mb": engines.memory_used_mb,
                "waiting": engines.waiting,
            }),
        );
        map.insert("backends".into(), json!(backends));
    }
    Json(value)
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let Some(handle) = &gateway.metrics else {
        return crate::error::GatewayError::UnknownEndpoint {
            path: "/metrics (metrics.enabled is false)".into(),
        }
        .into_response();
    };
    for backend in gateway.runtime().routes.backends() {
        let name = backend.name().to_owned();
        let up = if backend.health().reachable() {
            1.0
        } else {
            0.0
        };
        gauge!("lexora_backend_up", "backend" => name.clone()).set(up);
        let policy = &backend.policy;
        let breaker = match policy.breaker.state_name() {
            "closed" => 0.0,
            "half_open" => 1.0,
            _ => 2.0,
        };
        gauge!("lexora_circuit_breaker_state", "backend" => name.clone()).set(breaker);
        gauge!("lexora_backend_in_flight", "backend" => name.clone())
            .set(policy.queue.in_flight() as f64);
        gauge!("lexora_queue_depth", "backend" => name.clone()).set(policy.queue.waiting() as f64);
        if let Some(engine) = engine_view(backend) {
            gauge!("lexora_engine_ready", "backend" => name.clone())
                .set(if engine.state == "ready" { 1.0 } else { 0.0 });
            gauge!("lexora_engine_swaps", "backend" => name.clone()).set(engine.swaps as f64);
            gauge!("lexora_engine_swap_seconds", "backend" => name.clone())
                .set(engine.swap_seconds);
            gauge!("lexora_engine_restarts", "backend" => name.clone()).set(engine.restarts as f64);
            gauge!("lexora_engine_starts", "backend" => name.clone()).set(engine.starts as f64);
            gauge!("lexora_engine_evictions", "backend" => name.clone())
                .set(engine.evictions as f64);
            gauge!("lexora_engine_waiting", "backend" => name).set(engine.waiting as f64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// `GET /v1/models`: every model of every backend, from config and from
/// what the engines reported, so the list survives a backend being down.
/// With API keys configured, the list needs a key and shows only the
/// models that key may use.
pub async fn models(State(gateway): State<Arc<Gateway>>, headers: http::HeaderMap) -> Response {
    let runtime = gateway.runtime();
    let key = match runtime.keys.authenticate(&headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let data: Vec<Value> = runtime
        .routes
        .models()
        .into_iter()
        .filter(|(id, _)| {
            key.as_ref()
                .is_none_or(|k| k.models.is_empty() || k.models.contains(id))
        })
        .map(|(id, backend)| {
            let mut model =
                json!({"id": id, "object": "model", "created": created, "owned_by": backend});
            // Local engines: whether asking now means waiting for a start.
            let engine = runtime
                .routes
                .backends()
                .iter()
                .find(|b| b.name() == backend)
                .and_then(|b| engine_view(b));
            if let Some(engine) = engine {
                model["engine"] = json!(engine);
            }
            model
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_seed_001() {
        assert_eq!(
            uptime_text(3 * 86_400 + 4 * 3600 + 12 * 60 + 5),
            "3d 4h 12m"
        );
        assert_eq!(uptime_text(3700), "1h 1m");
        assert_eq!(uptime_text(65), "1m 5s");
    }
}
