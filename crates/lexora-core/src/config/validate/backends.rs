//! `backends.NAME` (every type, engine variants, field rules) and the
//! `engines` scheduler settings that depend on them.

use std::time::Duration;

use url::Url;

use super::Checker;
use crate::config::raw::{RawBackend, RawEngine, RawEngines, RawFieldRules};
use crate::config::{BackendConfig, BackendKind, ConfigError, MockConfig};
use crate::engine::{EngineModel, EngineSettings, ScheduleSettings, Variant};
use crate::parse::Endpoint;
use crate::upstream::fields::{FieldOp, FieldRules};

pub(super) fn validate_backend(
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
    if let Some(api_key) = &backend.api_key {
        // Sent in a header (`Bearer KEY`, `api-key`, `x-api-key`).
        if !api_key
            .expose()
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(check.fail(
                &key("api_key"),
                "must be printable ASCII: it is sent in a header (not shown)",
            ));
        }
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

/// `engines`: the budget must fit every variant, and with a budget every
/// variant must say how much memory it needs.
pub(super) fn validate_engines(
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
