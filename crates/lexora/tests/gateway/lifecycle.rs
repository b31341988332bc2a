//! Start-up without an engine, and graceful shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn sigterm_drains_a_running_stream_then_exits_zero() {
    let engine = mock(&["--chunks", "10", "--tokens-per-second", "10"]);
    let mut gw = gateway_for(&engine, "");
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true
        }),
    )
    .await;
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(
        body.next()
            .await
            .expect("first chunk")
            .expect("ok")
            .to_vec(),
    )
    .expect("utf8");

    gw.terminate();
    // New connections are refused while the stream drains.
    let refused = eventually(Duration::from_secs(2), || async {
        client()
            .get(format!("{}/health", gw.url))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(refused, "the listener still accepts after SIGTERM");

    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("the stream is not cut")).expect("utf8"));
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "stream was cut: {text}");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let engine = mock(&["--chunks", "1000", "--tokens-per-second", "10"]);
    let mut gw = gateway_for(&engine, "server:\n  shutdown_grace: 0.5\n");
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true
        }),
    )
    .await;
    let mut body = response.bytes_stream();
    let _ = body.next().await;
    gw.terminate();
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .expect("join");
    assert_eq!(
        code,
        Some(0),
        "exits after the grace period even with a stream open"
    );
}

#[tokio::test]
async fn starts_without_any_engine_and_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut gw = gateway_with_env(
        "",
        &[("LEXORA_VLLM__URL", &format!("http://127.0.0.1:{port}"))],
    );
    let health = eventually(Duration::from_secs(5), || async {
        let health = get_json(&format!("{}/health", gw.url)).await;
        health["backends"]["vllm"]["status"] == "unreachable"
    })
    .await;
    assert!(health, "health explains the engine is unreachable");
    let health = get_json(&format!("{}/health", gw.url)).await;
    assert_eq!(health["vllm_status"], "disconnected");
    assert!(health["backends"]["vllm"]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    gw.terminate();
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}
