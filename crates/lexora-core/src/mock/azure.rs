//! Azure OpenAI routes: `/openai/deployments/{deployment}/...`. They answer
//! like the OpenAI routes, but a request must carry `?api-version=` (Azure
//! answers 404 without it) and the deployment names the model when the body
//! does not, as Azure bodies usually omit `model`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admit::{Dialect, Route};
use super::openai::{embed, generate, Kind};
use super::MockState;

/// `POST /openai/deployments/{deployment}/chat/completions`.
pub(super) async fn chat(
    State(state): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !has_api_version(query.as_deref()) {
        return not_found();
    }
    generate(state, body, Kind::Chat, route(&deployment)).await
}

/// `POST /openai/deployments/{deployment}/completions`.
pub(super) async fn completions(
    State(state): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !has_api_version(query.as_deref()) {
        return not_found();
    }
    generate(state, body, Kind::Completion, route(&deployment)).await
}

/// `POST /openai/deployments/{deployment}/embeddings`.
pub(super) async fn embeddings(
    State(state): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !has_api_version(query.as_deref()) {
        return not_found();
    }
    embed(state, body, route(&deployment)).await
}

fn route(deployment: &str) -> Route<'_> {
    Route {
        dialect: Dialect::OpenAi,
        default_model: Some(deployment),
    }
}

/// Whether the query string has a non-empty `api-version` parameter.
fn has_api_version(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(name, value)| name == "api-version" && !value.is_empty())
    })
}

/// What Azure answers for a request without `api-version`.
fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "404", "message": "Resource not found"}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::has_api_version;

    #[test]
    fn api_version_must_be_present_and_non_empty() {
        assert!(has_api_version(Some("api-version=2024-10-21")));
        assert!(has_api_version(Some("x=1&api-version=2024-10-21")));
        assert!(!has_api_version(None));
        assert!(!has_api_version(Some("api-version=")));
        assert!(!has_api_version(Some("apiversion=1")));
    }
}
