//! Non-streamed responses both ways.

use super::super::openai_to_anthropic_response;
use super::super::to_openai_response::anthropic_to_openai_response_at;
use super::*;

#[test]
fn anthropic_response_fixtures() {
    for (name, body) in fixtures("anthropic_response") {
        let out = anthropic_to_openai_response_at(&body, "claude-sonnet-4-5", CREATED);
        snapshot_json("anthropic_response", &name, &outcome(out));
    }
}

#[test]
fn openai_response_fixtures() {
    for (name, body) in fixtures("openai_response") {
        let out = openai_to_anthropic_response(&body, "gpt-4o");
        snapshot_json("openai_response", &name, &outcome(out));
    }
}

#[test]
fn every_stop_reason_maps_to_its_finish_reason() {
    let cases = [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ];
    for (stop_reason, finish_reason) in cases {
        let body =
            json!({"type": "message", "id": "msg_1", "content": [], "stop_reason": stop_reason});
        let out = anthropic_to_openai_response_at(body.to_string().as_bytes(), "m", CREATED);
        let out = json(&out.expect("translates"));
        assert_eq!(
            out["choices"][0]["finish_reason"], finish_reason,
            "{stop_reason}"
        );
    }
}

#[test]
fn every_finish_reason_maps_to_its_stop_reason() {
    let cases = [
        (json!("stop"), "end_turn"),
        (json!("length"), "max_tokens"),
        (json!("tool_calls"), "tool_use"),
        (json!("function_call"), "tool_use"),
        (json!("content_filter"), "refusal"),
        (Value::Null, "end_turn"),
    ];
    for (finish_reason, stop_reason) in cases {
        let body = json!({"id": "x", "choices": [{"index": 0, "message": {"content": "a"}, "finish_reason": finish_reason}]});
        let out = openai_to_anthropic_response(body.to_string().as_bytes(), "m");
        assert_eq!(json(&out.expect("translates"))["stop_reason"], stop_reason);
    }
}

#[test]
fn cache_tokens_count_in_prompt_tokens() {
    let out = anthropic_to_openai_response_at(
        &fixture("anthropic_response", "cache_usage.json"),
        "m",
        CREATED,
    );
    let usage = json(&out.expect("translates"))["usage"].clone();
    assert_eq!(usage["prompt_tokens"], 21 + 188_086 + 2000);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 2000);
    assert_eq!(usage["completion_tokens"], 393);
    assert_eq!(usage["total_tokens"], 21 + 188_086 + 2000 + 393);
}

#[test]
fn invalid_tool_arguments_are_kept_raw() {
    let out = openai_to_anthropic_response(
        &fixture("openai_response", "invalid_tool_arguments.json"),
        "m",
    );
    let content = json(&out.expect("a bad tool call does not fail the answer"))["content"].clone();
    assert_eq!(content[1]["input"], json!({"_raw": "{\"location\": \"Par"}));
    assert_eq!(content[2]["input"], json!({}));
    assert_eq!(content[3]["input"], json!({"_raw": "[1, 2]"}));
}
