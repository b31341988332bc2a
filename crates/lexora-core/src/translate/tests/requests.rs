//! Requests both ways: OpenAI → Anthropic and Anthropic → OpenAI.

use super::super::{anthropic_to_openai_request, openai_to_anthropic_request};
use super::*;

const MODEL: &str = "claude-sonnet-4-5";
const DEFAULT_MAX_TOKENS: u64 = 4096;

fn to_anthropic(body: &[u8]) -> Result<Value, TranslateError> {
    openai_to_anthropic_request(body, MODEL, DEFAULT_MAX_TOKENS).map(|b| json(&b))
}

#[test]
fn openai_request_fixtures() {
    for (name, body) in fixtures("openai_request") {
        let out = openai_to_anthropic_request(&body, MODEL, DEFAULT_MAX_TOKENS);
        snapshot_json("openai_request", &name, &outcome(out));
    }
}

#[test]
fn anthropic_request_fixtures() {
    for (name, body) in fixtures("anthropic_request") {
        let out = anthropic_to_openai_request(&body);
        snapshot_json("anthropic_request", &name, &outcome(out));
    }
}

#[test]
fn n_greater_than_one_is_rejected_naming_the_param() {
    let err = to_anthropic(&fixture("openai_request", "n_greater_than_one.json"))
        .expect_err("n = 3 cannot be expressed");
    assert_eq!(err.param, Some("n"));
    // n = 1 is the default and fine.
    let ok = to_anthropic(br#"{"messages":[{"role":"user","content":"hi"}],"n":1}"#);
    assert!(ok.is_ok());
}

#[test]
fn invalid_tool_arguments_are_rejected_naming_the_call() {
    let err = to_anthropic(&fixture("openai_request", "invalid_tool_arguments.json"))
        .expect_err("arguments are cut-off JSON");
    assert_eq!(err.param, Some("messages"));
    assert!(err.message.contains("call_bad"), "{}", err.message);
}

#[test]
fn max_tokens_default_and_precedence() {
    let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(to_anthropic(body).expect("ok")["max_tokens"], 4096);
    let body = br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":7}"#;
    assert_eq!(to_anthropic(body).expect("ok")["max_tokens"], 7);
    let body = br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":7,"max_completion_tokens":9}"#;
    assert_eq!(to_anthropic(body).expect("ok")["max_tokens"], 9);
}

#[test]
fn turns_alternate_and_tool_results_lead_their_turn() {
    for (name, body) in fixtures("openai_request") {
        let Ok(out) = to_anthropic(&body) else {
            continue;
        };
        let messages = out["messages"].as_array().expect("messages");
        for pair in messages.windows(2) {
            assert_ne!(
                pair[0]["role"], pair[1]["role"],
                "{name}: roles must alternate"
            );
        }
        for message in messages {
            let Some(blocks) = message["content"].as_array() else {
                continue;
            };
            let first_other = blocks.iter().position(|b| b["type"] != "tool_result");
            let last_result = blocks.iter().rposition(|b| b["type"] == "tool_result");
            if let (Some(other), Some(result)) = (first_other, last_result) {
                assert!(result < other, "{name}: tool results must come first");
            }
        }
    }
}

#[test]
fn unknown_fields_do_not_fail_either_direction() {
    let body = br#"{"messages":[{"role":"user","content":"hi","x":1}],"whatever":{"a":[1]},"tools":null,"stop":null}"#;
    assert!(to_anthropic(body).is_ok());
    let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"whatever":true,"container":"c"}"#;
    assert!(anthropic_to_openai_request(body).is_ok());
}
