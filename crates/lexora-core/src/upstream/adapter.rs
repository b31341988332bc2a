//! Adapters: how one request is said to each kind of provider.
//!
//! Clients speak two APIs to Lexora (OpenAI's and Anthropic's Messages);
//! backends speak one of them too. An [`Adapter`] decides, per request, the
//! upstream path, the body (model id mapped, translated between the APIs
//! when the two differ) and which API the answer will come back in, so
//! [`crate::respond`] can translate it back for the client.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::{BackendConfig, BackendKind, Secret};
use crate::error::GatewayError;
use crate::parse::{self, Endpoint};
use crate::translate;

/// An API's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's Chat Completions (and friends).
    OpenAi,
    /// Anthropic's Messages.
    Anthropic,
}

impl Endpoint {
    /// The API the client speaks on this endpoint.
    pub fn wire(self) -> Wire {
        match self {
            Self::Messages | Self::CountTokens => Wire::Anthropic,
            _ => Wire::OpenAi,
        }
    }
}

/// The request as it goes upstream.
#[derive(Debug)]
pub struct Outbound {
    /// Borrowed for every provider but Azure, whose path names the model:
    /// no allocation per request for the common case.
    pub path: Cow<'static, str>,
    pub body: Bytes,
    /// The API the answer comes back in.
    pub wire: Wire,
}

/// A backend's dialect.
#[derive(Debug, Clone)]
pub enum Adapter {
    /// OpenAI's API at `{url}/v1/...`. `native_messages`: the server also
    /// speaks Anthropic's `/v1/messages` (llama-server does).
    OpenAi { native_messages: bool },
    /// Azure OpenAI deployments.
    Azure { api_version: String },
    /// Anthropic's Messages API.
    Anthropic {
        version: String,
        default_max_tokens: u64,
    },
}

/// Environment variables that hold a provider's key when the config has none.
fn key_variable(provider: &str) -> Option<&'static str> {
    match provider {
        "openai" => Some("OPENAI_API_KEY"),
        "anthropic" => Some("ANTHROPIC_API_KEY"),
        "azure" => Some("AZURE_OPENAI_API_KEY"),
        "deepseek" => Some("DEEPSEEK_API_KEY"),
        "openrouter" => Some("OPENROUTER_API_KEY"),
        _ => None,
    }
}

impl Adapter {
    /// The dialect of a configured backend.
    pub fn new(config: &BackendConfig) -> Self {
        match &config.kind {
            BackendKind::Azure { api_version } => Self::Azure {
                api_version: api_version.clone(),
            },
            BackendKind::Anthropic {
                version,
                default_max_tokens,
            } => Self::Anthropic {
                version: version.clone(),
                default_max_tokens: *default_max_tokens,
            },
            BackendKind::OpenAiCompatible | BackendKind::Mock => Self::OpenAi {
                native_messages: config.provider == "llamacpp",
            },
            // llama-server speaks OpenAI's API and Anthropic's Messages.
            BackendKind::Engine { .. } => Self::OpenAi {
                native_messages: true,
            },
        }
    }

    /// Whether this dialect can serve `endpoint` at all: Anthropic has no
    /// completions or embeddings, and only servers that speak the Messages
    /// API count tokens.
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        match (self, endpoint) {
            (Self::Anthropic { .. }, Endpoint::Completions | Endpoint::Embeddings) => false,
            (Self::Anthropic { .. }, _) => true,
            (Self::OpenAi { native_messages }, Endpoint::CountTokens) => *native_messages,
            (Self::Azure { .. }, Endpoint::CountTokens) => false,
            _ => true,
        }
    }

    /// Headers that authenticate with the provider: the configured key, else
    /// the provider's usual environment variable. Marked sensitive.
    pub fn auth_headers(
        &self,
        config: &BackendConfig,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
        let key = config.api_key.clone().or_else(|| {
            key_variable(&config.provider)
                .and_then(|v| std::env::var(v).ok())
                .filter(|k| !k.is_empty())
                .map(Secret::new)
        });
        let mut headers = Vec::new();
        let invalid = || GatewayError::Internal {
            message: format!(
                "backend `{}`: api_key is not a valid header value",
                config.name
            ),
        };
        if let Some(key) = key {
            let (name, text) = match self {
                Self::OpenAi { .. } => (
                    http::header::AUTHORIZATION,
                    Cow::Owned(format!("Bearer {}", key.expose())),
                ),
                Self::Azure { .. } => (
                    HeaderName::from_static("api-key"),
                    Cow::Borrowed(key.expose()),
                ),
                Self::Anthropic { .. } => (
                    HeaderName::from_static("x-api-key"),
                    Cow::Borrowed(key.expose()),
                ),
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| invalid())?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        if let Self::Anthropic { version, .. } = self {
            headers.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_str(version).map_err(|_| invalid())?,
            ));
        }
        Ok(headers)
    }

    /// Where the health probe lists models.
    pub fn models_path(&self) -> String {
        match self {
            Self::Azure { api_version } => format!("/openai/models?api-version={api_version}"),
            _ => "/v1/models".to_owned(),
        }
    }

    /// Path, body and answer format for one request. `model` is the
    /// provider's id for the requested model.
    pub fn prepare(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
        model: Option<&str>,
        renamed: bool,
    ) -> Result<Outbound, GatewayError> {
        let renamed_body = || match (renamed, model) {
            (true, Some(model)) => parse::replace_model(body, model),
            _ => Ok(body.clone()),
        };
        let speaks_messages = matches!(
            self,
            Self::Anthropic { .. }
                | Self::OpenAi {
                    native_messages: true
                }
        );
        match (self, endpoint) {
            // The client's Messages request goes as it is.
            (_, Endpoint::Messages | Endpoint::CountTokens) if speaks_messages => Ok(Outbound {
                path: Cow::Borrowed(endpoint.path()),
                body: renamed_body()?,
                wire: Wire::Anthropic,
            }),
            (_, Endpoint::CountTokens) => Err(GatewayError::InvalidRequest {
                message: "token counting needs a backend that speaks the Messages API (anthropic, llamacpp)".into(),
                param: Some("model"),
            }),
            (Self::Anthropic { default_max_tokens, .. }, Endpoint::ChatCompletions) => {
                let model = model.ok_or_else(|| GatewayError::InvalidRequest {
                    message: "`model` is required for an Anthropic backend".into(),
                    param: Some("model"),
                })?;
                let body = translate::openai_to_anthropic_request(body, model, *default_max_tokens).map_err(translation)?;
                Ok(Outbound {
                    path: Cow::Borrowed("/v1/messages"),
                    body: Bytes::from(body),
                    wire: Wire::Anthropic,
                })
            }
            (Self::Anthropic { .. }, other) => Err(GatewayError::InvalidRequest {
                message: format!("{} is not supported by Anthropic backends", other.path()),
                param: None,
            }),
            (_, Endpoint::Messages) => {
                let body = translate::anthropic_to_openai_request(&renamed_body()?).map_err(translation)?;
                Ok(Outbound {
                    path: self.openai_path(Endpoint::ChatCompletions, model)?,
                    body: Bytes::from(body),
                    wire: Wire::OpenAi,
                })
            }
            (_, endpoint) => Ok(Outbound {
                path: self.openai_path(endpoint, model)?,
                body: renamed_body()?,
                wire: Wire::OpenAi,
            }),
        }
    }

    fn openai_path(
        &self,
        endpoint: Endpoint,
        model: Option<&str>,
    ) -> Result<Cow<'static, str>, GatewayError> {
        match self {
            Self::Azure { api_version } => {
                let deployment = model.ok_or_else(|| GatewayError::InvalidRequest {
                    message: "`model` (the Azure deployment) is required".into(),
                    param: Some("model"),
                })?;
                let operation = endpoint.path().trim_start_matches("/v1/");
                let deployment = percent_encode_segment(deployment);
                Ok(Cow::Owned(format!(
                    "/openai/deployments/{deployment}/{operation}?api-version={api_version}"
                )))
            }
            _ => Ok(Cow::Borrowed(endpoint.path())),
        }
    }
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved bytes stay).
fn percent_encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn translation(error: translate::TranslateError) -> GatewayError {
    GatewayError::InvalidRequest {
        message: error.message,
        param: error.param,
    }
}

#[cfg(test)]
mod tests;
