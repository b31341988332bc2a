//! OpenAI `chat.completion` → Anthropic message, for Anthropic clients in
//! front of OpenAI-compatible engines.

use serde::Deserialize;
use serde_json::{json, Value};

use super::mapping::{stop_reason_for, OpenAiUsage};
use super::{fresh_id, to_bytes, TranslateError};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatCompletion {
    id: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    index: u64,
    message: ReplyMessage,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplyMessage {
    content: Option<Value>,
    reasoning_content: Option<String>,
    /// What some engines (vLLM, OpenRouter) call `reasoning_content`.
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolCall {
    id: Option<String>,
    function: FunctionCall,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FunctionCall {
    name: String,
    arguments: Option<String>,
}

/// OpenAI `chat.completion` → Anthropic message response.
///
/// The message has an id `msg_<upstream id>`, `type: "message"`, role
/// `assistant`, and content blocks in Anthropic's order: `thinking` (from
/// `reasoning_content`, with an empty signature), `text`, `tool_use`.
/// Tool arguments that are not a JSON object are kept as
/// `{"_raw": "<arguments>"}` rather than failing the answer. `stop_reason`
/// maps back from `finish_reason`; usage splits cached tokens out of
/// `input_tokens` into `cache_read_input_tokens`. Only the first choice is
/// used. Fails only when the body is not JSON of a completion's shape.
pub fn openai_to_anthropic_response(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let completion: ChatCompletion =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid_body("response", &e))?;
    let choice = completion
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(completion.choices.first());

    let mut content = Vec::new();
    let mut stop_reason = stop_reason_for(choice.and_then(|c| c.finish_reason.as_deref()));
    if let Some(choice) = choice {
        let message = &choice.message;
        let reasoning = message
            .reasoning_content
            .as_ref()
            .or(message.reasoning.as_ref());
        if let Some(reasoning) = reasoning.filter(|r| !r.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
        }
        let text = reply_text(message.content.as_ref());
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        if let Some(refusal) = message.refusal.as_ref().filter(|r| !r.is_empty()) {
            content.push(json!({"type": "text", "text": refusal}));
            stop_reason = "refusal";
        }
        for call in message.tool_calls.as_deref().unwrap_or_default() {
            content.push(json!({
                "type": "tool_use",
                "id": call.id.clone().unwrap_or_else(|| fresh_id("toolu_")),
                "name": call.function.name,
                "input": tool_input(call.function.arguments.as_deref()),
            }));
        }
    }

    let id = match &completion.id {
        Some(id) => format!("msg_{id}"),
        None => fresh_id("msg_"),
    };
    let usage = OpenAiUsage::from_value(completion.usage.as_ref()).unwrap_or_default();
    let out = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    });
    Ok(to_bytes(&out))
}

/// The reply text: a string, or the text of content parts.
fn reply_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Tool-call arguments → a tool_use `input`. Anthropic requires an object;
/// anything else the model produced is kept under `_raw` so the client can
/// still see (and report) it.
pub(super) fn tool_input(arguments: Option<&str>) -> Value {
    let arguments = arguments.unwrap_or("").trim();
    if arguments.is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({ "_raw": arguments }),
    }
}
