//! SSE pass-through: order, timing, usage, disconnects, failures.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::*;

fn contents(payloads: &[Value]) -> String {
    payloads
        .iter()
        .filter_map(|p| p["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn chunks_reach_the_client_while_the_engine_generates() {
    // 10 tokens at 10/s: the engine needs about a second for the whole answer.
    let engine = mock(&["--chunks", "10", "--tokens-per-second", "10"]);
    let gw = gateway_for(&engine, "");
    let started = Instant::now();
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut first_token_at = None;
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf8"));
        if first_token_at.is_none() && text.contains("Lexora") {
            first_token_at = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_token_at.expect("a token arrived");
    assert!(
        total >= Duration::from_millis(850),
        "the engine paces the stream: {total:?}"
    );
    assert!(
        first < total / 2,
        "first token at {first:?} of {total:?}: the stream was buffered"
    );

    let payloads = sse_payloads(&text);
    assert_eq!(payloads.last(), Some(&Value::String("[DONE]".into())));
    assert_eq!(
        contents(&payloads),
        "Lexora keeps the engines reachable, fair and observable; it never",
        "chunks arrive complete and in order"
    );
}

#[tokio::test]
async fn usage_is_counted_and_hidden_unless_asked_for() {
    let engine = mock(&["--chunks", "3"]);
    let gw = gateway_for(&engine, "");
    let url = format!("{}/v1/chat/completions", gw.url);
    let messages = json!([{"role": "user", "content": "a b c d"}]);

    let hidden = post(
        &url,
        json!({"model": "m1", "messages": messages, "stream": true}),
    )
    .await
    .text()
    .await
    .expect("text");
    let payloads = sse_payloads(&hidden);
    assert!(
        payloads.iter().all(|p| p.get("usage").is_none()),
        "{hidden}"
    );
    assert_eq!(
        engine_requests(&engine).await.pop().expect("req")["stream_options"]["include_usage"],
        true
    );

    let shown = post(&url, json!({
        "model": "m1", "messages": messages, "stream": true, "stream_options": {"include_usage": true}
    }))
    .await
    .text()
    .await
    .expect("text");
    let payloads = sse_payloads(&shown);
    let usage: Vec<&Value> = payloads.iter().filter_map(|p| p.get("usage")).collect();
    assert_eq!(usage.len(), 1, "{shown}");
    assert_eq!(usage[0]["prompt_tokens"], 4);
    assert_eq!(usage[0]["completion_tokens"], 3);

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["total_tokens"], 14, "both streams counted: {stats}");
}

#[tokio::test]
async fn completions_stream_too() {
    let engine = mock(&["--chunks", "2"]);
    let gw = gateway_for(&engine, "");
    let text = post(
        &format!("{}/v1/completions", gw.url),
        json!({"model": "m1", "prompt": "x", "stream": true}),
    )
    .await
    .text()
    .await
    .expect("text");
    let payloads = sse_payloads(&text);
    let joined: String = payloads
        .iter()
        .filter_map(|p| p["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, "Lexora keeps");
    assert_eq!(payloads.last(), Some(&Value::String("[DONE]".into())));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let engine = mock(&["--chunks", "200", "--tokens-per-second", "20"]);
    let gw = gateway_for(&engine, "");
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true
        }),
    )
    .await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("first chunk").expect("ok");
    assert!(!first.is_empty());
    let active = get_json(&format!("{}/mock/stats", engine.url)).await;
    assert_eq!(active["active_streams"], 1);
    drop(body);

    let cancelled = eventually(Duration::from_secs(3), || async {
        let stats = get_json(&format!("{}/mock/stats", engine.url)).await;
        stats["cancelled_streams"] == 1 && stats["active_streams"] == 0
    })
    .await;
    assert!(
        cancelled,
        "the engine kept generating for a client that left"
    );
    let recorded = eventually(Duration::from_secs(3), || async {
        let stats = get_json(&format!("{}/stats", gw.url)).await;
        stats["total_requests"] == 1
    })
    .await;
    assert!(recorded, "an abandoned stream is still recorded");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // As fast as the engine can: far more than the sockets between hold.
    let engine = mock(&["--chunks", "2000000"]);
    let gw = gateway_for(&engine, "server:\n  send_timeout: 0.5\n");
    let address = gw.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let body = json!({"model": "m1", "messages": [], "stream": true}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut start = [0; 1024];
    let read = tcp.read(&mut start).await.expect("read");
    assert!(
        start[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&start[..read])
    );
    // The client reads nothing more and keeps the connection open: the
    // gateway gives up on it, and the engine's stream is cancelled long
    // before the request's own 120 s timeout.
    let dropped = eventually(Duration::from_secs(15), || async {
        let stats = get_json(&format!("{}/mock/stats", engine.url)).await;
        stats["cancelled_streams"] == 1 && stats["active_streams"] == 0
    })
    .await;
    assert!(
        dropped,
        "the engine kept generating for a client that stopped reading"
    );
    drop(tcp);
}

#[tokio::test]
async fn engine_failure_mid_stream_ends_with_an_error_event() {
    let engine = mock(&["--chunks", "10"]);
    let gw = gateway_for(&engine, "");
    let text = post(&format!("{}/v1/chat/completions", gw.url), json!({
        "model": "m1", "messages": [], "stream": true, "mock": {"reset_after": 3, "tokens_per_second": 50}
    }))
    .await
    .text()
    .await
    .expect("the gateway ends the stream cleanly");
    let payloads = sse_payloads(&text);
    assert_eq!(payloads.len(), 4, "{text}");
    let last = payloads.last().expect("error event");
    assert_eq!(last["error"]["code"], "upstream_reset", "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn stream_past_its_timeout_ends_with_a_timeout_event() {
    let engine = mock(&["--chunks", "50", "--tokens-per-second", "10"]);
    let gw = gateway_for(&engine, "");
    let started = Instant::now();
    let text = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true, "x_timeout": 0.5
        }),
    )
    .await
    .text()
    .await
    .expect("text");
    assert!(started.elapsed() < Duration::from_secs(3));
    let last = sse_payloads(&text).pop().expect("events");
    assert_eq!(last["error"]["code"], "upstream_timeout", "{text}");
}

#[tokio::test]
async fn client_giving_up_on_a_plain_answer_cancels_the_upstream_request() {
    // 20 tokens at 10/s: the answer takes two seconds.
    let engine = mock(&["--chunks", "20", "--tokens-per-second", "10"]);
    let gw = gateway_for(&engine, "");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let result = impatient
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": "m1", "messages": []}))
        .send()
        .await;
    assert!(result.is_err(), "the client timed out");
    let cancelled = eventually(Duration::from_secs(1), || async {
        let stats = get_json(&format!("{}/mock/stats", engine.url)).await;
        stats["cancelled_answers"] == 1 && stats["active_answers"] == 0
    })
    .await;
    assert!(cancelled, "the engine kept working for a client that left");
}
