//! In-process tests of the Anthropic Messages routes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::mock::reply;
use crate::mock::tests::{call, engine, get_json, post};

fn request(extra: Value) -> Value {
    let mut body = json!({
        "model": "m1",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there world"}]}],
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

fn weather(extra: Value) -> Value {
    let mut body = request(json!({
        "tools": [
            {"name": "get_weather", "input_schema": {"type": "object"}},
            {"name": "other", "input_schema": {"type": "object"}}
        ],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "What's the Weather in Paris?"}
        ],
    }));
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

/// SSE frames as (event name, data).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap();
            let event = event.strip_prefix("event: ").unwrap().to_owned();
            let data = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (event, data)
        })
        .collect()
}

#[tokio::test]
async fn answers_in_the_messages_shape() {
    let engine = engine();
    let answer = post(&engine, "/v1/messages", request(json!({}))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    let id = answer["id"].as_str().unwrap();
    assert!(id.starts_with("msg_mock_"), "{id}");
    assert_eq!(
        answer,
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": "m1",
            "content": [{"type": "text", "text": reply::text(16)}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 16},
        })
    );

    let capped = post(&engine, "/v1/messages", request(json!({"max_tokens": 3})))
        .await
        .json();
    assert_eq!(capped["content"][0]["text"], reply::text(3));
    assert_eq!(capped["stop_reason"], "max_tokens");
    assert_eq!(capped["usage"]["output_tokens"], 3);

    let counted = post(&engine, "/v1/messages/count_tokens", request(json!({}))).await;
    assert_eq!(counted.json(), json!({"input_tokens": 5}));
}

#[tokio::test]
async fn requests_are_recorded() {
    let engine = engine();
    let body = request(json!({}));
    call(
        &engine,
        Method::POST,
        "/v1/messages?beta=true",
        &[("x-api-key", "sk-ant"), ("anthropic-version", "2023-06-01")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        get_json(&engine, "/mock/requests").await,
        json!({"requests": [body.clone()]})
    );
    let entry = &get_json(&engine, "/mock/log").await["entries"][0];
    assert_eq!(entry["path"], "/v1/messages?beta=true");
    assert_eq!(entry["headers"]["x-api-key"], "sk-ant");
    assert_eq!(entry["headers"]["anthropic-version"], "2023-06-01");
    assert_eq!(entry["body"], body);
}

#[tokio::test]
async fn streams_events_in_order() {
    let engine = engine();
    let body = request(json!({"stream": true, "max_tokens": 4}));
    let answer = post(&engine, "/v1/messages", body).await;
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let events = events(&answer.text());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], "m1");
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..7]
        .iter()
        .map(|(_, data)| {
            assert_eq!(data["index"], 0);
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, reply::text(4));
    assert_eq!(
        events[7].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[8].1,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
            "usage": {"output_tokens": 4},
        })
    );
    let stats = get_json(&engine, "/mock/stats").await;
    assert_eq!(stats["completed_streams"], 1);
}

#[tokio::test]
async fn weather_with_tools_calls_the_first_tool() {
    let engine = engine();
    let answer = post(&engine, "/v1/messages", weather(json!({})))
        .await
        .json();
    assert_eq!(
        answer["content"],
        json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(answer["stop_reason"], "tool_use");
    assert_eq!(answer["usage"]["output_tokens"], 2);

    // Without tools, or without the word, the answer is text.
    let mut no_tools = weather(json!({}));
    no_tools.as_object_mut().unwrap().remove("tools");
    let answer = post(&engine, "/v1/messages", no_tools).await.json();
    assert_eq!(answer["content"][0]["type"], "text");
    let other = request(json!({"tools": [{"name": "get_weather"}]}));
    let answer = post(&engine, "/v1/messages", other).await.json();
    assert_eq!(answer["stop_reason"], "end_turn");
}

#[tokio::test]
async fn streamed_tool_input_arrives_in_fragments() {
    let engine = engine();
    let answer = post(&engine, "/v1/messages", weather(json!({"stream": true}))).await;
    let events = events(&answer.text());
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}})
    );
    let fragments: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| {
            assert_eq!(data["delta"]["type"], "input_json_delta");
            data["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(fragments.len(), 2);
    let input: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(input, json!({"city": "Paris"}));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert_eq!(events[events.len() - 1].0, "message_stop");
}

#[tokio::test]
async fn validation_errors_are_anthropic_shaped() {
    let engine = engine();
    let mut body = request(json!({}));
    body.as_object_mut().unwrap().remove("max_tokens");
    let answer = post(&engine, "/v1/messages", body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );

    let answer = post(&engine, "/v1/messages", request(json!({"model": "nope"}))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"]["type"], "not_found_error");
    assert_eq!(answer.json()["type"], "error");

    let answer = call(&engine, Method::POST, "/v1/messages", &[], None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn injected_faults_are_anthropic_shaped() {
    let engine = engine();
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        let body =
            request(json!({"mock": {"status": status, "message": "boom", "retry_after": 3}}));
        let answer = post(&engine, "/v1/messages", body).await;
        assert_eq!(answer.status.as_u16(), status);
        assert_eq!(answer.headers["retry-after"], "3");
        assert_eq!(
            answer.json(),
            json!({"type": "error", "error": {"type": kind, "message": "boom"}})
        );
    }

    let flaky = request(json!({"mock": {"status": 529, "fail_first": 1, "fail_key": "k"}}));
    let answer = post(&engine, "/v1/messages", flaky.clone()).await;
    assert_eq!(answer.json()["error"]["message"], "injected failure");
    assert_eq!(
        post(&engine, "/v1/messages", flaky).await.status,
        StatusCode::OK
    );

    let chunks = request(json!({"mock": {"chunks": 2}}));
    let answer = post(&engine, "/v1/messages", chunks).await.json();
    assert_eq!(answer["content"][0]["text"], reply::text(2));
}

#[tokio::test]
async fn reset_after_aborts_the_stream() {
    let engine = engine();
    let body = request(json!({"stream": true, "mock": {"reset_after": 3}}));
    let request = Request::post("/v1/messages")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = engine.router().oneshot(request).await.unwrap();
    let mut body = response.into_body();
    let mut frames = 0;
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(_) => frames += 1,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed);
    assert_eq!(frames, 3);
}

#[tokio::test(start_paused = true)]
async fn streams_at_the_requested_pace() {
    let engine = engine();
    let body = request(json!({"stream": true, "mock": {"chunks": 5, "tokens_per_second": 10.0}}));
    let started = tokio::time::Instant::now();
    let answer = post(&engine, "/v1/messages", body).await;
    assert_eq!(events(&answer.text()).len(), 11);
    // The first token comes at once, the other four 100 ms apart.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
}
