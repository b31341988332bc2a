use super::*;

fn azure() -> Adapter {
    Adapter::Azure {
        api_version: "2024-10-21".into(),
    }
}

#[test]
fn azure_paths_name_the_deployment_and_version() {
    let out = azure()
        .prepare(
            Endpoint::ChatCompletions,
            &Bytes::from_static(b"{\"model\":\"gpt-4o\"}"),
            Some("prod gpt4o"),
            false,
        )
        .expect("prepared");
    assert_eq!(
        out.path,
        "/openai/deployments/prod%20gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(out.wire, Wire::OpenAi);
    let err = azure()
        .prepare(
            Endpoint::Embeddings,
            &Bytes::from_static(b"{}"),
            None,
            false,
        )
        .expect_err("no model");
    assert_eq!(err.status(), 400);
}

#[test]
fn model_ids_are_mapped_only_when_renamed() {
    let body = Bytes::from_static(b"{\"model\":\"public\",\"x\":1}");
    let openai = Adapter::OpenAi {
        native_messages: false,
    };
    let same = openai
        .prepare(Endpoint::ChatCompletions, &body, Some("public"), false)
        .expect("ok");
    assert_eq!(same.body, body);
    let renamed = openai
        .prepare(Endpoint::ChatCompletions, &body, Some("provider-id"), true)
        .expect("ok");
    assert_eq!(
        renamed.body,
        Bytes::from_static(b"{\"model\":\"provider-id\",\"x\":1}")
    );
}

#[test]
fn anthropic_backends_take_chat_and_messages_only() {
    let anthropic = Adapter::Anthropic {
        version: "2023-06-01".into(),
        default_max_tokens: 1024,
    };
    let chat =
        Bytes::from_static(br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#);
    let out = anthropic
        .prepare(Endpoint::ChatCompletions, &chat, Some("claude-x"), true)
        .expect("ok");
    assert_eq!(out.path, "/v1/messages");
    assert_eq!(out.wire, Wire::Anthropic);
    let body: serde_json::Value = serde_json::from_slice(&out.body).expect("json");
    assert_eq!(body["model"], "claude-x");
    assert_eq!(body["max_tokens"], 1024);
    assert!(anthropic
        .prepare(Endpoint::Embeddings, &chat, Some("claude"), false)
        .is_err());
}

#[test]
fn messages_reach_openai_engines_translated_or_natively() {
    let messages = Bytes::from_static(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let plain = Adapter::OpenAi {
        native_messages: false,
    };
    let out = plain
        .prepare(Endpoint::Messages, &messages, Some("m"), false)
        .expect("ok");
    assert_eq!(out.path, "/v1/chat/completions");
    assert_eq!(out.wire, Wire::OpenAi);
    let llama = Adapter::OpenAi {
        native_messages: true,
    };
    let out = llama
        .prepare(Endpoint::Messages, &messages, Some("m"), false)
        .expect("ok");
    assert_eq!(out.path, "/v1/messages");
    assert_eq!(out.body, messages);
}
