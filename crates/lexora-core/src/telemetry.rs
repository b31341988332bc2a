//! Logs and the metrics recorder, set up once at start.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, wins
/// over `logging.level`. Logs go to stderr through a background writer so
/// a slow terminal or journal never stalls a request; keep the returned
/// guard alive to flush them at exit.
pub fn init_logging(config: &LoggingConfig) -> WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    // A second init (tests) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Console => builder.try_init(),
    };
    guard
}

/// Latency buckets, in seconds: from sub-millisecond gateway overhead to
/// the multi-minute generations of large models.
const BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Installs the global Prometheus recorder and describes Lexora's metrics.
pub fn init_metrics() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe_counter!(
        "lexora_requests_total",
        "Requests finished, by endpoint, model and status."
    );
    describe_histogram!(
        "lexora_request_duration_seconds",
        Unit::Seconds,
        "Time from arrival to the last byte."
    );
    describe_histogram!(
        "lexora_time_to_first_byte_seconds",
        Unit::Seconds,
        "Time from arrival to the first byte of the answer."
    );
    describe_counter!(
        "lexora_tokens_total",
        "Tokens reported by engines, by model and kind (prompt, completion)."
    );
    describe_counter!("lexora_errors_total", "Failed requests, by error kind.");
    describe_gauge!("lexora_requests_in_flight", "Requests being served now.");
    describe_histogram!(
        "lexora_queue_wait_seconds",
        Unit::Seconds,
        "Time requests waited for a free backend slot."
    );
    describe_gauge!("lexora_queue_depth", "Requests waiting for a backend slot.");
    describe_gauge!(
        "lexora_backend_in_flight",
        "Requests in flight at each backend."
    );
    describe_gauge!(
        "lexora_circuit_breaker_state",
        "0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "lexora_rate_limited_total",
        "Requests refused by a per-user limit, by dimension."
    );
    describe_counter!(
        "lexora_retries_total",
        "Attempts after a failed one, by backend."
    );
    describe_counter!(
        "lexora_requests_by_priority_total",
        "Requests finished, by priority."
    );
    describe_gauge!(
        "lexora_engine_ready",
        "1 when the backend's managed engine is ready."
    );
    describe_gauge!(
        "lexora_engine_swaps",
        "Variant swaps of a managed engine since start."
    );
    describe_gauge!(
        "lexora_engine_swap_seconds",
        "Time a managed engine spent swapping variants."
    );
    describe_gauge!(
        "lexora_engine_restarts",
        "Restarts of a managed engine after crashes."
    );
    describe_gauge!(
        "lexora_engine_starts",
        "Engine processes started for a backend, for any reason."
    );
    describe_gauge!(
        "lexora_engine_evictions",
        "Times the scheduler stopped a backend's engine to make room for another."
    );
    describe_gauge!(
        "lexora_engine_waiting",
        "Requests waiting for the scheduler to let a backend's engine run."
    );
    describe_gauge!(
        "lexora_backend_up",
        "1 when the backend's last health probe succeeded."
    );
    Ok(handle)
}

/// How often histogram buffers are folded into the exposition.
pub const METRICS_UPKEEP: Duration = Duration::from_secs(5);
