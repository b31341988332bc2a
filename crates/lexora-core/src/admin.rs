//! `/admin/*`: operations guarded by the admin key.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::HeaderMap;
use serde_json::json;

use crate::gateway::Gateway;

/// `POST /admin/reload`: re-read the configuration file and swap it in.
/// An invalid file is refused with its error; the running config stays.
pub async fn reload(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(error) = gateway.runtime().keys.check_admin(&headers) {
        return error.into_response();
    }
    match gateway.reload().await {
        Ok(()) => {
            let runtime = gateway.runtime();
            let file = runtime
                .config
                .file
                .as_ref()
                .map(|f| f.display().to_string());
            let backends: Vec<&str> = runtime.routes.backends().iter().map(|b| b.name()).collect();
            Json(json!({"status": "reloaded", "file": file, "backends": backends})).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "reload refused");
            error.into_response()
        }
    }
}
