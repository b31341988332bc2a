//! Checks values and builds the typed [`Config`] from a [`RawConfig`].

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use url::Url;

use super::raw::{
    RawApiKey, RawBackend, RawConfig, RawEngine, RawEngines, RawFieldRules, RawServer,
};
use super::{
    ApiKey, AuthConfig, BackendConfig, BackendKind, BreakerConfig, Config, ConfigError,
    HealthConfig, Layers, LimitsConfig, LogFormat, LoggingConfig, MetricsConfig, MockConfig,
    PolicyConfig, QueueSettings, RetryConfig, ServerConfig,
};
use crate::engine::{EngineModel, EngineSettings, ScheduleSettings, Variant};
use crate::parse::{Endpoint, Priority};
use crate::upstream::fields::{FieldOp, FieldRules};

/// The largest number of seconds (or rate) a setting may hold: a year.
/// Anything larger is a typo, and would overflow `Instant` arithmetic.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

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
        if value > MAX_SECONDS {
            return Err(self.fail(
                key,
                format!("must be at most {MAX_SECONDS} seconds (a year), got {value}"),
            ));
        }
        if !value.is_finite() || value <= 0.0 {
            return Err(self.fail(
                key,
                format!("must be a positive number of seconds, got {value}"),
            ));
        }
        Duration::try_from_secs_f64(value).map_err(|e| self.fail(key, e.to_string()))
    }

    /// Zero or more, and small enough to be a duration or a rate without
    /// overflowing anything downstream.
    fn non_negative(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if value > MAX_SECONDS {
            return Err(self.fail(key, format!("must be at most {MAX_SECONDS}, got {value}")));
        }
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
        listen: listen_addresses(&check, &raw.server)?,
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
            upstream_models: Default::default(),
            provider: "vllm".into(),
            headers: Vec::new(),
            mock: MockConfig::default(),
            max_concurrency: None,
            endpoints: None,
            request_fields: FieldRules::default(),
            response_fields: std::sync::Arc::default(),
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

    let policies = validate_policies(&check, &raw, layers)?;
    let engines = validate_engines(&check, &raw.engines, &backends)?;

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
        policies,
        engines,
        file: layers.file.clone(),
        raw,
    })
}

/// `server.listen_v4` / `server.listen_v6`: socket addresses of the right
/// family.
fn listen_addresses(
    check: &Checker<'_>,
    server: &RawServer,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut listen = Vec::new();
    if let Some(text) = &server.listen_v4 {
        let address: SocketAddrV4 = text.trim().parse().map_err(|_| {
            check.fail(
                "server.listen_v4",
                format!("`{text}` is not an IPv4 address and port like \"127.0.0.1:7777\""),
            )
        })?;
        listen.push(address.into());
    }
    if let Some(text) = &server.listen_v6 {
        let address: SocketAddrV6 = text.trim().parse().map_err(|_| {
            check.fail(
                "server.listen_v6",
                format!("`{text}` is not an IPv6 address and port like \"[::1]:7777\""),
            )
        })?;
        listen.push(address.into());
    }
    Ok(listen)
}

/// `engines`: the budget must fit every variant, and with a budget every
/// variant must say how much memory it needs.
fn validate_engines(
    check: &Checker<'_>,
    raw: &RawEngines,
    backends: &[BackendConfig],
) -> Result<ScheduleSettings, ConfigError> {
    let min_loaded =
        Duration::from_secs_f64(check.non_negative("engines.min_loaded", raw.min_loaded)?);
    if let Some(budget) = raw.memory_budget_mb {
        if budget == 0 {
            return Err(check.fail("engines.memory_budget_mb", "must be at least 1 MiB"));
        }
        for backend in backends {
            let BackendKind::Engine { model, .. } = &backend.kind else {
                continue;
            };
            // Variants are listed in the order written.
            for (i, variant) in model.variants.iter().enumerate() {
                let key = format!("backends.{}.engine.variants[{i}].memory_mb", backend.name);
                match variant.memory_mb {
                    None => {
                        return Err(
                            check.fail(&key, "is required when engines.memory_budget_mb is set")
                        )
                    }
                    Some(mb) if mb > budget => {
                        return Err(check.fail(
                            &key,
                            format!(
                                "{mb} MiB does not fit engines.memory_budget_mb ({budget} MiB)"
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(ScheduleSettings {
        memory_budget_mb: raw.memory_budget_mb,
        min_loaded,
    })
}

fn validate_policies(
    check: &Checker<'_>,
    raw: &RawConfig,
    layers: &Layers,
) -> Result<PolicyConfig, ConfigError> {
    let rate = if raw.rate_limit.enabled {
        let per_second =
            check.non_negative("rate_limit.default_rate", raw.rate_limit.default_rate)?;
        if per_second == 0.0 {
            return Err(check.fail(
                "rate_limit.default_rate",
                "must be positive (set rate_limit.enabled: false to turn it off)",
            ));
        }
        if raw.rate_limit.default_burst == 0 {
            return Err(check.fail("rate_limit.default_burst", "must be at least 1"));
        }
        Some((per_second, raw.rate_limit.default_burst))
    } else {
        None
    };
    for (user, limits) in std::iter::once(("default", &raw.rate_limits.default))
        .chain(raw.rate_limits.users.iter().map(|(u, l)| (u.as_str(), l)))
    {
        let prefix = if user == "default" {
            "rate_limits.default".to_owned()
        } else {
            format!("rate_limits.users.{user}")
        };
        if limits.requests_per_minute == Some(0) {
            return Err(check.fail(
                &format!("{prefix}.requests_per_minute"),
                "must be at least 1 (omit it for no limit)",
            ));
        }
        if limits.tokens_per_minute == Some(0) {
            return Err(check.fail(
                &format!("{prefix}.tokens_per_minute"),
                "must be at least 1 (omit it for no limit)",
            ));
        }
    }
    let limits = LimitsConfig {
        rate,
        requests_per_minute: raw.rate_limits.default.requests_per_minute,
        tokens_per_minute: raw.rate_limits.default.tokens_per_minute,
        users: raw
            .rate_limits
            .users
            .iter()
            .map(|(user, l)| (user.clone(), (l.requests_per_minute, l.tokens_per_minute)))
            .collect(),
    };

    let p = &raw.queue.priorities;
    let queue = QueueSettings {
        max_size: raw.queue.max_size as usize,
        default_timeout: check.seconds("queue.default_timeout", raw.queue.default_timeout)?,
        weights: [p.high, p.normal, p.low],
        aging_step: check.seconds("queue.aging_seconds", raw.queue.aging_seconds)?,
    };

    // Seed 001 spells retries as total attempts, delay and multiplier.
    let r = &raw.retry;
    let max_retries = match r.max_attempts {
        Some(0) => {
            return Err(check.fail("retry.max_attempts", "must be at least 1 (the first try)"))
        }
        Some(attempts) => attempts - 1,
        None => r.max_retries,
    };
    let base_delay =
        check.non_negative("retry.base_delay", r.delay_seconds.unwrap_or(r.base_delay))?;
    let exponential_base = r.backoff_multiplier.unwrap_or(r.exponential_base);
    if !(1.0..=100.0).contains(&exponential_base) {
        let key = if r.backoff_multiplier.is_some() {
            "retry.backoff_multiplier"
        } else {
            "retry.exponential_base"
        };
        return Err(check.fail(key, "must be between 1.0 and 100.0"));
    }
    let retry = RetryConfig {
        max_retries,
        base_delay: Duration::from_secs_f64(base_delay),
        max_delay: Duration::from_secs_f64(check.non_negative("retry.max_delay", r.max_delay)?),
        exponential_base,
    };

    let breaker = BreakerConfig {
        enabled: raw.circuit_breaker.enabled,
        failure_threshold: raw.circuit_breaker.failure_threshold.max(1),
        open_for: check.seconds("circuit_breaker.timeout", raw.circuit_breaker.timeout)?,
    };

    let mut raw_keys: Vec<(String, RawApiKey)> = raw
        .auth
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("auth.keys[{i}]"), k.clone()))
        .collect();
    if let Some(file) = &raw.auth.keys_file {
        raw_keys.extend(read_keys_file(check, file, layers)?);
    }
    let mut keys = Vec::with_capacity(raw_keys.len());
    let mut seen = std::collections::HashSet::new();
    for (key_path, k) in raw_keys {
        if k.key.expose().len() < 8 {
            return Err(check.fail(&format!("{key_path}.key"), "must be at least 8 characters"));
        }
        if !seen.insert(k.key.expose().to_owned()) {
            return Err(check.fail(&format!("{key_path}.key"), "is listed twice"));
        }
        if k.requests_per_minute == Some(0) || k.tokens_per_minute == Some(0) {
            return Err(check.fail(
                &key_path,
                "per-key limits must be at least 1 (omit them for no limit)",
            ));
        }
        if k.user.trim().is_empty() {
            return Err(check.fail(&format!("{key_path}.user"), "must not be empty"));
        }
        let priority =
            |field: &str, value: &Option<String>| -> Result<Option<Priority>, ConfigError> {
                value
                    .as_deref()
                    .map(|v| {
                        Priority::parse(v).ok_or_else(|| {
                            check.fail(
                                &format!("{key_path}.{field}"),
                                "must be high, normal or low",
                            )
                        })
                    })
                    .transpose()
            };
        keys.push(ApiKey {
            priority: priority("priority", &k.priority)?,
            max_priority: priority("max_priority", &k.max_priority)?,
            key: k.key,
            user: k.user,
            models: k.models,
            requests_per_minute: k.requests_per_minute,
            tokens_per_minute: k.tokens_per_minute,
        });
    }
    let auth = AuthConfig {
        admin_key: raw
            .auth
            .admin_key
            .clone()
            .filter(|k| !k.expose().is_empty()),
        keys,
    };

    let fallbacks = raw
        .fallbacks
        .iter()
        .map(|(m, chain)| (m.clone(), chain.clone()))
        .collect();
    Ok(PolicyConfig {
        auth,
        limits,
        queue,
        retry,
        breaker,
        fallbacks,
    })
}

/// Reads `auth.keys_file`, relative to the config file's folder.
fn read_keys_file(
    check: &Checker<'_>,
    file: &str,
    layers: &Layers,
) -> Result<Vec<(String, RawApiKey)>, ConfigError> {
    let mut path = std::path::PathBuf::from(file);
    if path.is_relative() {
        if let Some(dir) = layers.file.as_ref().and_then(|f| f.parent()) {
            path = dir.join(path);
        }
    }
    let origin = super::Origin::File(path.clone());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        check.fail(
            "auth.keys_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Syntax {
            origin: origin.clone(),
            message: format!("invalid YAML: {e}"),
        })?;
    let keys: Vec<RawApiKey> =
        serde_path_to_error::deserialize(&value).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            key: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (format!("[{i}]"), k))
        .collect())
}

fn validate_backend(
    check: &Checker<'_>,
    name: &str,
    backend: &RawBackend,
    (default_url, default_timeout, default_connect): (&Url, Duration, Duration),
) -> Result<BackendConfig, ConfigError> {
    let key = |field: &str| format!("backends.{name}.{field}");
    let kind_name = backend.kind.as_deref().unwrap_or(name).to_ascii_lowercase();
    let (kind, provider, default_base) = match kind_name.as_str() {
        "mock" => (BackendKind::Mock, "mock", None),
        // Only when written: a backend merely named `engine` is a server.
        "engine" if backend.kind.is_some() => {
            (validate_engine(check, name, backend)?, "llamacpp", None)
        }
        "azure" | "azure-openai" | "azure_openai" => {
            let api_version = backend.api_version.clone().ok_or_else(|| {
                check.fail(&key("api_version"), "is required for Azure OpenAI (e.g. 2024-10-21)")
            })?;
            (BackendKind::Azure { api_version }, "azure", None)
        }
        "anthropic" | "claude" => {
            let kind = BackendKind::Anthropic {
                version: backend.anthropic_version.clone().unwrap_or_else(|| "2023-06-01".into()),
                default_max_tokens: backend.default_max_tokens.filter(|n| *n > 0).unwrap_or(4096),
            };
            (kind, "anthropic", Some("https://api.anthropic.com"))
        }
        "openai" => (BackendKind::OpenAiCompatible, "openai", Some("https://api.openai.com")),
        "deepseek" => (BackendKind::OpenAiCompatible, "deepseek", Some("https://api.deepseek.com")),
        "openrouter" => (BackendKind::OpenAiCompatible, "openrouter", Some("https://openrouter.ai/api")),
        "ollama" => (BackendKind::OpenAiCompatible, "ollama", Some("http://localhost:11434")),
        "llamacpp" | "llama.cpp" | "llama-cpp" | "llama_cpp" | "llama-server" => {
            (BackendKind::OpenAiCompatible, "llamacpp", None)
        }
        "vllm" => (BackendKind::OpenAiCompatible, "vllm", None),
        "sglang" => (BackendKind::OpenAiCompatible, "sglang", None),
        "openai-compatible" | "openai_compatible" => (BackendKind::OpenAiCompatible, "openai-compatible", None),
        other if backend.kind.is_some() => {
            return Err(check.fail(
                &key("type"),
                format!(
                    "unknown backend type `{other}` (use openai-compatible, vllm, llamacpp, sglang, ollama, \
                     openai, azure, anthropic, deepseek, openrouter, engine or mock)"
                ),
            ))
        }
        // An unnamed type with a URL is an OpenAI-compatible server.
        _ => (BackendKind::OpenAiCompatible, "openai-compatible", None),
    };
    if backend.engine.is_some() && !matches!(kind, BackendKind::Engine { .. }) {
        return Err(check.fail(&key("engine"), "is only used by backends of `type: engine`"));
    }
    let url = match (&kind, &backend.url) {
        (BackendKind::Mock | BackendKind::Engine { .. }, _) => None,
        (_, Some(url)) => Some(check.url(&key("url"), url)?),
        // Seed 001 writes the vLLM URL both at `vllm.url` and in the backend;
        // a `vllm` backend without one inherits the top-level URL.
        (_, None) if name == "vllm" => Some(default_url.clone()),
        (_, None) => match default_base {
            Some(base) => Some(check.url(&key("url"), base)?),
            None => return Err(check.fail(&key("url"), "is required for this backend")),
        },
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
    let upstream_models = backend
        .models
        .iter()
        .filter_map(|m| {
            m.upstream
                .clone()
                .filter(|u| *u != m.name)
                .map(|u| (m.name.clone(), u))
        })
        .collect();
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
    let max_concurrency = match backend.max_concurrency {
        Some(0) => {
            return Err(check.fail(
                &key("max_concurrency"),
                "must be at least 1 (omit it for no limit)",
            ))
        }
        other => other.map(|n| n as usize),
    };
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
        upstream_models,
        provider: provider.to_owned(),
        headers,
        mock,
        max_concurrency,
        endpoints: validate_endpoints(check, name, backend.endpoints.as_deref())?,
        request_fields: validate_fields(
            check,
            name,
            "request_fields",
            backend.request_fields.as_ref(),
        )?,
        response_fields: std::sync::Arc::new(validate_fields(
            check,
            name,
            "response_fields",
            backend.response_fields.as_ref(),
        )?),
    })
}

/// `backends.NAME.endpoints`: known API names, at least one.
fn validate_endpoints(
    check: &Checker<'_>,
    name: &str,
    written: Option<&[String]>,
) -> Result<Option<Vec<Endpoint>>, ConfigError> {
    let Some(written) = written else {
        return Ok(None);
    };
    let key = format!("backends.{name}.endpoints");
    if written.is_empty() {
        return Err(check.fail(&key, "lists no API; omit it to serve all"));
    }
    written
        .iter()
        .map(|label| {
            [
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Embeddings,
                Endpoint::Messages,
                Endpoint::CountTokens,
            ]
            .into_iter()
                .find(|e| e.label() == label.trim().to_ascii_lowercase())
                .ok_or_else(|| {
                    check.fail(
                        &key,
                        format!(
                            "unknown API `{label}` (use chat, completions, embeddings, messages or count_tokens)"
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `backends.NAME.request_fields` / `response_fields`: every path segment
/// is named (or `*`).
fn validate_fields(
    check: &Checker<'_>,
    name: &str,
    section: &str,
    raw: Option<&RawFieldRules>,
) -> Result<FieldRules, ConfigError> {
    let Some(raw) = raw else {
        return Ok(FieldRules::default());
    };
    let key = |part: &str| format!("backends.{name}.{section}.{part}");
    let named = |part: &str, path: &str| {
        if path.split('.').any(|segment| segment.trim().is_empty()) {
            Err(check.fail(
                &key(part),
                format!(
                    "`{path}` is not a field path (names joined by dots, `*` for every element)"
                ),
            ))
        } else {
            Ok(())
        }
    };
    let mut rules = FieldRules::default();
    for (from, to) in &raw.rename {
        named("rename", from)?;
        if to.trim().is_empty() || to.contains('.') {
            return Err(check.fail(
                &key("rename"),
                format!("`{to}`: the new name is one field name (the field stays in its object)"),
            ));
        }
        rules.push(from, FieldOp::Rename(to.clone()));
    }
    for path in &raw.remove {
        named("remove", path)?;
        rules.push(path, FieldOp::Remove);
    }
    for (path, value) in &raw.set {
        named("set", path)?;
        rules.push(path, FieldOp::Set(value.clone()));
    }
    Ok(rules)
}

/// `type: engine`: the model (the backend's one `models` entry) and the
/// variants Lexora runs it with.
fn validate_engine(
    check: &Checker<'_>,
    name: &str,
    backend: &RawBackend,
) -> Result<BackendKind, ConfigError> {
    let key = |field: &str| format!("backends.{name}.{field}");
    let model = match backend.models.as_slice() {
        [model] if !model.name.trim().is_empty() => model.name.clone(),
        _ => {
            return Err(check.fail(
                &key("models"),
                "an engine backend serves exactly one model: list its name once",
            ))
        }
    };
    let raw = backend.engine.clone().unwrap_or_default();
    if raw.variants.is_empty() {
        return Err(check.fail(
            &key("engine.variants"),
            "an engine backend needs at least one variant (name, binary, args, context)",
        ));
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(raw.variants.len());
    for (i, variant) in raw.variants.iter().enumerate() {
        let at = |field: &str| key(&format!("engine.variants[{i}].{field}"));
        if variant.name.trim().is_empty() {
            return Err(check.fail(&at("name"), "must not be empty"));
        }
        if variants.iter().any(|v| v.name == variant.name) {
            return Err(check.fail(
                &at("name"),
                format!("variant `{}` is listed twice", variant.name),
            ));
        }
        if variant.binary.trim().is_empty() {
            return Err(check.fail(&at("binary"), "must not be empty"));
        }
        if variant.context == 0 {
            return Err(check.fail(&at("context"), "must be at least 1 token"));
        }
        variants.push(Variant {
            name: variant.name.clone(),
            binary: variant.binary.clone().into(),
            args: variant.args.clone(),
            context: variant.context,
            memory_mb: variant.memory_mb,
        });
    }
    let settings = engine_settings(check, name, &raw)?;
    Ok(BackendKind::Engine {
        model: EngineModel {
            name: model,
            variants,
        },
        settings,
    })
}

fn engine_settings(
    check: &Checker<'_>,
    name: &str,
    raw: &RawEngine,
) -> Result<EngineSettings, ConfigError> {
    let mut settings = EngineSettings::default();
    let seconds = |field: &str, value: Option<f64>| -> Result<Option<Duration>, ConfigError> {
        value
            .map(|v| check.seconds(&format!("backends.{name}.engine.{field}"), v))
            .transpose()
    };
    if let Some(d) = seconds("ready_timeout", raw.ready_timeout)? {
        settings.ready_timeout = d;
    }
    if let Some(d) = seconds("drain_timeout", raw.drain_timeout)? {
        settings.drain_timeout = d;
    }
    if let Some(d) = seconds("stop_timeout", raw.stop_timeout)? {
        settings.stop_timeout = d;
    }
    if let Some(d) = seconds("restart_backoff", raw.restart_backoff)? {
        settings.restart_backoff = d;
    }
    settings.idle_unload = seconds("idle_unload", raw.idle_unload)?;
    Ok(settings)
}
