//! Metric handles of finished requests, registered once per label set.
//!
//! The `metrics` macros build a metric's key on every call (allocating each
//! owned label, such as the model), hash it and look it up in the
//! exporter's registry: thousands of instructions, several times a request.
//! The handles are kept here instead, per model, so a finished request
//! costs one map look-up. A handle is registered the first time it is
//! used, never before, so `/metrics` lists exactly the series it did when
//! every request called the macros.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::Usage;
use crate::parse::Endpoint;

/// Most models with series of their own. Clients choose the model name, so
/// a client inventing names must not grow this map (nor the exporter's
/// series) without bound; further models are counted as `(other)`.
const MAX_MODELS: usize = 1024;

/// Every label value of one finished request.
pub(super) struct Finished<'a> {
    pub endpoint: Endpoint,
    pub model: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub first_byte: Option<Duration>,
    pub usage: Usage,
    pub error: Option<&'static str>,
    pub priority: &'static str,
}

/// The request metrics' handles, shared by every request of a gateway.
#[derive(Default)]
pub(super) struct RequestMetrics {
    in_flight: OnceLock<Gauge>,
    /// `high`, `normal`, `low`, `none`.
    by_priority: [OnceLock<Counter>; 4],
    models: DashMap<Arc<str>, Arc<ModelMetrics>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("models", &self.models.len())
            .finish_non_exhaustive()
    }
}

impl RequestMetrics {
    /// A request arrived.
    pub fn started(&self) {
        self.in_flight().increment(1.0);
    }

    /// A request is over: counts it under its labels.
    pub fn finished(&self, request: &Finished<'_>) {
        self.in_flight().decrement(1.0);
        self.model(request.model).record(request);
        if let Some(kind) = request.error {
            counter!("lexora_errors_total", "kind" => kind).increment(1);
        }
        let priority = request.priority;
        let slot = match priority {
            "high" => 0,
            "normal" => 1,
            "low" => 2,
            _ => 3,
        };
        self.by_priority[slot]
            .get_or_init(|| counter!("lexora_requests_by_priority_total", "priority" => priority))
            .increment(1);
    }

    fn in_flight(&self) -> &Gauge {
        self.in_flight
            .get_or_init(|| gauge!("lexora_requests_in_flight"))
    }

    /// The handles of `model`, made on its first request; those of
    /// `(other)` once [`MAX_MODELS`] are kept.
    fn model(&self, model: &str) -> Arc<ModelMetrics> {
        if let Some(found) = self.models.get(model) {
            return Arc::clone(found.value());
        }
        let model = if self.models.len() >= MAX_MODELS {
            super::OTHER
        } else {
            model
        };
        let name: Arc<str> = Arc::from(model);
        let entry = self
            .models
            .entry(Arc::clone(&name))
            .or_insert_with(|| Arc::new(ModelMetrics::new(name)));
        Arc::clone(entry.value())
    }
}

/// The handles of one model, each registered on first use.
struct ModelMetrics {
    model: Arc<str>,
    endpoints: [EndpointMetrics; Endpoint::COUNT],
    prompt_tokens: OnceLock<Counter>,
    completion_tokens: OnceLock<Counter>,
}

#[derive(Default)]
struct EndpointMetrics {
    duration: OnceLock<Histogram>,
    first_byte: OnceLock<Histogram>,
    /// By status code; a handful at most, so a scan beats hashing.
    requests: RwLock<Vec<(u16, Counter)>>,
}

impl ModelMetrics {
    fn new(model: Arc<str>) -> Self {
        Self {
            model,
            endpoints: Default::default(),
            prompt_tokens: OnceLock::new(),
            completion_tokens: OnceLock::new(),
        }
    }

    fn record(&self, request: &Finished<'_>) {
        let label = request.endpoint.label();
        let model = || Arc::clone(&self.model);
        let endpoint = &self.endpoints[request.endpoint.index()];
        endpoint.requests(request.status, || {
            counter!("lexora_requests_total", "endpoint" => label, "model" => model(), "status" => request.status.to_string())
        });
        endpoint
            .duration
            .get_or_init(|| histogram!("lexora_request_duration_seconds", "endpoint" => label, "model" => model()))
            .record(request.latency.as_secs_f64());
        if let Some(first_byte) = request.first_byte {
            endpoint
                .first_byte
                .get_or_init(|| histogram!("lexora_time_to_first_byte_seconds", "endpoint" => label, "model" => model()))
                .record(first_byte.as_secs_f64());
        }
        if request.usage.prompt_tokens > 0 {
            self.prompt_tokens
                .get_or_init(
                    || counter!("lexora_tokens_total", "model" => model(), "kind" => "prompt"),
                )
                .increment(request.usage.prompt_tokens);
        }
        if request.usage.completion_tokens > 0 {
            self.completion_tokens
                .get_or_init(
                    || counter!("lexora_tokens_total", "model" => model(), "kind" => "completion"),
                )
                .increment(request.usage.completion_tokens);
        }
    }
}

impl EndpointMetrics {
    /// Counts a request with `status`, registering its counter with
    /// `register` the first time the status is seen.
    fn requests(&self, status: u16, register: impl FnOnce() -> Counter) {
        {
            let known = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter)) = known.iter().find(|(s, _)| *s == status) {
                counter.increment(1);
                return;
            }
        }
        let mut known = self
            .requests
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another request may have registered it between the two locks.
        if let Some((_, counter)) = known.iter().find(|(s, _)| *s == status) {
            counter.increment(1);
            return;
        }
        let counter = register();
        counter.increment(1);
        known.push((status, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(model: &str) -> Finished<'_> {
        Finished {
            endpoint: Endpoint::ChatCompletions,
            model,
            status: 200,
            latency: Duration::from_millis(1),
            first_byte: None,
            usage: Usage::default(),
            error: None,
            priority: "normal",
        }
    }

    #[test]
    fn models_beyond_the_cap_are_counted_as_other() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exporter = recorder.handle();
        let metrics = RequestMetrics::default();
        metrics::with_local_recorder(&recorder, || {
            metrics.finished(&finished("m"));
            metrics.finished(&finished("m"));
            assert_eq!(metrics.models.len(), 1);
            for i in 0..MAX_MODELS + 10 {
                metrics.finished(&finished(&format!("model-{i}")));
            }
        });
        // The first models have series of their own; the last 11 share one.
        assert_eq!(metrics.models.len(), MAX_MODELS + 1);
        let text = exporter.render();
        let series = |model: &str| {
            let needle = format!(
                "lexora_requests_total{{endpoint=\"chat\",model=\"{model}\",status=\"200\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(needle.as_str()))
                .map(str::to_owned)
        };
        assert_eq!(series("m").as_deref(), Some("2"), "{text}");
        assert_eq!(series("model-1022").as_deref(), Some("1"));
        assert_eq!(series("(other)").as_deref(), Some("11"));
        assert_eq!(series("model-1023"), None);
    }

    #[test]
    fn each_status_gets_one_counter() {
        let metrics = RequestMetrics::default();
        for status in [200, 200, 429, 200, 429, 502] {
            metrics.finished(&Finished {
                status,
                ..finished("m")
            });
        }
        let model = metrics.model("m");
        let statuses: Vec<u16> = model.endpoints[Endpoint::ChatCompletions.index()]
            .requests
            .read()
            .expect("not poisoned")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(statuses, [200, 429, 502]);
    }
}
