//! Provider adapters: the exact requests Lexora sends (path, headers, body)
//! to Azure, Anthropic and OpenAI-compatible servers, and the translation of
//! their answers; the inbound Anthropic Messages API.

use serde_json::{json, Value};

use crate::support::*;

/// The POST requests the mock received (health probes left out): method,
/// path, headers, body.
async fn engine_log(engine: &Process) -> Vec<Value> {
    let value = get_json(&format!("{}/mock/log", engine.url)).await;
    let entries = value["entries"].as_array().cloned().unwrap_or_default();
    entries
        .into_iter()
        .filter(|e| e["method"] == "POST")
        .collect()
}

fn base(extra_backend: &str, engine: &Process) -> String {
    format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\nbackends:\n  provider:\n    url: {}\n{extra_backend}",
        engine.url
    )
}

#[tokio::test]
async fn azure_gets_deployment_urls_api_version_and_api_key() {
    let engine = mock(&["--model", "prod-4o"]);
    let gw = gateway(&base(
        "    type: azure\n    api_version: 2024-10-21\n    api_key: az-secret-key\n    models:\n      - name: gpt-4o\n        upstream: prod-4o\n",
        &engine,
    ));
    let answer = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let entry = engine_log(&engine).await.pop().expect("logged");
    assert_eq!(
        entry["path"],
        "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(entry["headers"]["api-key"], "az-secret-key");
    assert!(entry["headers"].get("authorization").is_none(), "{entry}");
    assert_eq!(
        entry["body"]["model"], "prod-4o",
        "the public name is mapped to the deployment"
    );
    assert!(!gw.stderr().contains("az-secret-key"));
}

#[tokio::test]
async fn openai_compatible_gets_bearer_key_extra_headers_and_mapped_model() {
    let engine = mock(&["--model", "deepseek-chat"]);
    let gw = gateway(&base(
        "    type: deepseek\n    api_key: sk-ds-secret\n    headers:\n      x-team: gpu-sharing\n    models:\n      - name: deepseek/deepseek-v3.2\n        upstream: deepseek-chat\n",
        &engine,
    ));
    let answer: Value = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "deepseek/deepseek-v3.2", "messages": [], "top_k": 3}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(answer["object"], "chat.completion");
    let entry = engine_log(&engine).await.pop().expect("logged");
    assert_eq!(entry["path"], "/v1/chat/completions");
    assert_eq!(entry["headers"]["authorization"], "Bearer sk-ds-secret");
    assert_eq!(entry["headers"]["x-team"], "gpu-sharing");
    assert_eq!(entry["body"]["model"], "deepseek-chat");
    assert_eq!(entry["body"]["top_k"], 3, "unknown fields still pass");
}

/// The engine gets one header of each name: a configured header replaces
/// the credentials' and Lexora's own of the same name.
#[tokio::test]
async fn configured_headers_replace_the_credentials_and_lexoras_own() {
    let engine = mock(&["--model", "m"]);
    let gw = gateway(&base(
        "    api_key: sk-from-key
    headers:
      authorization: Bearer from-headers
      accept: text/plain
      x-team: gpu
    models: [{name: m}]
",
        &engine,
    ));
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "trace-42")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 200);
    let entry = engine_log(&engine).await.pop().expect("logged");
    let headers = &entry["headers"];
    assert_eq!(headers["authorization"], "Bearer from-headers", "{entry}");
    assert_eq!(headers["accept"], "text/plain", "{entry}");
    assert_eq!(headers["x-team"], "gpu");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"], "trace-42");
    let port = engine.url.rsplit(':').next().expect("port");
    assert_eq!(headers["host"], format!("127.0.0.1:{port}"));
    assert_eq!(
        headers["content-length"],
        entry["body"].to_string().len().to_string()
    );
}

#[tokio::test]
async fn provider_keys_come_from_the_environment_when_not_configured() {
    let engine = mock(&["--model", "claude-x"]);
    let gw = gateway_with_env(
        &base(
            "    type: anthropic\n    models: [{name: claude-x}]\n",
            &engine,
        ),
        &[("ANTHROPIC_API_KEY", "sk-ant-from-env")],
    );
    let r = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let entry = engine_log(&engine).await.pop().expect("logged");
    assert_eq!(entry["headers"]["x-api-key"], "sk-ant-from-env");
}

#[tokio::test]
async fn anthropic_backends_are_translated_both_ways() {
    let engine = mock(&["--model", "claude-x", "--chunks", "4"]);
    let gw = gateway(&base(
        "    type: anthropic\n    api_key: sk-ant-secret\n    default_max_tokens: 333\n    models: [{name: claude-x}, {name: ghost}]\n",
        &engine,
    ));
    let url = format!("{}/v1/chat/completions", gw.url);
    let answer: Value = post(&url, json!({
        "model": "claude-x",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    }))
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Lexora keeps the engines"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 4);
    assert_eq!(answer["usage"]["completion_tokens"], 4);

    let entry = engine_log(&engine).await.pop().expect("logged");
    assert_eq!(entry["path"], "/v1/messages");
    assert_eq!(entry["headers"]["x-api-key"], "sk-ant-secret");
    assert_eq!(entry["headers"]["anthropic-version"], "2023-06-01");
    assert_eq!(entry["body"]["system"], "be brief");
    assert_eq!(entry["body"]["max_tokens"], 333);
    assert_eq!(entry["body"]["messages"][0]["role"], "user");

    // Streamed: Anthropic events become OpenAI chunks.
    let text = post(&url, json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}))
        .await
        .text()
        .await
        .expect("text");
    let payloads = sse_payloads(&text);
    let content: String = payloads
        .iter()
        .filter_map(|p| p["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Lexora keeps the engines", "{text}");
    assert_eq!(payloads.last(), Some(&Value::String("[DONE]".into())));
    assert!(
        payloads
            .iter()
            .any(|p| p["usage"]["completion_tokens"] == 4),
        "{text}"
    );

    // Tools: a tool_use block becomes an OpenAI tool call.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let called: Value = post(&url, json!({"model": "claude-x", "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": tools}))
        .await
        .json()
        .await
        .expect("json");
    let call = &called["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{called}");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
            .expect("json args");
    assert_eq!(arguments["city"], "Paris");
    assert_eq!(called["choices"][0]["finish_reason"], "tool_calls");

    // Errors keep their status and come back OpenAI-shaped (the provider
    // does not serve `ghost`, which the gateway lists).
    let failed = post(
        &url,
        json!({"model": "ghost", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(failed.status(), 404);
    let body: Value = failed.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ghost")),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert!(
        stats["total_tokens"].as_u64().is_some_and(|t| t >= 8 + 5),
        "usage is counted: {stats}"
    );
}

#[tokio::test]
async fn messages_api_serves_openai_engines() {
    let engine = mock(&["--chunks", "3"]);
    let gw = gateway_for(&engine, "");
    let url = format!("{}/v1/messages", gw.url);
    let answer: Value = post(
        &url,
        json!({
            "model": "m1", "max_tokens": 50, "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
        }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"][0]["type"], "text");
    assert_eq!(answer["content"][0]["text"], "Lexora keeps the");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["usage"]["output_tokens"], 3);

    let sent = engine_requests(&engine).await.pop().expect("request");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(sent["max_tokens"], 50);

    let text = post(&url, json!({"model": "m1", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .text()
        .await
        .expect("text");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{text}");
    assert_eq!(events.last(), Some(&"message_stop"), "{text}");
    assert!(events.contains(&"content_block_delta"));
    assert!(text.contains("\"output_tokens\":3"), "{text}");

    let missing = post(
        &url,
        json!({"model": "nope", "max_tokens": 5, "messages": []}),
    )
    .await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(
        body["type"], "error",
        "Anthropic-shaped errors on /v1/messages: {body}"
    );
    assert_eq!(body["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn messages_api_passes_natively_to_anthropic_backends() {
    let engine = mock(&["--model", "claude-x"]);
    let gw = gateway(&base(
        "    type: anthropic\n    api_key: sk-ant-secret\n    models: [{name: claude-x}]\n",
        &engine,
    ));
    let body = json!({"model": "claude-x", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], "x_user_id": "carol"});
    let answer: Value = post(&format!("{}/v1/messages", gw.url), body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["type"], "message", "{answer}");
    let entry = engine_log(&engine).await.pop().expect("logged");
    assert_eq!(entry["path"], "/v1/messages");
    assert!(entry["body"].get("x_user_id").is_none());
    assert_eq!(entry["body"]["max_tokens"], 20);
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(
        stats["users"]["carol"]["completion_tokens"],
        answer["usage"]["output_tokens"]
    );

    let counted: Value = post(
        &format!("{}/v1/messages/count_tokens", gw.url),
        json!({
            "model": "claude-x", "messages": [{"role": "user", "content": "three words here"}]
        }),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(counted["input_tokens"], 3, "{counted}");
}

#[tokio::test]
async fn count_tokens_needs_a_messages_speaking_backend() {
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let refused = post(
        &format!("{}/v1/messages/count_tokens", gw.url),
        json!({"model": "m1", "messages": []}),
    )
    .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn ollama_uses_its_openai_endpoint_and_streams_usage() {
    let engine = mock(&["--model", "llama3", "--chunks", "2"]);
    let gw = gateway(&base(
        "    type: ollama\n    models: [{name: llama3}]\n",
        &engine,
    ));
    let text = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({"model": "llama3", "messages": [], "stream": true}),
    )
    .await
    .text()
    .await
    .expect("text");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let entry = engine_log(&engine).await.pop().expect("logged");
    assert_eq!(entry["path"], "/v1/chat/completions");
    assert!(
        entry["headers"].get("authorization").is_none(),
        "Ollama needs no key: {entry}"
    );
    assert_eq!(entry["body"]["stream_options"]["include_usage"], true);
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["total_completion_tokens"], 2, "{stats}");
}

#[tokio::test]
async fn apis_a_provider_lacks_go_to_the_next_backend_of_the_model() {
    // The Anthropic provider comes first for `m1`; it has no embeddings
    // or completions, so those go to the engine written after it.
    let anthropic = mock(&[]);
    let engine = mock(&[]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\nbackends:\n  claude:\n    type: anthropic\n    url: {}\n    api_key: sk-ant-test\n    models: [{{name: m1}}]\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        anthropic.url, engine.url
    ));
    let embedded = post(
        &format!("{}/v1/embeddings", gw.url),
        json!({"model": "m1", "input": "hi"}),
    )
    .await;
    assert_eq!(embedded.status(), 200);
    let completed = post(
        &format!("{}/v1/completions", gw.url),
        json!({"model": "m1", "prompt": "hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(completed.status(), 200);
    let chatted = post(&chat_url(&gw), json!({"model": "m1", "messages": []})).await;
    assert_eq!(chatted.status(), 200);
    let to_engine = engine_requests(&engine).await;
    assert_eq!(to_engine.len(), 2, "{to_engine:?}");
    // The chat went to the first backend, translated to Messages.
    let to_anthropic = engine_requests(&anthropic).await;
    assert_eq!(to_anthropic.len(), 1, "{to_anthropic:?}");
    assert!(
        to_anthropic[0]["max_tokens"].is_u64(),
        "{}",
        to_anthropic[0]
    );
}
