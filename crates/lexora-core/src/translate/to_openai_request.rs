//! Anthropic Messages request → OpenAI chat request, for Anthropic clients
//! in front of OpenAI-compatible engines.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::mapping::{data_url, effort_for_budget};
use super::to_openai_response::arguments_text;
use super::{to_bytes, TranslateError};

/// The fields of an Anthropic request that have an OpenAI meaning.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessagesRequest {
    model: Option<String>,
    messages: Vec<Message>,
    system: Option<Value>,
    max_tokens: Option<u64>,
    metadata: Option<Metadata>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    tools: Option<Vec<Tool>>,
    tool_choice: Option<ToolChoice>,
    thinking: Option<Thinking>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message {
    role: String,
    content: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    user_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Thinking {
    #[serde(rename = "type")]
    kind: String,
    budget_tokens: Option<u64>,
}

/// Anthropic Messages request → OpenAI chat request.
///
/// `system` becomes a leading system message; content blocks become
/// content parts (base64 images as data URLs, URL images as `image_url`);
/// `tool_use` blocks become `tool_calls` and `tool_result` blocks `tool`
/// messages (placed first, as OpenAI wants them right after the call);
/// `stop_sequences` → `stop`; `metadata.user_id` → `user`; `stream` also
/// asks for `stream_options.include_usage` so usage can be settled;
/// `thinking` is approximated as `reasoning_effort`. The `model` is kept
/// (the caller rewrites it if the engine names it differently). Fails on
/// server tools and content blocks OpenAI cannot carry.
pub fn anthropic_to_openai_request(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let req: MessagesRequest =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid_body("request", &e))?;

    let mut messages = Vec::new();
    let system = system_text(req.system.as_ref())?;
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &req.messages {
        match message.role.as_str() {
            "user" => user_messages(&message.content, &mut messages)?,
            "assistant" => messages.push(assistant_message(&message.content)?),
            other => {
                return Err(TranslateError::new(
                    Some("messages"),
                    format!("message role {other:?} is not user or assistant"),
                ))
            }
        }
    }

    let mut out = Map::new();
    if let Some(model) = req.model {
        out.insert("model".into(), json!(model));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max_tokens) = req.max_tokens {
        out.insert("max_tokens".into(), json!(max_tokens));
    }
    for (key, value) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if let Some(value) = value {
            out.insert(key.into(), json!(value));
        }
    }
    if let Some(top_k) = req.top_k {
        out.insert("top_k".into(), json!(top_k));
    }
    if let Some(stop) = req.stop_sequences.filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(stop));
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = req.metadata.and_then(|m| m.user_id) {
        out.insert("user".into(), json!(user));
    }
    if let Some(thinking) = req.thinking.filter(|t| t.kind == "enabled") {
        let effort = effort_for_budget(thinking.budget_tokens.unwrap_or(0));
        out.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(tools) = req.tools.filter(|t| !t.is_empty()) {
        out.insert("tools".into(), convert_tools(&tools)?);
    }
    if let Some(choice) = &req.tool_choice {
        convert_tool_choice(choice, &mut out)?;
    }
    Ok(to_bytes(&Value::Object(out)))
}

/// `system` (a string or text blocks) as one string.
fn system_text(system: Option<&Value>) -> Result<String, TranslateError> {
    match system {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let texts: Option<Vec<&str>> = blocks
                .iter()
                .map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            texts.map(|t| t.join("\n\n")).ok_or_else(|| {
                TranslateError::new(Some("system"), "system blocks must be text blocks")
            })
        }
        Some(_) => Err(TranslateError::new(
            Some("system"),
            "system must be a string or an array of text blocks",
        )),
    }
}

/// Content as a list of blocks (a string is one text block).
fn blocks_of(content: &Value) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(blocks) => Ok(blocks.clone()),
        Value::Null => Ok(Vec::new()),
        _ => Err(TranslateError::new(
            Some("messages"),
            "message content must be a string or an array of blocks",
        )),
    }
}

fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A user turn → `tool` messages for its tool results (first: OpenAI wants
/// them right after the assistant's calls), then one user message with the
/// rest.
fn user_messages(content: &Value, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    if let Value::String(text) = content {
        out.push(json!({"role": "user", "content": text}));
        return Ok(());
    }
    let mut parts = Vec::new();
    for block in blocks_of(content)? {
        if str_field(&block, "type") == "tool_result" {
            out.push(json!({
                "role": "tool",
                "tool_call_id": str_field(&block, "tool_use_id"),
                "content": tool_result_text(block.get("content"))?,
            }));
        } else {
            parts.push(user_part(&block)?);
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    // A lone text part reads best (and fits the most engines) as a string.
    let content = match parts.as_slice() {
        [only] if only.get("type") == Some(&json!("text")) => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

/// A tool result's content as text; images are dropped (OpenAI tool
/// messages carry text only).
fn tool_result_text(content: Option<&Value>) -> Result<String, TranslateError> {
    let blocks = blocks_of(content.unwrap_or(&Value::Null))?;
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|b| str_field(b, "type") == "text")
        .map(|b| str_field(b, "text"))
        .collect();
    Ok(texts.join("\n"))
}

/// One user-side Anthropic block → one OpenAI content part.
fn user_part(block: &Value) -> Result<Value, TranslateError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    match (str_field(block, "type"), str_field(source, "type")) {
        ("text", _) => Ok(json!({"type": "text", "text": str_field(block, "text")})),
        ("image", "base64") => {
            let url = data_url(str_field(source, "media_type"), str_field(source, "data"));
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        ("image", "url") => Ok(json!({
            "type": "image_url",
            "image_url": {"url": str_field(source, "url")},
        })),
        ("document", "base64") => {
            let data = data_url(str_field(source, "media_type"), str_field(source, "data"));
            let mut file = json!({ "file_data": data });
            if let Some(title) = block.get("title").and_then(Value::as_str) {
                file["filename"] = json!(title);
            }
            Ok(json!({"type": "file", "file": file}))
        }
        ("document", "text") => Ok(json!({"type": "text", "text": str_field(source, "data")})),
        (kind, source) => Err(TranslateError::new(
            Some("messages"),
            format!("content block {kind:?} (source {source:?}) has no OpenAI equivalent"),
        )),
    }
}

/// An assistant turn → one assistant message with text and tool calls.
fn assistant_message(content: &Value) -> Result<Value, TranslateError> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks_of(content)? {
        match str_field(&block, "type") {
            "text" => text.push_str(str_field(&block, "text")),
            "tool_use" => tool_calls.push(json!({
                "id": str_field(&block, "id"),
                "type": "function",
                "function": {
                    "name": str_field(&block, "name"),
                    "arguments": arguments_text(block.get("input")),
                },
            })),
            // Signed reasoning means nothing to another model.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(TranslateError::new(
                    Some("messages"),
                    format!("assistant block {other:?} has no OpenAI equivalent"),
                ))
            }
        }
    }
    let mut message = json!({"role": "assistant"});
    message["content"] = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    Ok(message)
}

/// Client tools → OpenAI function tools. Anthropic's server tools (web
/// search, code execution, ...) run at Anthropic and cannot be forwarded.
fn convert_tools(tools: &[Tool]) -> Result<Value, TranslateError> {
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
            return Err(TranslateError::new(
                Some("tools"),
                format!("server tool {kind:?} has no OpenAI equivalent"),
            ));
        }
        let mut function = json!({
            "name": tool.name,
            "parameters": tool.input_schema.clone().unwrap_or_else(|| json!({"type": "object"})),
        });
        if let Some(description) = &tool.description {
            function["description"] = json!(description);
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// `tool_choice` → OpenAI's `tool_choice` and `parallel_tool_calls`.
fn convert_tool_choice(
    choice: &ToolChoice,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let openai = match (choice.kind.as_str(), &choice.name) {
        ("auto", _) => json!("auto"),
        ("any", _) => json!("required"),
        ("none", _) => json!("none"),
        ("tool", Some(name)) => json!({"type": "function", "function": {"name": name}}),
        (kind, _) => {
            return Err(TranslateError::new(
                Some("tool_choice"),
                format!("tool_choice {kind:?} needs to be auto, any, none or tool with a name"),
            ))
        }
    };
    out.insert("tool_choice".into(), openai);
    if choice.disable_parallel_tool_use == Some(true) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}
