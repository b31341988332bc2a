//! Checks values and builds the typed [`Config`] from a [`RawConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::raw::{RawConfig, RawServer};
use super::{
    BackendConfig, BackendKind, Config, ConfigError, HealthConfig, Layers, LogFormat,
    LoggingConfig, MetricsConfig, MockConfig, ServerConfig,
};
use crate::upstream::fields::FieldRules;

mod backends;
mod policies;

use backends::{validate_backend, validate_engines};
use policies::validate_policies;

/// The largest number of seconds (or rate) a setting may hold: a year.
/// Anything larger is a typo, and would overflow `Instant` arithmetic.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The longest busy-poll window accepted: past this the CPU it burns buys
/// nothing (no engine answers that fast and that slow at once).
const MAX_BUSY_POLL_US: u64 = 10_000;

/// `server.busy_poll_us`: zero turns it off.
fn busy_poll(check: &Checker<'_>, micros: u64) -> Result<Option<Duration>, ConfigError> {
    if micros > MAX_BUSY_POLL_US {
        return Err(check.fail(
            "server.busy_poll_us",
            format!("must be at most {MAX_BUSY_POLL_US} microseconds, got {micros}"),
        ));
    }
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

/// Builds errors that name the key and the layer that set it.
pub(super) struct Checker<'a> {
    layers: &'a Layers,
}

impl Checker<'_> {
    pub(super) fn fail(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.layers.origin_of(key),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// A strictly positive, finite number of seconds.
    pub(super) fn seconds(&self, key: &str, value: f64) -> Result<Duration, ConfigError> {
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

    /// A number of seconds where zero means no limit.
    pub(super) fn optional_seconds(
        &self,
        key: &str,
        value: f64,
    ) -> Result<Option<Duration>, ConfigError> {
        let value = self.non_negative(key, value)?;
        Ok((value > 0.0).then(|| Duration::from_secs_f64(value)))
    }

    /// Zero or more, and small enough to be a duration or a rate without
    /// overflowing anything downstream.
    pub(super) fn non_negative(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
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

    pub(super) fn url(&self, key: &str, value: &str) -> Result<Url, ConfigError> {
        let hint = || {
            let shown = super::secret::without_userinfo(value);
            format!("`{shown}` is not an http(s) URL (expected e.g. http://localhost:8000)")
        };
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
        busy_poll: busy_poll(&check, raw.server.busy_poll_us)?,
        idle_timeout: check.optional_seconds("server.idle_timeout", raw.server.idle_timeout)?,
        send_timeout: check.optional_seconds("server.send_timeout", raw.server.send_timeout)?,
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
    let parse = |key: &str, text: &str, ipv4: bool, example: &str| {
        text.trim()
            .parse::<SocketAddr>()
            .ok()
            .filter(|address| address.is_ipv4() == ipv4)
            .ok_or_else(|| {
                let family = if ipv4 { "IPv4" } else { "IPv6" };
                check.fail(
                    key,
                    format!("`{text}` is not an {family} address and port like \"{example}\""),
                )
            })
    };
    let mut listen = Vec::new();
    if let Some(text) = &server.listen_v4 {
        listen.push(parse("server.listen_v4", text, true, "127.0.0.1:7777")?);
    }
    if let Some(text) = &server.listen_v6 {
        listen.push(parse("server.listen_v6", text, false, "[::1]:7777")?);
    }
    Ok(listen)
}
