//! Checks values and builds the typed [`Config`] from a [`RawConfig`].

use std::time::Duration;

use url::Url;

use super::raw::{RawBackend, RawConfig};
use super::{
    BackendConfig, BackendKind, Config, ConfigError, HealthConfig, Layers, LogFormat,
    LoggingConfig, MetricsConfig, MockConfig, ServerConfig,
};

/// Builds errors that name the key and the layer that set it.
struct Checker<'a> {
    layers: &'a Layers,
}

impl Checker<'_> {
    fn fail(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.layers.origin_of(key),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// A strictly positive, finite number of seconds.
    fn seconds(&self, key: &str, value: f64) -> Result<Duration, ConfigError> {
        if !value.is_finite() || value <= 0.0 {
            return Err(self.fail(
                key,
                format!("must be a positive number of seconds, got {value}"),
            ));
        }
        Duration::try_from_secs_f64(value).map_err(|e| self.fail(key, e.to_string()))
    }

    fn non_negative(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if !value.is_finite() || value < 0.0 {
            return Err(self.fail(
                key,
                format!("must be zero or a positive number, got {value}"),
            ));
        }
        Ok(value)
    }

    fn url(&self, key: &str, value: &str) -> Result<Url, ConfigError> {
        let hint =
            || format!("`{value}` is not an http(s) URL (expected e.g. http://localhost:8000)");
        let mut url = Url::parse(value).map_err(|_| self.fail(key, hint()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.fail(key, hint()));
        }
        // Users often paste the engine's `/v1` base; Lexora appends the API
        // path itself, so keep only what comes before it.
        let path = url.path().trim_end_matches('/');
        let path = path.strip_suffix("/v1").unwrap_or(path).to_owned();
        url.set_path(&path);
        Ok(url)
    }
}

pub(super) fn validate(raw: RawConfig, layers: &Layers) -> Result<Config, ConfigError> {
    let check = Checker { layers };

    if raw.server.host.trim().is_empty() {
        return Err(check.fail("server.host", "must not be empty"));
    }
    let max_body_size = usize::try_from(raw.server.max_body_size)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| check.fail("server.max_body_size", "must be a positive number of bytes"))?;
    let server = ServerConfig {
        host: raw.server.host.clone(),
        port: raw.server.port,
        max_body_size,
        shutdown_grace: Duration::from_secs_f64(
            check.non_negative("server.shutdown_grace", raw.server.shutdown_grace)?,
        ),
    };

    let default_timeout = check.seconds("vllm.timeout", raw.vllm.timeout)?;
    let default_connect = check.seconds("vllm.connect_timeout", raw.vllm.connect_timeout)?;
    let default_url = check.url("vllm.url", &raw.vllm.url)?;

    let mut backends = Vec::new();
    if raw.backends.is_empty() {
        backends.push(BackendConfig {
            name: "vllm".into(),
            kind: BackendKind::OpenAiCompatible,
            url: Some(default_url.clone()),
            api_key: None,
            timeout: default_timeout,
            connect_timeout: default_connect,
            models: Vec::new(),
            headers: Vec::new(),
            mock: MockConfig::default(),
        });
    }
    for (name, backend) in &raw.backends {
        if backend.enabled == Some(false) {
            continue;
        }
        backends.push(validate_backend(
            &check,
            name,
            backend,
            (&default_url, default_timeout, default_connect),
        )?);
    }
    if backends.is_empty() {
        return Err(check.fail("backends", "every backend is disabled; enable at least one"));
    }

    if let Some(model) = &raw.default_model {
        if model.trim().is_empty() {
            return Err(check.fail("default_model", "must not be empty"));
        }
    }

    let health = HealthConfig {
        check_interval: check.seconds("health.check_interval", raw.health.check_interval)?,
        check_timeout: check.seconds("health.check_timeout", raw.health.check_timeout)?,
    };

    let logging = LoggingConfig {
        level: match raw.logging.level.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "info" => "info",
            "warn" | "warning" => "warn",
            "error" | "critical" => "error",
            other => {
                return Err(check.fail(
                    "logging.level",
                    format!("unknown level `{other}` (use DEBUG, INFO, WARNING or ERROR)"),
                ))
            }
        }
        .to_owned(),
        format: match raw.logging.format.to_ascii_lowercase().as_str() {
            "console" | "text" => LogFormat::Console,
            "json" => LogFormat::Json,
            other => {
                return Err(check.fail(
                    "logging.format",
                    format!("unknown format `{other}` (use console or json)"),
                ))
            }
        },
    };

    validate_policies(&check, &raw)?;

    let metrics = MetricsConfig {
        enabled: raw.metrics.enabled,
        port: raw.metrics.port,
    };

    Ok(Config {
        server,
        default_model: raw.default_model.clone(),
        backends,
        health,
        logging,
        metrics,
        file: layers.file.clone(),
        raw,
    })
}

/// Sections whose policies are enforced by later stages; their values are
/// checked now so a bad file fails at load time, not at first use.
fn validate_policies(check: &Checker<'_>, raw: &RawConfig) -> Result<(), ConfigError> {
    check.non_negative("rate_limit.default_rate", raw.rate_limit.default_rate)?;
    check.seconds("queue.default_timeout", raw.queue.default_timeout)?;
    check.non_negative("retry.base_delay", raw.retry.base_delay)?;
    check.non_negative("retry.max_delay", raw.retry.max_delay)?;
    if raw.retry.exponential_base < 1.0 {
        return Err(check.fail("retry.exponential_base", "must be at least 1.0"));
    }
    if let Some(delay) = raw.retry.delay_seconds {
        check.non_negative("retry.delay_seconds", delay)?;
    }
    if let Some(multiplier) = raw.retry.backoff_multiplier {
        if multiplier < 1.0 {
            return Err(check.fail("retry.backoff_multiplier", "must be at least 1.0"));
        }
    }
    if raw.retry.max_attempts == Some(0) {
        return Err(check.fail("retry.max_attempts", "must be at least 1 (the first try)"));
    }
    Ok(())
}

fn validate_backend(
    check: &Checker<'_>,
    name: &str,
    backend: &RawBackend,
    (default_url, default_timeout, default_connect): (&Url, Duration, Duration),
) -> Result<BackendConfig, ConfigError> {
    let key = |field: &str| format!("backends.{name}.{field}");
    let kind_name = backend.kind.as_deref().unwrap_or(name).to_ascii_lowercase();
    let kind = match kind_name.as_str() {
        "mock" => BackendKind::Mock,
        "openai-compatible" | "openai_compatible" | "openai" | "vllm" | "llamacpp"
        | "llama.cpp" | "llama-cpp" | "llama_cpp" | "sglang" | "ollama" | "deepseek"
        | "openrouter" => BackendKind::OpenAiCompatible,
        other if backend.kind.is_some() => {
            return Err(check.fail(
                &key("type"),
                format!("unknown backend type `{other}` (use openai-compatible or mock)"),
            ))
        }
        // An unnamed type with a URL is an OpenAI-compatible server.
        _ => BackendKind::OpenAiCompatible,
    };
    let url = match (&kind, &backend.url) {
        (BackendKind::Mock, _) => None,
        (_, Some(url)) => Some(check.url(&key("url"), url)?),
        // Seed 001 writes the vLLM URL both at `vllm.url` and in the backend;
        // a `vllm` backend without one inherits the top-level URL.
        (_, None) if name == "vllm" => Some(default_url.clone()),
        (_, None) => return Err(check.fail(&key("url"), "is required for this backend")),
    };
    let timeout = match backend.timeout {
        Some(t) => check.seconds(&key("timeout"), t)?,
        None => default_timeout,
    };
    let connect_timeout = match backend.connect_timeout {
        Some(t) => check.seconds(&key("connect_timeout"), t)?,
        None => default_connect,
    };
    let mut models = Vec::with_capacity(backend.models.len());
    for (i, model) in backend.models.iter().enumerate() {
        if model.name.trim().is_empty() {
            return Err(check.fail(
                &format!("backends.{name}.models[{i}].name"),
                "must not be empty",
            ));
        }
        models.push(model.name.clone());
    }
    let mut headers = Vec::with_capacity(backend.headers.len());
    for (header, value) in &backend.headers {
        let header_key = key(&format!("headers.{header}"));
        let header_name = http::HeaderName::try_from(header.as_str())
            .map_err(|_| check.fail(&header_key, "is not a valid HTTP header name"))?;
        let mut value = http::HeaderValue::try_from(value.expose())
            .map_err(|_| check.fail(&header_key, "is not a valid HTTP header value"))?;
        value.set_sensitive(true);
        headers.push((header_name, value));
    }
    let mut mock = MockConfig::default();
    if let Some(raw) = &backend.mock {
        mock.latency = Duration::from_millis(raw.latency_ms);
        mock.tokens_per_second =
            check.non_negative(&key("mock.tokens_per_second"), raw.tokens_per_second)?;
        mock.chunks = raw.chunks;
        mock.embedding_dim = raw.embedding_dim.max(1);
    }
    if kind == BackendKind::Mock && !models.is_empty() {
        mock.models = models.clone();
    }
    if kind == BackendKind::Mock && models.is_empty() {
        models = mock.models.clone();
    }
    Ok(BackendConfig {
        name: name.to_owned(),
        kind,
        url,
        api_key: backend.api_key.clone().filter(|k| !k.expose().is_empty()),
        timeout,
        connect_timeout,
        models,
        headers,
        mock,
    })
}
