//! The configuration as written: serde structs that mirror the YAML/Lua
//! file and the `LEXORA_` environment, with every default filled in.
//!
//! Nothing here is validated beyond types; `config::validate` turns a
//! [`RawConfig`] into the typed [`super::Config`]. Every struct denies unknown
//! keys so a typo is an error, not a silently ignored setting.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// The whole file. Section names follow seeds 000 and 001.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    /// Seed 000's single upstream; also the defaults for `backends`.
    pub vllm: RawVllm,
    /// The model used when a request names none.
    pub default_model: Option<String>,
    /// Seed 001's named backends. When empty, `vllm` is the only backend.
    pub backends: IndexMap<String, RawBackend>,
    pub health: RawHealth,
    /// Seed 000's token bucket (requests per second).
    pub rate_limit: RawRateLimit,
    /// Seed 001's per-user requests/tokens per minute.
    pub rate_limits: RawRateLimits,
    pub queue: RawQueue,
    pub retry: RawRetry,
    /// Seed 003's circuit breaker, per backend.
    pub circuit_breaker: RawBreaker,
    /// API keys; without any, the gateway is open (as in the seeds).
    pub auth: RawAuth,
    /// Model -> models to try, in order, when no backend of it can answer.
    pub fallbacks: IndexMap<String, Vec<String>>,
    pub logging: RawLogging,
    pub metrics: RawMetrics,
    /// How `type: engine` backends share the machine.
    pub engines: RawEngines,
}

/// `engines`: the scheduler of local engine processes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEngines {
    /// MiB the engines may use together (each variant's `memory_mb`);
    /// absent: every model's engine may run at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<u64>,
    /// Seconds a busy engine stays loaded before another may replace it.
    pub min_loaded: f64,
}

impl Default for RawEngines {
    fn default() -> Self {
        Self {
            memory_budget_mb: None,
            min_loaded: 10.0,
        }
    }
}

/// `server` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub host: String,
    pub port: u16,
    /// Largest request body accepted, in bytes.
    pub max_body_size: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: f64,
    /// Microseconds the runtime keeps polling its sockets after a request
    /// arrives instead of sleeping (0: never); read at start.
    pub busy_poll_us: u64,
    /// Seconds a client connection may wait for its next request before
    /// it is closed (0: no limit).
    pub idle_timeout: f64,
    /// Seconds a client may leave its answer unread before it is dropped
    /// (0: no limit).
    pub send_timeout: f64,
    /// An IPv4 address to listen on, e.g. `"127.0.0.1:7777"` (seed 004);
    /// with `listen_v6`, replaces `host`/`port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_v4: Option<String>,
    /// An IPv6 address to listen on, e.g. `"[::1]:7777"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_v6: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8001,
            max_body_size: 32 * 1024 * 1024,
            shutdown_grace: 30.0,
            busy_poll_us: 0,
            idle_timeout: 75.0,
            send_timeout: 60.0,
            listen_v4: None,
            listen_v6: None,
        }
    }
}

/// `vllm` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVllm {
    #[serde(serialize_with = "super::secret::serialize_url")]
    pub url: String,
    /// Total seconds a request may take, streaming included.
    pub timeout: f64,
    pub connect_timeout: f64,
}

impl Default for RawVllm {
    fn default() -> Self {
        Self {
            url: "http://localhost:8000".into(),
            timeout: 120.0,
            connect_timeout: 5.0,
        }
    }
}

/// `backends.NAME` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackend {
    /// `None` means enabled: seed 001 lists `enabled: true` explicitly, but a
    /// backend written without the key is meant to be used.
    pub enabled: Option<bool>,
    /// `openai-compatible` (vllm, llamacpp, sglang, ollama, ...) or `mock`;
    /// inferred from the backend's name when absent.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(serialize_with = "super::secret::serialize_optional_url")]
    pub url: Option<String>,
    pub api_key: Option<Secret>,
    pub timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    /// Models served; empty means "whatever the engine reports".
    pub models: Vec<RawModel>,
    /// Extra headers sent with every upstream request.
    pub headers: IndexMap<String, Secret>,
    /// Settings of the in-process engine of a `type: mock` backend.
    pub mock: Option<RawMock>,
    /// Requests in flight at this backend at most; more wait in the queue.
    pub max_concurrency: Option<u32>,
    /// Azure OpenAI's `api-version` query parameter.
    pub api_version: Option<String>,
    /// Anthropic's `anthropic-version` header.
    pub anthropic_version: Option<String>,
    /// `max_tokens` sent to Anthropic when a request has none (it is required there).
    pub default_max_tokens: Option<u64>,
    /// The engine processes of a `type: engine` backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<RawEngine>,
    /// The APIs this backend serves (`chat`, `completions`, `embeddings`,
    /// `messages`, `count_tokens`); absent: all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// Fields changed in every request sent to this backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_fields: Option<RawFieldRules>,
    /// Fields changed in every answer (and streamed chunk) it sends back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_fields: Option<RawFieldRules>,
}

/// `backends.NAME.request_fields` / `response_fields`, applied in this
/// order. Fields are paths: `a.b`, `choices.*.delta.x`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFieldRules {
    /// Field -> new name in the same object, e.g.
    /// `max_completion_tokens: max_tokens`.
    pub rename: IndexMap<String, String>,
    /// Fields dropped, e.g. `[logit_bias]`.
    pub remove: Vec<String>,
    /// Field -> JSON value, e.g. `cache_prompt: true`.
    pub set: IndexMap<String, serde_json::Value>,
}

/// `backends.NAME.engine`: local engine processes Lexora starts and swaps.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEngine {
    /// Ways to run the model; the smallest context that fits a request wins.
    pub variants: Vec<RawVariant>,
    /// Seconds a started engine may take to become ready.
    pub ready_timeout: Option<f64>,
    /// Seconds a swap waits for the old engine's requests to finish.
    pub drain_timeout: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL.
    pub stop_timeout: Option<f64>,
    /// Seconds an unused engine keeps running; absent keeps it.
    pub idle_unload: Option<f64>,
    /// Seconds to wait before restarting a crashed engine.
    pub restart_backoff: Option<f64>,
}

/// One entry of `backends.NAME.engine.variants`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    pub name: String,
    /// The engine executable, e.g. `llama-server`.
    pub binary: String,
    /// Arguments without `--host`/`--port` (Lexora adds them).
    #[serde(default)]
    pub args: Vec<String>,
    /// Tokens one request may use (prompt plus answer).
    pub context: u32,
    /// Estimated memory use, in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
}

/// One entry of `backends.NAME.models`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    /// Where the engine loads the weights from (informational here).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub gpu_memory_utilization: Option<f64>,
    /// The provider's id for this model when it differs from `name`
    /// (Azure: the deployment name).
    #[serde(default)]
    pub upstream: Option<String>,
}

/// Behaviour of the built-in mock engine.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMock {
    /// Milliseconds before the first byte of every answer.
    pub latency_ms: u64,
    /// Streaming pace; 0 sends every chunk at once.
    pub tokens_per_second: f64,
    /// Completion tokens (stream chunks) per answer.
    pub chunks: u32,
    pub embedding_dim: u32,
}

impl Default for RawMock {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            tokens_per_second: 0.0,
            chunks: 16,
            embedding_dim: 8,
        }
    }
}

/// `health` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// Seconds between probes of each backend.
    pub check_interval: f64,
    /// Seconds one probe may take.
    pub check_timeout: f64,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            check_interval: 10.0,
            check_timeout: 2.0,
        }
    }
}

/// `rate_limit` as written (seed 000).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub enabled: bool,
    /// Requests per second per user.
    pub default_rate: f64,
    pub default_burst: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            default_rate: 10.0,
            default_burst: 20,
        }
    }
}

/// `rate_limits` as written (seed 001).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimits {
    pub default: RawUserLimits,
    pub users: IndexMap<String, RawUserLimits>,
}

/// One user's per-minute limits.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUserLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

/// `queue` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    pub max_size: u32,
    /// Seconds a request may wait for a free slot.
    pub default_timeout: f64,
    /// Lower number = served first.
    pub priorities: RawPriorities,
    /// Seconds of waiting that lower a request's rank by one priority unit,
    /// so low priority never starves.
    pub aging_seconds: f64,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            max_size: 100,
            default_timeout: 60.0,
            priorities: RawPriorities::default(),
            aging_seconds: 1.0,
        }
    }
}

/// `circuit_breaker` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    pub enabled: bool,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Seconds an open breaker waits before letting one probe through.
    pub timeout: f64,
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            timeout: 60.0,
        }
    }
}

/// `auth` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Guards `/admin/*`; without it the admin endpoints are refused.
    pub admin_key: Option<Secret>,
    pub keys: Vec<RawApiKey>,
    /// A YAML file holding more `keys` entries (a list), kept out of the
    /// main config for permissions' sake.
    pub keys_file: Option<String>,
}

/// One entry of `auth.keys`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub key: Secret,
    /// The user this key identifies.
    pub user: String,
    /// Models this key may use; empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Priority of requests that name none.
    #[serde(default)]
    pub priority: Option<String>,
    /// Highest priority this key may ask for.
    #[serde(default)]
    pub max_priority: Option<String>,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// `queue.priorities` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPriorities {
    pub high: u32,
    pub normal: u32,
    pub low: u32,
}

impl Default for RawPriorities {
    fn default() -> Self {
        Self {
            high: 1,
            normal: 5,
            low: 10,
        }
    }
}

/// Both spellings load: seed 000 (`max_retries`, `base_delay`, ...) and
/// seed 001 (`max_attempts`, `delay_seconds`, `backoff_multiplier`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub max_retries: u32,
    pub base_delay: f64,
    pub max_delay: f64,
    pub exponential_base: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_multiplier: Option<f64>,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: 1.0,
            max_delay: 30.0,
            exponential_base: 2.0,
            max_attempts: None,
            delay_seconds: None,
            backoff_multiplier: None,
        }
    }
}

/// `logging` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogging {
    pub level: String,
    pub format: String,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            format: "console".into(),
        }
    }
}

/// `metrics` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    pub enabled: bool,
    /// A second listener serving only `/metrics` (seed 001's `port: 9090`).
    pub port: Option<u16>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
        }
    }
}
