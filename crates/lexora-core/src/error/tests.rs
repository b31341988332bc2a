use std::time::Duration;

use super::*;

fn rendered(error: GatewayError) -> String {
    let status = error.status();
    let body: serde_json::Value =
        serde_json::from_slice(&error.body()).expect("error bodies are JSON");
    format!(
        "{}\n{}",
        status.as_u16(),
        serde_json::to_string_pretty(&body).expect("json")
    )
}

#[test]
fn every_gateway_error_is_openai_shaped() {
    let cases = [
        (
            "invalid_json",
            GatewayError::InvalidJson {
                message: "request body is not valid JSON: expected value at line 1 column 2".into(),
            },
        ),
        (
            "invalid_request",
            GatewayError::InvalidRequest {
                message: "`x_priority` must be one of high, normal, low".into(),
                param: Some("x_priority"),
            },
        ),
        (
            "payload_too_large",
            GatewayError::PayloadTooLarge { limit: 1024 },
        ),
        (
            "model_not_found",
            GatewayError::ModelNotFound {
                model: "gpt-9".into(),
            },
        ),
        (
            "unknown_endpoint",
            GatewayError::UnknownEndpoint {
                path: "/v1/nope".into(),
            },
        ),
        (
            "upstream_connect",
            GatewayError::UpstreamConnect {
                backend: "vllm".into(),
                reason: "connection refused".into(),
            },
        ),
        (
            "upstream_reset",
            GatewayError::UpstreamReset {
                backend: "vllm".into(),
                reason: "connection reset before the response".into(),
            },
        ),
        (
            "upstream_timeout",
            GatewayError::UpstreamTimeout {
                backend: "vllm".into(),
                after: Duration::from_millis(1500),
            },
        ),
        (
            "unavailable",
            GatewayError::Unavailable {
                message: "no backend is reachable".into(),
            },
        ),
        (
            "internal",
            GatewayError::Internal {
                message: "bug".into(),
            },
        ),
        (
            "upstream_auth",
            GatewayError::UpstreamAuth {
                backend: "hosted".into(),
                status: 401,
            },
        ),
        (
            "unauthorized",
            GatewayError::Unauthorized {
                message: "invalid API key".into(),
            },
        ),
        (
            "forbidden",
            GatewayError::Forbidden {
                message: "this API key may not use the model `m`".into(),
                code: "model_not_allowed",
            },
        ),
        (
            "rate_limited",
            GatewayError::RateLimited {
                user: "alice".into(),
                dimension: "tokens",
                retry_after: Duration::from_millis(2500),
                info: Box::default(),
            },
        ),
        (
            "queue_full",
            GatewayError::QueueFull {
                backend: "vllm".into(),
                size: 100,
                retry_after: Duration::from_secs(1),
            },
        ),
        (
            "queue_timeout",
            GatewayError::QueueTimeout {
                backend: "vllm".into(),
                waited: Duration::from_secs(60),
            },
        ),
        (
            "circuit_open",
            GatewayError::BreakerOpen {
                retry_after: Duration::from_secs(42),
            },
        ),
        (
            "engine_unavailable",
            GatewayError::EngineUnavailable {
                message: "engine tiny/small exited while starting (exit status: 1)".into(),
                retry_after: Duration::from_secs(2),
            },
        ),
        (
            "invalid_config",
            GatewayError::InvalidConfig {
                message: "configuration not reloaded: ...".into(),
            },
        ),
    ];
    for (name, error) in cases {
        insta::assert_snapshot!(name, rendered(error));
    }
}

#[test]
fn upstream_status_passes_its_body_and_retry_after() {
    let error = GatewayError::UpstreamStatus {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: Bytes::from_static(
            br#"{"error":{"message":"slow down","type":"rate_limit","param":null,"code":null}}"#,
        ),
        retry_after: Some(HeaderValue::from_static("3")),
    };
    assert!(error.retryable());
    let response = error.into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
}

#[test]
fn retryable_only_for_transient_upstream_faults() {
    assert!(GatewayError::UpstreamConnect {
        backend: "a".into(),
        reason: "x".into()
    }
    .retryable());
    assert!(!GatewayError::ModelNotFound { model: "m".into() }.retryable());
    assert!(!GatewayError::UpstreamTimeout {
        backend: "a".into(),
        after: Duration::ZERO
    }
    .retryable());
    let bad = GatewayError::UpstreamStatus {
        status: StatusCode::BAD_REQUEST,
        body: Bytes::new(),
        retry_after: None,
    };
    assert!(!bad.retryable());
}

#[test]
fn engine_unavailable_says_when_to_retry() {
    let error = GatewayError::EngineUnavailable {
        message: "engine tiny/small was not ready within 30s".into(),
        retry_after: Duration::from_millis(1500),
    };
    assert!(!error.retryable());
    let response = error.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
}
