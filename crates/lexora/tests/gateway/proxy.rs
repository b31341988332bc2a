//! Every endpoint through the gateway, and what reaches the engine.

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn chat_completions_embeddings_and_models_are_proxied() {
    let engine = mock(&["--chunks", "4"]);
    let gw = gateway_for(&engine, "");

    let chat: Value = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [{"role": "user", "content": "say four words"}]
        }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "Lexora keeps the engines"
    );
    assert_eq!(chat["usage"]["prompt_tokens"], 3);
    assert_eq!(chat["usage"]["completion_tokens"], 4);

    let completion: Value = post(
        &format!("{}/v1/completions", gw.url),
        json!({
            "model": "m2", "prompt": "once upon", "max_tokens": 2
        }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(completion["choices"][0]["text"], "Lexora keeps");
    assert_eq!(completion["choices"][0]["finish_reason"], "length");

    let embeddings: Value = post(
        &format!("{}/v1/embeddings", gw.url),
        json!({
            "model": "m1", "input": ["a", "b c"]
        }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(embeddings["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        embeddings["data"][0]["embedding"].as_array().map(Vec::len),
        Some(8)
    );
    assert_eq!(embeddings["usage"]["prompt_tokens"], 3);

    let models = get_json(&format!("{}/v1/models", gw.url)).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_eq!(models["object"], "list");
}

#[tokio::test]
async fn unknown_fields_pass_and_extensions_are_stripped() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1",
            "messages": [{"role": "user", "content": "hi"}],
            "top_k": 20,
            "repetition_penalty": 1.05,
            "chat_template_kwargs": {"enable_thinking": false},
            "x_priority": "high",
            "x_user_id": "takahito",
            "x_timeout": 30
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let received = engine_requests(&engine).await;
    let body = received.last().expect("engine got the request");
    assert_eq!(body["top_k"], 20);
    assert_eq!(body["repetition_penalty"], 1.05);
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    for field in ["x_priority", "x_user_id", "x_timeout"] {
        assert!(
            body.get(field).is_none(),
            "{field} reached the engine: {body}"
        );
    }
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["users"]["takahito"]["requests"], 1, "{stats}");
}

#[tokio::test]
async fn extension_headers_are_read_and_not_forwarded() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let response = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-lexora-user", "header-user")
        .header("x-lexora-priority", "low")
        .json(&json!({"model": "m1", "messages": [], "user": "openai-user"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(
        stats["users"]["header-user"]["requests"], 1,
        "x-lexora-user wins over `user`: {stats}"
    );
    let body = engine_requests(&engine).await.pop().expect("request");
    assert_eq!(
        body["user"], "openai-user",
        "the OpenAI field itself is passed on"
    );
}

#[tokio::test]
async fn default_model_fills_requests_without_one() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "default_model: m2\n");
    let chat: Value = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"messages": []}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(chat["model"], "m2");
    assert_eq!(
        engine_requests(&engine).await.pop().expect("request")["model"],
        "m2"
    );
}

#[tokio::test]
async fn request_ids_are_kept_or_generated() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let url = format!("{}/v1/chat/completions", gw.url);
    let kept = client()
        .post(&url)
        .header("x-request-id", "trace-42")
        .json(&json!({"model": "m1", "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(kept.headers()["x-request-id"], "trace-42");
    let generated = post(&url, json!({"model": "m1", "messages": []})).await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(id.starts_with("lx-"), "{id}");
    let failed = post(&url, json!({"model": "nope", "messages": []})).await;
    assert!(
        failed.headers().contains_key("x-request-id"),
        "errors carry the id too"
    );
    // The access log names the request id.
    let found = eventually(std::time::Duration::from_secs(5), || {
        let log = gw.stderr();
        async move { log.contains("trace-42") }
    })
    .await;
    assert!(found, "{}", gw.stderr());
}

#[tokio::test]
async fn models_come_from_the_engine_when_not_configured() {
    let engine = mock(&[]);
    let gw = gateway(&format!(
        "health:\n  check_interval: 0.2\nvllm:\n  url: {}\n",
        engine.url
    ));
    let listed = eventually(std::time::Duration::from_secs(5), || async {
        let models = get_json(&format!("{}/v1/models", gw.url)).await;
        models["data"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await;
    assert!(listed, "the probe lists the engine's models");
    let ok = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "m2", "messages": []}),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let unknown = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "m3", "messages": []}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn health_stats_and_metrics_report_traffic() {
    let engine = mock(&["--chunks", "5"]);
    let gw = gateway_for(&engine, "");
    let ready = eventually(std::time::Duration::from_secs(5), || async {
        client()
            .get(format!("{}/health/ready", gw.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready);
    let health = get_json(&format!("{}/health", gw.url)).await;
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["backends"]["engine"]["status"], "reachable");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime"].is_string());

    for user in ["ann", "ann", "bob"] {
        let r = post(
            &format!("{}/v1/chat/completions", gw.url),
            json!({
                "model": "m1", "messages": [{"role": "user", "content": "one two"}], "user": user
            }),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let _ = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "zzz"}),
    )
    .await;

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["total_requests"], 4, "{stats}");
    assert_eq!(
        stats["total_tokens"], 21,
        "3 x (2 prompt + 5 completion): {stats}"
    );
    assert_eq!(stats["requests_per_minute"], 4);
    assert_eq!(stats["errors_last_hour"], 1);
    assert!(stats["avg_latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert_eq!(stats["models"]["m1"]["requests"], 3);
    // A model no backend serves is not a label of its own: clients could
    // invent names without end.
    assert_eq!(stats["models"]["(other)"]["requests"], 1, "{stats}");
    assert!(stats["models"].get("zzz").is_none(), "{stats}");
    assert_eq!(stats["users"]["ann"]["total_tokens"], 14);

    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains(r#"lexora_requests_total{endpoint="chat",model="m1",status="200"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lexora_tokens_total{model="m1",kind="completion"} 15"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("lexora_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lexora_errors_total{kind="model_not_found"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"lexora_requests_total{endpoint="chat",model="(other)",status="404"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("zzz"), "{metrics}");
    assert!(
        metrics.contains(r#"lexora_backend_up{backend="engine"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("lexora_requests_in_flight 0"), "{metrics}");
}

#[tokio::test]
async fn in_process_mock_backend_needs_no_engine() {
    let gw = gateway("backends:\n  demo:\n    type: mock\n    models:\n      - name: demo\n");
    let chat: Value = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "demo", "messages": []}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(chat["object"], "chat.completion");
    let ready = client()
        .get(format!("{}/health/ready", gw.url))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200);
}

/// Seed 004's per-engine field rewriting, and backends that do not serve
/// an API: the request goes to one that does, or gets a clear 400.
#[tokio::test]
async fn request_fields_are_rewritten_and_unserved_apis_refused() {
    let engine = mock(&[]);
    let gw = gateway_for(
        &engine,
        "    endpoints: [chat, completions]\n    request_fields:\n      rename: {max_completion_tokens: max_tokens}\n      remove: [logit_bias]\n      set:\n        cache_prompt: true\n        chat_template_kwargs: {enable_thinking: false}\n",
    );
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 5,
            "logit_bias": {"1": 2},
            "chat_template_kwargs": {"enable_thinking": true},
            "top_k": 20
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = engine_requests(&engine).await.pop().expect("request");
    assert_eq!(body["max_tokens"], 5, "{body}");
    assert!(body.get("max_completion_tokens").is_none(), "{body}");
    assert!(body.get("logit_bias").is_none(), "{body}");
    assert_eq!(body["cache_prompt"], true, "{body}");
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(body["top_k"], 20, "{body}");

    let response = post(
        &format!("{}/v1/embeddings", gw.url),
        json!({"model": "m1", "input": "hi"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.expect("json");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("/v1/embeddings"), "{error}");
    assert_eq!(
        engine_requests(&engine).await.len(),
        1,
        "nothing else reached the engine"
    );
}

/// `response_fields` rewrite complete answers and every streamed chunk,
/// and the usage is still counted.
#[tokio::test]
async fn response_fields_rewrite_answers_and_stream_chunks() {
    let engine = mock(&["--chunks", "3"]);
    let gw = gateway_for(
        &engine,
        "    response_fields:\n      rename:\n        choices.*.message.role: speaker\n        choices.*.delta.content: text\n      set: {served_by: lexora}\n",
    );
    let answer: serde_json::Value = post(
        &chat_url(&gw),
        json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(answer["served_by"], "lexora", "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["speaker"], "assistant",
        "{answer}"
    );
    assert!(
        answer["choices"][0]["message"].get("role").is_none(),
        "{answer}"
    );

    let text = post(
        &chat_url(&gw),
        json!({"model": "m1", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .text()
    .await
    .expect("text");
    let chunks = sse_payloads(&text);
    assert_eq!(chunks.last(), Some(&json!("[DONE]")), "{text}");
    let objects: Vec<&serde_json::Value> = chunks.iter().filter(|c| c.is_object()).collect();
    assert!(objects.iter().all(|c| c["served_by"] == "lexora"), "{text}");
    let texts = objects
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("text").is_some())
        .count();
    assert!(texts >= 3, "{text}");
    assert!(!text.contains(r#""content""#), "{text}");

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert!(stats["total_tokens"].as_u64().unwrap_or(0) > 0, "{stats}");
}
