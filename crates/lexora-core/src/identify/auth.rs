//! API keys: who a request comes from, and what it may do.
//!
//! Keys arrive as `Authorization: Bearer KEY` (OpenAI clients) or
//! `x-api-key: KEY` (Anthropic clients). With no keys configured the
//! gateway is open, as in the seeds. Keys are never logged or echoed: errors
//! say only that a key is missing or unknown.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;

use crate::config::{ApiKey, AuthConfig, Secret};
use crate::error::GatewayError;
use crate::parse::Priority;

/// The configured keys, looked up by value.
#[derive(Default)]
pub struct Keys {
    by_key: HashMap<String, Arc<ApiKey>>,
    admin: Option<Secret>,
}

impl std::fmt::Debug for Keys {
    // The map's keys are the secrets themselves: show only how many.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.by_key.len())
            .field("admin", &self.admin.is_some())
            .finish()
    }
}

impl Keys {
    /// Indexes the configured keys.
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            by_key: config
                .keys
                .iter()
                .map(|k| (k.key.expose().to_owned(), Arc::new(k.clone())))
                .collect(),
            admin: config.admin_key.clone(),
        }
    }

    /// No keys configured: every request is let in.
    pub fn is_open(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The key a request presents, checked; `None` when the gateway is open.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        if self.is_open() {
            return Ok(None);
        }
        let Some(presented) = presented_key(headers) else {
            return Err(GatewayError::Unauthorized {
                message:
                    "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
                        .into(),
            });
        };
        self.by_key
            .get(presented)
            .cloned()
            .map(Some)
            .ok_or_else(|| GatewayError::Unauthorized {
                message: "invalid API key".into(),
            })
    }

    /// Guards `/admin/*`. With an admin key configured it must be presented.
    /// Without one, admin calls are allowed only on a fully open gateway
    /// (no API keys either), as the seeds' `/admin/reload` expects.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        match (&self.admin, presented_key(headers)) {
            (Some(admin), Some(presented))
                if constant_time_eq(admin.expose().as_bytes(), presented.as_bytes()) =>
            {
                Ok(())
            }
            (Some(_), Some(_)) => Err(GatewayError::Forbidden {
                message: "this key may not use the admin endpoints".into(),
                code: "admin_key_required",
            }),
            (Some(_), None) => Err(GatewayError::Unauthorized {
                message: "missing admin key: send `Authorization: Bearer <admin key>`".into(),
            }),
            (None, _) if self.is_open() => Ok(()),
            (None, _) => Err(GatewayError::Forbidden {
                message: "admin endpoints are disabled: set auth.admin_key".into(),
                code: "admin_disabled",
            }),
        }
    }
}

/// Whether `key` may use `model`.
pub fn check_model(key: &ApiKey, model: Option<&str>) -> Result<(), GatewayError> {
    if key.models.is_empty() {
        return Ok(());
    }
    match model {
        Some(model) if key.models.iter().any(|m| m == model) => Ok(()),
        _ => Err(GatewayError::Forbidden {
            message: format!(
                "this API key may not use the model `{}`",
                model.unwrap_or("(none)")
            ),
            code: "model_not_allowed",
        }),
    }
}

/// The priority a request gets: what it asked for (or the key's default,
/// else normal), never above the key's maximum.
pub fn priority(requested: Option<Priority>, key: Option<&ApiKey>) -> Priority {
    let wanted = requested
        .or(key.and_then(|k| k.priority))
        .unwrap_or(Priority::Normal);
    match key.and_then(|k| k.max_priority) {
        // `High < Normal < Low`: a "smaller" priority is a higher one.
        Some(max) if wanted < max => max,
        _ => wanted,
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
