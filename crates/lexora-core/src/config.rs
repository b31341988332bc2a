//! Configuration: built-in defaults < config file < `LEXORA_` environment
//! (< command-line flags), validated into typed settings.
//!
//! Loading is three steps, each its own module: [`source`] merges the layers
//! into one tree and remembers who set which key, [`raw`] deserializes that
//! tree (rejecting unknown keys), and `validate` checks values and builds
//! the typed [`Config`] the gateway runs on. Every error names the key and
//! the file or variable it came from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

mod lua;
pub mod raw;
pub mod secret;
pub mod source;
mod validate;

#[cfg(test)]
mod tests;

pub use raw::RawConfig;
pub use secret::Secret;
pub use source::{Layers, Origin};

/// The file used when neither `--config` nor `$LEXORA_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/lexora_config.yaml";

/// A configuration that cannot be used, with the place to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read: {reason}")]
    Read { origin: Origin, reason: String },
    /// The file is not valid YAML or Lua.
    #[error("{origin}: {message}")]
    Syntax { origin: Origin, message: String },
    /// A key is unknown or its value is wrong.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: Origin,
        key: String,
        message: String,
    },
}

/// The validated settings the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub default_model: Option<String>,
    /// Enabled backends, in the order written.
    pub backends: Vec<BackendConfig>,
    pub health: HealthConfig,
    pub logging: LoggingConfig,
    pub metrics: MetricsConfig,
    pub policies: PolicyConfig,
    /// How engine backends share memory (`engines`).
    pub engines: crate::engine::ScheduleSettings,
    /// The merged, defaulted configuration as written (secrets stay masked
    /// when serialized); `config check` prints it.
    pub raw: RawConfig,
    /// The file this came from, if any (reload re-reads it).
    pub file: Option<PathBuf>,
}

/// The listener and its limits (`server`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_body_size: usize,
    pub shutdown_grace: Duration,
    /// How long the runtime keeps polling after a request (`None`: off).
    pub busy_poll: Option<Duration>,
    /// How long a client connection may wait for a request (`None`: no
    /// limit).
    pub idle_timeout: Option<Duration>,
    /// How long a client may leave its answer unread (`None`: no limit).
    pub send_timeout: Option<Duration>,
    /// `listen_v4` and `listen_v6`; when any is set, these are the
    /// listeners instead of `host:port`.
    pub listen: Vec<std::net::SocketAddr>,
}

/// How Lexora talks to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// Any server speaking OpenAI's `/v1` API (vLLM, llama-server, SGLang,
    /// Ollama, OpenAI, DeepSeek, OpenRouter, ...).
    OpenAiCompatible,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure { api_version: String },
    /// Anthropic's Messages API, translated both ways.
    Anthropic {
        version: String,
        default_max_tokens: u64,
    },
    /// The built-in mock engine, served in-process.
    Mock,
    /// Local engine processes (llama-server) that Lexora starts and swaps
    /// by prompt size; see [`crate::engine`].
    Engine {
        model: crate::engine::EngineModel,
        settings: crate::engine::EngineSettings,
    },
}

impl BackendKind {
    /// The name shown in `/health`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::OpenAiCompatible => "openai-compatible",
            Self::Azure { .. } => "azure",
            Self::Anthropic { .. } => "anthropic",
            Self::Mock => "mock",
            Self::Engine { .. } => "engine",
        }
    }
}

/// One enabled backend (`backends.NAME`, or `vllm` alone).
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    /// Base URL without the `/v1` suffix; `None` for in-process backends.
    pub url: Option<Url>,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Models the config says this backend serves; empty = ask the engine.
    pub models: Vec<String>,
    /// Public model name -> the provider's id, where they differ.
    pub upstream_models: std::collections::HashMap<String, String>,
    /// Which server this is (`vllm`, `llamacpp`, `ollama`, `openai`, ...),
    /// for the small differences between them.
    pub provider: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub mock: MockConfig,
    /// Requests in flight at most; `None` = no limit (and no queue).
    pub max_concurrency: Option<usize>,
    /// The APIs it serves; `None`: all.
    pub endpoints: Option<Vec<crate::parse::Endpoint>>,
    /// Changes made to every request body sent to it.
    pub request_fields: crate::upstream::fields::FieldRules,
    /// Changes made to every answer and streamed chunk it sends back.
    pub response_fields: std::sync::Arc<crate::upstream::fields::FieldRules>,
}

/// Behaviour of the built-in mock engine (see [`crate::mock`]).
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub models: Vec<String>,
    pub latency: Duration,
    pub tokens_per_second: f64,
    pub chunks: u32,
    pub embedding_dim: u32,
    /// Stamp every OpenAI stream event with the wall-clock time it was
    /// written (`"mock_sent_us"`, µs since the Unix epoch) and the time its
    /// request arrived (`"mock_received_us"`), so a load generator on the
    /// same machine can time the way through a proxy in each direction
    /// (`lexora mock --stamp-events`; benchmarks only).
    pub stamp_events: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            models: vec!["mock".into()],
            latency: Duration::ZERO,
            tokens_per_second: 0.0,
            chunks: 16,
            embedding_dim: 8,
            stamp_events: false,
        }
    }
}

/// Backend probing (`health`).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub check_interval: Duration,
    pub check_timeout: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Console,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Log level and format (`logging`).
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// A `tracing` filter directive (`info`, `debug`, ...).
    pub level: String,
    pub format: LogFormat,
}

/// Prometheus exposition (`metrics`).
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub port: Option<u16>,
}

/// The team-sharing policies: who may call, how often, in which order,
/// and what happens when an engine fails.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub queue: QueueSettings,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    /// Model -> models to try next, in order.
    pub fallbacks: std::collections::HashMap<String, Vec<String>>,
}

/// API keys and the admin key (`auth`).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub admin_key: Option<Secret>,
    pub keys: Vec<ApiKey>,
}

/// One API key and what it may do.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: Secret,
    pub user: String,
    /// Empty = every model.
    pub models: Vec<String>,
    pub priority: Option<crate::parse::Priority>,
    pub max_priority: Option<crate::parse::Priority>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

/// Per-user limits; `None` = unlimited in that dimension.
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    /// Seed 000: requests per second and burst, for every user.
    pub rate: Option<(f64, u32)>,
    /// Seed 001 `rate_limits.default`.
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// Seed 001 `rate_limits.users`: (requests, tokens) per minute.
    pub users: std::collections::HashMap<String, (Option<u32>, Option<u64>)>,
}

/// The per-backend queue (`queue`).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub max_size: usize,
    pub default_timeout: Duration,
    /// Weights of high, normal, low (lower is served first).
    pub weights: [u32; 3],
    pub aging_step: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_size: 100,
            default_timeout: Duration::from_secs(60),
            weights: [1, 5, 10],
            aging_step: Duration::from_secs(1),
        }
    }
}

/// Retry timing (`retry`, either spelling).
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub exponential_base: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            exponential_base: 2.0,
        }
    }
}

/// The per-backend circuit breaker (`circuit_breaker`).
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// Where the config file comes from, in priority order.
pub fn resolve_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("LEXORA_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    default.exists().then(|| default.to_path_buf())
}

impl Config {
    /// Loads `file` (if any) under the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut layers = Layers::from_file(file)?;
        layers.apply_env(std::env::vars(), &defaults_tree())?;
        Self::from_layers(layers)
    }

    /// Deserializes and validates merged layers.
    pub fn from_layers(layers: Layers) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = serde_path_to_error::deserialize(&layers.tree).map_err(|e| {
            let key = error_key(&e);
            ConfigError::Invalid {
                origin: layers.origin_of(&key),
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        // The file's order, which the tree lost; backends only the
        // environment named go after them, by name.
        let place = |name: &String| {
            layers
                .backend_order
                .iter()
                .position(|written| written == name)
                .unwrap_or(usize::MAX)
        };
        raw.backends.sort_by(|a, _, b, _| place(a).cmp(&place(b)));
        validate::validate(raw, &layers)
    }
}

/// The configuration as YAML, secrets masked (for `config check`).
pub fn to_yaml(raw: &RawConfig) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(raw)
}

/// The default configuration as a tree, used to type environment values.
pub fn defaults_tree() -> serde_json::Value {
    serde_json::to_value(RawConfig::default()).unwrap_or_default()
}

/// The key an error is about. serde sometimes reports an unknown field at
/// its parent; then the field's name is taken from the message and appended.
fn error_key(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let parent = e.path().to_string();
    let message = e.inner().to_string();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match (unknown, parent.as_str()) {
        (Some(field), ".") => field.to_owned(),
        (Some(field), _) if parent != field && !parent.ends_with(&format!(".{field}")) => {
            format!("{parent}.{field}")
        }
        _ => parent,
    }
}
