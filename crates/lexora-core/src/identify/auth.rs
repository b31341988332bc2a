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
mod tests {
    use http::HeaderValue;

    use super::*;

    fn key(models: &[&str], max: Option<Priority>) -> ApiKey {
        ApiKey {
            key: Secret::new("sk-test-0001"),
            user: "alice".into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            priority: None,
            max_priority: max,
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }

    fn keys() -> Keys {
        Keys::new(&AuthConfig {
            admin_key: Some(Secret::new("admin-secret-1")),
            keys: vec![key(&[], None)],
        })
    }

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_and_x_api_key_both_work() {
        let keys = keys();
        let by_bearer = keys
            .authenticate(&headers("authorization", "Bearer sk-test-0001"))
            .expect("valid");
        assert_eq!(by_bearer.map(|k| k.user.clone()).as_deref(), Some("alice"));
        assert!(keys
            .authenticate(&headers("x-api-key", "sk-test-0001"))
            .is_ok());
    }

    #[test]
    fn missing_and_wrong_keys_are_401_without_echoing_the_key() {
        let keys = keys();
        let missing = keys.authenticate(&HeaderMap::new()).expect_err("missing");
        assert_eq!(missing.status(), 401);
        let wrong = keys
            .authenticate(&headers("authorization", "Bearer sk-guess-9999"))
            .expect_err("wrong");
        assert_eq!(wrong.status(), 401);
        assert!(!String::from_utf8_lossy(&wrong.body()).contains("sk-guess"));
    }

    #[test]
    fn debug_output_shows_no_key() {
        assert!(!format!("{:?}", keys()).contains("sk-test"));
    }

    #[test]
    fn open_gateway_lets_everyone_in() {
        let open = Keys::default();
        assert!(open
            .authenticate(&HeaderMap::new())
            .expect("open")
            .is_none());
        assert!(open.check_admin(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn admin_needs_the_admin_key() {
        let keys = keys();
        assert!(keys
            .check_admin(&headers("authorization", "Bearer admin-secret-1"))
            .is_ok());
        assert_eq!(
            keys.check_admin(&headers("authorization", "Bearer sk-test-0001"))
                .expect_err("user key")
                .status(),
            403
        );
        assert_eq!(
            keys.check_admin(&HeaderMap::new())
                .expect_err("none")
                .status(),
            401
        );
        let no_admin = Keys::new(&AuthConfig {
            admin_key: None,
            keys: vec![key(&[], None)],
        });
        assert_eq!(
            no_admin
                .check_admin(&headers("authorization", "Bearer sk-test-0001"))
                .expect_err("disabled")
                .status(),
            403
        );
    }

    #[test]
    fn model_allow_lists() {
        assert!(check_model(&key(&[], None), Some("any")).is_ok());
        assert!(check_model(&key(&["a"], None), Some("a")).is_ok());
        assert_eq!(
            check_model(&key(&["a"], None), Some("b"))
                .expect_err("b")
                .status(),
            403
        );
    }

    #[test]
    fn priority_is_capped_by_the_key() {
        let capped = key(&[], Some(Priority::Normal));
        assert_eq!(
            priority(Some(Priority::High), Some(&capped)),
            Priority::Normal
        );
        assert_eq!(priority(Some(Priority::Low), Some(&capped)), Priority::Low);
        assert_eq!(priority(None, None), Priority::Normal);
        let mut defaulted = key(&[], None);
        defaulted.priority = Some(Priority::Low);
        assert_eq!(priority(None, Some(&defaulted)), Priority::Low);
    }
}
