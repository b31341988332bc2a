//! `auth`, `rate_limit(s)`, `queue`, `retry`, `circuit_breaker`, `fallbacks`.

use std::time::Duration;

use super::Checker;
use crate::config::raw::{RawApiKey, RawConfig};
use crate::config::{
    ApiKey, AuthConfig, BreakerConfig, ConfigError, Layers, LimitsConfig, PolicyConfig,
    QueueSettings, RetryConfig,
};
use crate::parse::Priority;

pub(super) fn validate_policies(
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
    let origin = crate::config::Origin::File(path.clone());
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
