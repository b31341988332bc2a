//! A client that asks anything (JSON of every shape under the keys
//! Lexora reads, on every endpoint, for an OpenAI engine and for an
//! Anthropic provider) gets an answer or a 4xx in its API's shape, never
//! a 5xx of the gateway's own making, and never the provider's key.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use super::{check_answer, check_log, exchange, CASES, PROVIDER_KEY};
use crate::support::*;

/// Keys of the requests Lexora reads, its extensions and some others.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "prompt",
    "input",
    "system",
    "role",
    "content",
    "type",
    "text",
    "tools",
    "x_priority",
    "x_user_id",
    "x_timeout",
    "user",
    "temperature",
    "n",
    "stop",
    "tool_calls",
    "tool_call_id",
    "function",
    "name",
    "arguments",
    "parameters",
    "tool_choice",
    "image_url",
    "url",
    "response_format",
    "logprobs",
    "reasoning_effort",
    "tool_use_id",
    "input",
    "input_schema",
    "source",
    "media_type",
    "data",
    "thinking",
    "budget_tokens",
    "stop_sequences",
    "top_k",
    "metadata",
    "cache_control",
    "id",
];

/// JSON values built from those keys, the model's name, the priorities
/// and numbers at the edges.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Value::from),
        prop_oneof![Just(1e300), Just(-0.5), Just(0.25)].prop_map(Value::from),
        prop_oneof![
            Just("m1"),
            Just("m2"),
            Just("high"),
            Just("low"),
            Just("user"),
            Just("assistant"),
            Just("text"),
            Just("c"),
            Just("system"),
            Just("developer"),
            Just("tool"),
            Just("function"),
            Just("tool_use"),
            Just("tool_result"),
            Just("image"),
            Just("image_url"),
            Just("base64"),
            Just("thinking"),
            Just("auto"),
            Just("any"),
            Just("none"),
            Just("json_object"),
            Just("data:image/png;base64,AAAA"),
            Just("{\"a\":1}"),
            Just(""),
            Just("\u{0}\u{fffd}\u{1F600}"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |members| Value::Object(
                    members
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value))
                        .collect()
                )
            ),
        ]
    })
}

/// A request body: mostly an object that names a model (served by an
/// OpenAI engine or, for `c`, by the Anthropic provider) and has messages,
/// its members otherwise anything.
fn request_body() -> impl Strategy<Value = Value> {
    let members = proptest::collection::vec((proptest::sample::select(KEYS), json_value()), 0..6);
    prop_oneof![
        8 => (
            members,
            proptest::sample::select(&["m1", "c", ""][..]),
            proptest::bool::weighted(0.8),
        )
            .prop_map(|(members, model, with_messages)| {
                let mut object = serde_json::Map::new();
                if !model.is_empty() {
                    object.insert("model".into(), json!(model));
                }
                if with_messages {
                    // What both APIs need: messages, and (for Anthropic's)
                    // a limit on the answer.
                    object.insert(
                        "messages".into(),
                        json!([{"role": "user", "content": "hi"}]),
                    );
                    object.insert("max_tokens".into(), json!(16));
                    object.insert("prompt".into(), json!("hi"));
                    object.insert("input".into(), json!("hi"));
                }
                for (key, value) in members {
                    object.insert(key.to_owned(), value);
                }
                Value::Object(object)
            }),
        1 => json_value(),
    ]
}

#[tokio::test]
async fn whatever_a_client_asks_it_gets_an_answer_or_an_error_in_its_apis_shape() {
    let engine = mock(&["--chunks", "3"]);
    // Model `c` is served by the mock's Anthropic API as a provider would
    // be, so OpenAI requests to it are translated on the way.
    let gw = gateway_for(
        &engine,
        &format!(
            "  claude:\n    type: anthropic\n    url: {}\n    api_key: {PROVIDER_KEY}\n    models: [{{name: c, upstream: m1}}]\n",
            engine.url
        ),
    );
    let paths: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ];
    let mut runner = TestRunner::new(Config::default());
    let strategy = (request_body(), proptest::sample::select(paths));
    let client = client();
    for _ in 0..CASES {
        let (body, path) = strategy.new_tree(&mut runner).expect("case").current();
        let shown = format!("{path} {body}");
        let request = client.post(format!("{}{path}", gw.url)).json(&body);
        let (status, answer) = exchange(request, &shown).await;
        // The client's mistakes are its own: a 4xx, never a 5xx.
        let text = String::from_utf8_lossy(&answer);
        assert!(status < 500, "{status} {text} to {shown}");
        check_answer(status, &answer, path.starts_with("/v1/messages"), &shown);
    }
    check_log(&gw);
}
