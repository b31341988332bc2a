//! Anthropic message (non-streamed) → OpenAI `chat.completion`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::mapping::{finish_reason_for, AnthropicUsage};
use super::{fresh_id, to_bytes, unix_now, TranslateError};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageResponse {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    content: Vec<Value>,
    stop_reason: Option<String>,
    usage: Option<Value>,
}

/// Anthropic response (non-stream JSON) → OpenAI `chat.completion` JSON.
///
/// `model` is the model name reported to the client. Text blocks are
/// joined into `content`; `tool_use` blocks become `tool_calls` (arguments
/// are the JSON text of `input`); `thinking` blocks become the non-standard
/// but widely read `reasoning_content`. Usage: `prompt_tokens` counts
/// input, cache-write and cache-read tokens, `cached_tokens` the reads.
/// Fails only when the body is not an Anthropic message (an error body
/// goes through [`super::anthropic_error_to_openai`] instead).
pub fn anthropic_to_openai_response(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    anthropic_to_openai_response_at(body, model, unix_now())
}

/// [`anthropic_to_openai_response`] with a given `created` time.
pub(super) fn anthropic_to_openai_response_at(
    body: &[u8],
    model: &str,
    created: u64,
) -> Result<Vec<u8>, TranslateError> {
    let message: MessageResponse =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid_body("response", &e))?;
    if let Some(kind) = message.kind.as_deref().filter(|k| *k != "message") {
        return Err(TranslateError::new(
            None,
            format!("expected an Anthropic message, got type {kind:?}"),
        ));
    }

    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in &message.content {
        let str_field = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
        match str_field("type") {
            "text" => text.push_str(str_field("text")),
            "thinking" => reasoning.push_str(str_field("thinking")),
            "tool_use" => tool_calls.push(json!({
                "id": str_field("id"),
                "type": "function",
                "function": {
                    "name": str_field("name"),
                    "arguments": arguments_text(block.get("input")),
                },
            })),
            // redacted_thinking, server tool blocks: nothing an OpenAI
            // client can use.
            _ => {}
        }
    }

    // OpenAI sends null content for a pure tool-call answer.
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut reply = json!({"role": "assistant", "content": content, "refusal": null});
    if !reasoning.is_empty() {
        reply["reasoning_content"] = json!(reasoning);
    }
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }

    let usage = AnthropicUsage::from_value(message.usage.as_ref());
    let out = json!({
        "id": message.id.unwrap_or_else(|| fresh_id("chatcmpl-")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish_reason_for(message.stop_reason.as_deref()),
        }],
        "usage": usage.to_openai(),
    });
    Ok(to_bytes(&out))
}

/// A tool input as OpenAI's `arguments` string (compact JSON text).
pub(super) fn arguments_text(input: Option<&Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(input) => input.to_string(),
    }
}
