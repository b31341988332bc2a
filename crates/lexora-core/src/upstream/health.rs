//! Backend probes: is the engine reachable, and which models does it list.
//!
//! A tracked task probes every backend's `GET /v1/models` at the configured
//! interval. The result feeds `/health`, `/health/ready`, `/v1/models` and
//! routing (a backend configured without models serves what it lists).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Backend;
use crate::config::{BackendConfig, HealthConfig};

/// What the last probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct BackendHealth {
    /// `unknown` until the first probe, then `reachable` or `unreachable`.
    pub status: &'static str,
    /// Models the engine listed.
    pub models: Vec<String>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    /// Unix seconds of the last probe.
    pub checked_at: Option<u64>,
}

impl BackendHealth {
    pub(crate) fn unknown(config: &BackendConfig) -> Self {
        // An in-process engine cannot be unreachable.
        let in_process = config.url.is_none();
        Self {
            status: if in_process { "reachable" } else { "unknown" },
            models: Vec::new(),
            latency_ms: None,
            error: None,
            checked_at: None,
        }
    }

    /// Whether the last probe reached the engine.
    pub fn reachable(&self) -> bool {
        self.status == "reachable"
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Probes one backend once.
pub async fn probe(backend: &Backend, timeout: Duration) -> BackendHealth {
    if let Some(manager) = backend.engine() {
        // Lexora starts the engine itself when a request needs it, so the
        // backend can serve even while no process runs; one that failed
        // last shows its error here.
        return BackendHealth {
            status: "reachable",
            models: vec![manager.model().name.clone()],
            latency_ms: None,
            error: manager.status().last_error,
            checked_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
        };
    }
    let started = tokio::time::Instant::now();
    let request_id = HeaderValue::from_static("lexora-health-probe");
    let path = backend.adapter().models_path();
    let attempt = async {
        let response = backend
            .send(Method::GET, &path, Bytes::new(), &request_id)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("GET {path} answered {status}"));
        }
        let models = serde_json::from_slice::<ModelList>(&body)
            .map(|list| list.data.into_iter().map(|m| m.id).collect())
            .unwrap_or_default();
        Ok::<Vec<String>, String>(models)
    };
    let outcome = match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs_f64())),
    };
    let checked_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    match outcome {
        Ok(models) => BackendHealth {
            status: "reachable",
            models,
            latency_ms,
            error: None,
            checked_at,
        },
        Err(error) => BackendHealth {
            status: "unreachable",
            // Keep the models seen before: routing by a stale list beats
            // routing by none while an engine restarts.
            models: backend.health().models.clone(),
            latency_ms,
            error: Some(error),
            checked_at,
        },
    }
}

/// Probes every backend now and then every `check_interval` until
/// cancelled. `current` gives the backends and settings in force, so a
/// reload is picked up at the next round.
pub async fn run(
    current: impl Fn() -> (Vec<Arc<Backend>>, HealthConfig),
    cancel: CancellationToken,
) {
    loop {
        let (backends, config) = current();
        let probes = backends.iter().map(|backend| async move {
            let health = probe(backend, config.check_timeout).await;
            if health.reachable() != backend.health().reachable() {
                if health.reachable() {
                    tracing::info!(backend = backend.name(), models = ?health.models, "backend reachable");
                } else {
                    tracing::warn!(backend = backend.name(), error = health.error.as_deref().unwrap_or(""), "backend unreachable");
                }
            }
            backend.set_health(health);
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = futures_util::future::join_all(probes) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.check_interval) => {}
        }
    }
}
