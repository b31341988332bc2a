//! Every error status, OpenAI-shaped, from the gateway and from engines.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Sends a raw body and returns (status, error object, headers).
async fn send_raw(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("error bodies are JSON");
    let error = body["error"].clone();
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "missing `{field}` in {body}");
    }
    (status, error, headers)
}

#[tokio::test]
async fn gateway_errors_have_the_right_status_and_shape() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "server:\n  max_body_size: 2048\n");
    let chat = format!("{}/v1/chat/completions", gw.url);

    let (status, error, _) = send_raw(&chat, "{\"model\": \"m1\",\n \"messages\": [}").await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], "invalid_json");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2 column")),
        "{error}"
    );

    let (status, error, _) = send_raw(&chat, r#"{"model": "m1", "stream": "yes"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(error["param"], "stream", "{error}");

    let big = format!(
        r#"{{"model": "m1", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(4096)
    );
    let (status, error, _) = send_raw(&chat, big).await;
    assert_eq!(status, 413);
    assert_eq!(error["code"], "request_too_large");

    let (status, error, _) = send_raw(&chat, r#"{"model": "gpt-17", "messages": []}"#).await;
    assert_eq!(status, 404);
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");

    let (status, error, _) = send_raw(&format!("{}/v1/nothing", gw.url), "{}").await;
    assert_eq!(status, 404);
    assert_eq!(error["code"], "unknown_url");

    let wrong = client().get(&chat).send().await.expect("send");
    assert_eq!(wrong.status(), 405);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["error"]["code"], "method_not_allowed");

    assert_eq!(
        engine_requests(&engine).await.len(),
        0,
        "none of these reached the engine"
    );
}

#[tokio::test]
async fn engine_errors_pass_through_with_status_message_and_retry_after() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let chat = format!("{}/v1/chat/completions", gw.url);
    let body = json!({"model": "m1", "mock": {"status": 429, "message": "engine is busy", "retry_after": 7}});
    let (status, error, headers) = send_raw(&chat, body.to_string()).await;
    assert_eq!(status, 429);
    assert_eq!(error["message"], "engine is busy");
    assert_eq!(headers["retry-after"], "7");

    let body =
        json!({"model": "m1", "mock": {"status": 400, "message": "temperature must be positive"}});
    let (status, error, _) = send_raw(&chat, body.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(error["message"], "temperature must be positive");
}

#[tokio::test]
async fn refused_connection_is_502() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let gw = gateway(&format!("vllm:\n  url: http://127.0.0.1:{port}\n"));
    let (status, error, _) = send_raw(
        &format!("{}/v1/chat/completions", gw.url),
        r#"{"model": "x"}"#,
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(error["code"], "upstream_unreachable");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused")),
        "{error}"
    );

    let health = get_json(&format!("{}/health", gw.url)).await;
    assert_eq!(health["status"], "unhealthy");
    let ready = client()
        .get(format!("{}/health/ready", gw.url))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn engine_too_slow_is_504_at_the_request_timeout() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let chat = format!("{}/v1/chat/completions", gw.url);
    let started = Instant::now();
    let body = json!({"model": "m1", "x_timeout": 0.3, "mock": {"delay_ms": 5000}});
    let (status, error, _) = send_raw(&chat, body.to_string()).await;
    assert_eq!(status, 504);
    assert_eq!(error["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));

    // The configured timeout applies without x_timeout.
    let gw = gateway(&format!("vllm:\n  url: {}\n  timeout: 0.3\n", engine.url));
    let body = json!({"model": "m1", "mock": {"delay_ms": 5000}});
    let (status, _, _) =
        send_raw(&format!("{}/v1/chat/completions", gw.url), body.to_string()).await;
    assert_eq!(status, 504);
}

#[tokio::test]
async fn reset_before_any_byte_is_502() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    // The engine aborts a stream before its first event: nothing reached the
    // client yet, so it gets a plain 502 rather than a broken stream.
    for pace in [0, 50] {
        let body = json!({"model": "m1", "stream": true, "mock": {"reset_after": 0, "tokens_per_second": pace}});
        let (status, error, _) =
            send_raw(&format!("{}/v1/chat/completions", gw.url), body.to_string()).await;
        assert_eq!(status, 502, "pace {pace}");
        assert_eq!(error["code"], "upstream_reset");
    }
}
