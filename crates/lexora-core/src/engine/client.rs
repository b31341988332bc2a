//! The calls the manager itself makes to an engine: readiness
//! (`GET /health`) and token counting (`POST /apply-template`,
//! `POST /tokenize`).

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::time::{timeout, Duration};

/// A health probe that hangs must not eat the whole ready timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Counting tokens is on the request path; a slow engine falls back to the
/// estimate instead of delaying the request.
const TOKENIZE_TIMEOUT: Duration = Duration::from_secs(2);

/// A small HTTP client for loopback engine calls.
#[derive(Debug, Clone)]
pub(crate) struct EngineHttp {
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Deserialize)]
struct Tokenized {
    tokens: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Templated {
    prompt: String,
}

impl EngineHttp {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            // No idle connections: llama-server holds a thread of its small
            // pool for each open one (see `upstream::http_client`).
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
        }
    }

    /// True when `GET {base}/health` answers 200 (llama-server answers 503
    /// while it loads the model).
    pub(crate) async fn healthy(&self, base_url: &str) -> bool {
        let Ok(request) = Request::get(format!("{base_url}/health")).body(Full::default()) else {
            return false;
        };
        match timeout(PROBE_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => response.status() == StatusCode::OK,
            _ => false,
        }
    }

    /// Tokens of `text` as the engine counts them; `None` on any failure.
    pub(crate) async fn tokenize(&self, base_url: &str, text: &str) -> Option<u32> {
        let parsed: Tokenized = self
            .post(
                base_url,
                "/tokenize",
                &serde_json::json!({ "content": text }),
            )
            .await?;
        u32::try_from(parsed.tokens.len()).ok()
    }

    /// `messages` as the engine's chat template renders them; `None` on any
    /// failure (older engines lack the endpoint; odd content parts).
    pub(crate) async fn apply_template(
        &self,
        base_url: &str,
        messages: &serde_json::Value,
    ) -> Option<String> {
        let parsed: Templated = self
            .post(
                base_url,
                "/apply-template",
                &serde_json::json!({ "messages": messages }),
            )
            .await?;
        Some(parsed.prompt)
    }

    /// POST `body` as JSON and parse a 200 answer, within the counting
    /// time limit.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        base_url: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Option<T> {
        let body = serde_json::to_vec(body).ok()?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{base_url}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let call = async {
            let response = self.client.request(request).await.ok()?;
            if response.status() != StatusCode::OK {
                return None;
            }
            let bytes = response.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice(&bytes).ok()
        };
        timeout(TOKENIZE_TIMEOUT, call).await.ok().flatten()
    }
}
