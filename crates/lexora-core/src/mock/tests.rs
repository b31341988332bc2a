//! In-process tests of the engine's routes: the request log, the Azure
//! routes, and the OpenAI shapes other tests rely on.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{reply, MockEngine};
use crate::config::MockConfig;

/// An engine serving `m1` and `m2`.
pub(super) fn engine() -> MockEngine {
    MockEngine::new(MockConfig {
        models: vec!["m1".into(), "m2".into()],
        ..MockConfig::default()
    })
}

/// One response, read whole.
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request through the engine's router.
pub(super) async fn call(
    engine: &MockEngine,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(value) => {
            request = request.header("content-type", "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    let response = engine
        .router()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub(super) async fn post(engine: &MockEngine, uri: &str, body: Value) -> Answer {
    call(engine, Method::POST, uri, &[], Some(body)).await
}

pub(super) async fn get_json(engine: &MockEngine, uri: &str) -> Value {
    call(engine, Method::GET, uri, &[], None).await.json()
}

#[tokio::test]
async fn log_records_method_path_query_headers_and_body() {
    let engine = engine();
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]});
    let answer = call(
        &engine,
        Method::POST,
        "/v1/chat/completions?trace=1&x=y",
        &[("Authorization", "Bearer sk-test"), ("X-Custom", "a")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    call(&engine, Method::GET, "/v1/models", &[], None).await;
    // The test's own traffic is not logged.
    call(&engine, Method::GET, "/health", &[], None).await;
    call(&engine, Method::GET, "/mock/stats", &[], None).await;

    let log = get_json(&engine, "/mock/log").await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    let first = &entries[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions?trace=1&x=y");
    assert_eq!(first["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(first["headers"]["x-custom"], "a");
    assert_eq!(first["headers"]["content-type"], "application/json");
    assert_eq!(first["body"], body);
    assert_eq!(entries[1]["method"], "GET");
    assert_eq!(entries[1]["path"], "/v1/models");
    assert_eq!(entries[1]["body"], Value::Null);

    let cleared = call(&engine, Method::DELETE, "/mock/log", &[], None).await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert_eq!(get_json(&engine, "/mock/log").await, json!({"entries": []}));
}

#[tokio::test]
async fn log_keeps_unknown_paths_bad_bodies_and_repeated_headers() {
    let engine = engine();
    let answer = call(&engine, Method::POST, "/v2/nowhere", &[], Some(json!({}))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let request = Request::post("/v1/chat/completions")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(Body::from("not json"))
        .unwrap();
    let answer = engine.router().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);

    let entries = get_json(&engine, "/mock/log").await["entries"].clone();
    assert_eq!(entries[0]["path"], "/v2/nowhere");
    assert_eq!(entries[1]["body"], "not json");
    assert_eq!(entries[1]["headers"]["x-multi"], "one, two");
}

#[tokio::test]
async fn log_is_bounded_newest_last() {
    let engine = engine();
    for i in 0..(super::RECENT_LIMIT + 4) {
        call(
            &engine,
            Method::GET,
            &format!("/v1/models?i={i}"),
            &[],
            None,
        )
        .await;
    }
    let entries = get_json(&engine, "/mock/log").await["entries"].clone();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), super::RECENT_LIMIT);
    assert_eq!(entries[0]["path"], "/v1/models?i=4");
    assert_eq!(
        entries[super::RECENT_LIMIT - 1]["path"],
        format!("/v1/models?i={}", super::RECENT_LIMIT + 3)
    );
}

#[tokio::test]
async fn recent_bodies_keep_their_shape() {
    let engine = engine();
    let body = json!({"model": "m2", "prompt": "one two"});
    post(&engine, "/v1/completions", body.clone()).await;
    assert_eq!(
        get_json(&engine, "/mock/requests").await,
        json!({"requests": [body]})
    );
    let stats = get_json(&engine, "/mock/stats").await;
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["completed_answers"], 1);
}

#[tokio::test]
async fn openai_shapes_and_errors_are_unchanged() {
    let engine = engine();
    let body =
        json!({"model": "m1", "max_tokens": 3, "messages": [{"role": "user", "content": "a b"}]});
    let answer = post(&engine, "/v1/chat/completions", body).await.json();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], reply::text(3));
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"], reply::usage(2, 3));

    let body = json!({"model": "m1", "stream": true, "mock": {"chunks": 2}, "messages": []});
    let stream = post(&engine, "/v1/chat/completions", body).await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    let text = stream.text();
    assert_eq!(text.matches("data: ").count(), 5, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));

    let body =
        json!({"model": "m1", "mock": {"status": 429, "message": "slow down", "retry_after": 7}});
    let answer = post(&engine, "/v1/chat/completions", body).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(
        answer.json(),
        reply::error("slow down", "RateLimitError", 429)
    );
    let answer = post(&engine, "/v1/chat/completions", json!({"model": "nope"})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"]["type"], "NotFoundError");
}

#[tokio::test]
async fn azure_routes_need_api_version() {
    let engine = engine();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for path in ["chat/completions", "completions", "embeddings"] {
        let uri = format!("/openai/deployments/gpt4o/{path}");
        let answer = post(&engine, &uri, body.clone()).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            answer.json(),
            json!({"error": {"code": "404", "message": "Resource not found"}})
        );
    }
    // Refused at the edge: logged, but not among the bodies answered.
    assert_eq!(
        get_json(&engine, "/mock/log").await["entries"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        get_json(&engine, "/mock/requests").await,
        json!({"requests": []})
    );
}

#[tokio::test]
async fn azure_routes_answer_as_the_deployment() {
    let engine = engine();
    let query = "?api-version=2024-10-21";
    let body = json!({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 2});
    let answer = call(
        &engine,
        Method::POST,
        &format!("/openai/deployments/gpt4o/chat/completions{query}"),
        &[("api-key", "azure-secret")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["model"], "gpt4o");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], reply::text(2));
    assert_eq!(answer["usage"], reply::usage(2, 2));

    // A body naming a model is answered (and checked) as on OpenAI routes.
    let named = json!({"model": "m2", "prompt": "x"});
    let uri = format!("/openai/deployments/gpt4o/completions{query}");
    let answer = post(&engine, &uri, named).await.json();
    assert_eq!(
        (answer["model"].clone(), answer["object"].clone()),
        (json!("m2"), json!("text_completion"))
    );
    let answer = post(&engine, &uri, json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let uri = format!("/openai/deployments/emb/embeddings{query}");
    let answer = post(&engine, &uri, json!({"input": ["a", "b c"]}))
        .await
        .json();
    assert_eq!(answer["model"], "emb");
    assert_eq!(answer["data"].as_array().unwrap().len(), 2);
    assert_eq!(answer["usage"]["prompt_tokens"], 3);

    let uri = format!("/openai/deployments/gpt4o/chat/completions{query}");
    let stream = json!({"stream": true, "mock": {"chunks": 1}, "messages": []});
    let text = post(&engine, &uri, stream).await.text();
    assert!(text.contains("\"model\":\"gpt4o\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));

    let first = &get_json(&engine, "/mock/log").await["entries"][0];
    assert_eq!(
        first["path"],
        format!("/openai/deployments/gpt4o/chat/completions{query}")
    );
    assert_eq!(first["headers"]["api-key"], "azure-secret");
    assert_eq!(first["body"], body);
}

#[tokio::test]
async fn stamped_stream_events_carry_the_time_they_were_written() {
    let stamping = MockEngine::new(MockConfig {
        models: vec!["m".into()],
        chunks: 3,
        tokens_per_second: 200.0,
        stamp_events: true,
        ..MockConfig::default()
    });
    let micros = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let before = micros();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let answer = post(&stamping, "/v1/chat/completions", body).await;
    let after = micros();
    let events: Vec<Value> = answer
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let stamps: Vec<u64> = events
        .iter()
        .map(|event| event["mock_sent_us"].as_u64().unwrap())
        .collect();
    // Every event names the request's arrival: one time, before any write.
    let received = events[0]["mock_received_us"].as_u64().unwrap();
    assert!(
        events.iter().all(|e| e["mock_received_us"] == received),
        "{}",
        answer.text()
    );
    assert!(
        before <= received && received <= stamps[0],
        "{before} {received} {stamps:?}"
    );
    // Role, three tokens, finish: each stamped, in order, within the call.
    assert_eq!(stamps.len(), 5, "{}", answer.text());
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    assert!(
        before <= stamps[0] && stamps[4] <= after,
        "{before} {stamps:?} {after}"
    );
    // Paced at 5 ms a token: the last token is written ≥ 10 ms after the first.
    assert!(stamps[3] - stamps[1] >= 10_000, "{stamps:?}");
    // Unstamped by default.
    let plain = post(
        &engine(),
        "/v1/chat/completions",
        json!({"model": "m1", "stream": true, "messages": []}),
    )
    .await;
    assert!(!plain.text().contains("mock_"), "{}", plain.text());
}
