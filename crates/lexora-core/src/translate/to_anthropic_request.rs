//! OpenAI chat request → Anthropic Messages request.
//!
//! The conversation is rebuilt as Anthropic wants it: system text at the
//! top, strictly alternating user/assistant turns, tool calls and results
//! as content blocks. See the losses table in [`super`].

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::mapping::{budget_for_effort, parse_data_url, MIN_THINKING_BUDGET};
use super::{to_bytes, TranslateError};

mod tools;

use tools::{convert_tools, tool_choice, ChatTool};

/// The fields of an OpenAI chat request that have an Anthropic meaning.
/// Everything else is ignored (see the losses table).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    stop: Option<Value>,
    stream: Option<bool>,
    user: Option<String>,
    safety_identifier: Option<String>,
    tools: Option<Vec<ChatTool>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    reasoning_effort: Option<String>,
    thinking: Option<Value>,
    n: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatMessage {
    role: String,
    content: Option<Value>,
    tool_calls: Option<Vec<ChatToolCall>>,
    tool_call_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatToolCall {
    id: String,
    function: ChatFunctionCall,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatFunctionCall {
    name: String,
    arguments: Option<String>,
}

/// OpenAI chat request (JSON body) → Anthropic Messages request (JSON body).
///
/// `model` is the Anthropic model id to put in the body;
/// `default_max_tokens` is used when the request sets neither
/// `max_completion_tokens` nor `max_tokens` (Anthropic requires one).
/// Fails when the request cannot be expressed: `n` > 1, tool-call
/// arguments that are not a JSON object, unsupported content parts or
/// roles. Fields with no Anthropic meaning are dropped as listed in the
/// module's losses table.
pub fn openai_to_anthropic_request(
    body: &[u8],
    model: &str,
    default_max_tokens: u64,
) -> Result<Vec<u8>, TranslateError> {
    let req: ChatRequest =
        serde_json::from_slice(body).map_err(|e| TranslateError::invalid_body("request", &e))?;
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::new(
            Some("n"),
            "n > 1 is not supported: Anthropic returns one choice per request",
        ));
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(default_max_tokens);

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    let (system, messages) = convert_messages(&req.messages)?;
    if !system.is_empty() {
        out.insert("system".into(), json!(system));
    }
    out.insert("messages".into(), Value::Array(messages));

    let budget = thinking_budget(&req)?
        // Anthropic wants the budget below max_tokens; OpenAI counts
        // reasoning inside max_completion_tokens, so clamping keeps the
        // client's cap rather than raising it.
        .map(|b| b.min(max_tokens.saturating_sub(1)))
        .filter(|b| *b >= MIN_THINKING_BUDGET);
    if let Some(budget) = budget {
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    } else {
        // Anthropic rejects sampling changes while thinking, so these only
        // go along without it.
        if let Some(t) = req.temperature {
            out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = req.top_p {
            out.insert("top_p".into(), json!(p));
        }
        if let Some(k) = req.top_k {
            out.insert("top_k".into(), json!(k));
        }
    }

    if let Some(stop) = stop_sequences(req.stop.as_ref())? {
        out.insert("stop_sequences".into(), stop);
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), json!(true));
    }
    if let Some(user) = req.user.or(req.safety_identifier) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }

    let tools = convert_tools(req.tools.as_deref().unwrap_or_default())?;
    // Anthropic rejects tool_choice without tools, and OpenAI's choice is
    // meaningless then anyway.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let choice = tool_choice(req.tool_choice.as_ref(), req.parallel_tool_calls)?;
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(to_bytes(&Value::Object(out)))
}

/// The thinking budget asked for: an explicit Anthropic-style `thinking`
/// object wins over `reasoning_effort`.
fn thinking_budget(req: &ChatRequest) -> Result<Option<u64>, TranslateError> {
    if let Some(thinking) = req.thinking.as_ref().filter(|t| !t.is_null()) {
        return match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .map(Some)
                .ok_or_else(|| {
                    TranslateError::new(Some("thinking"), "thinking.budget_tokens is required")
                }),
            Some("disabled") => Ok(None),
            _ => Err(TranslateError::new(
                Some("thinking"),
                "thinking.type must be \"enabled\" or \"disabled\"",
            )),
        };
    }
    match req.reasoning_effort.as_deref() {
        None => Ok(None),
        Some(effort) => budget_for_effort(effort).map_err(|()| {
            TranslateError::new(
                Some("reasoning_effort"),
                format!("unknown reasoning_effort {effort:?}"),
            )
        }),
    }
}

/// One Anthropic turn being built.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Splits the conversation into the joined system text and Anthropic
/// messages, merging consecutive turns of one role (Anthropic requires
/// alternation; OpenAI's parallel tool results arrive as several `tool`
/// messages in a row).
fn convert_messages(messages: &[ChatMessage]) -> Result<(String, Vec<Value>), TranslateError> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role.as_str() {
            "system" | "developer" => {
                let text = plain_text(message.content.as_ref())?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", content_blocks(message.content.as_ref())?),
            "assistant" => ("assistant", assistant_blocks(message)?),
            "tool" => ("user", vec![tool_result(message)?]),
            other => {
                return Err(TranslateError::new(
                    Some("messages"),
                    format!("message role {other:?} has no Anthropic equivalent"),
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    let messages = turns.into_iter().map(turn_json).collect();
    Ok((system.join("\n\n"), messages))
}

fn turn_json(mut turn: Turn) -> Value {
    // Anthropic wants tool results first in their user turn; a stable sort
    // keeps everything else in order.
    turn.blocks
        .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
    json!({"role": turn.role, "content": collapse(turn.blocks)})
}

/// One plain text block becomes a string, the common and most readable
/// form; anything else stays a block list.
fn collapse(mut blocks: Vec<Value>) -> Value {
    let plain = blocks.len() == 1
        && blocks[0].as_object().is_some_and(|b| b.len() == 2)
        && blocks[0].get("type").and_then(Value::as_str) == Some("text");
    match blocks.pop() {
        Some(Value::Object(mut block)) if plain => block.remove("text").unwrap_or_default(),
        Some(last) => {
            blocks.push(last);
            Value::Array(blocks)
        }
        None => Value::Array(blocks),
    }
}

/// The text of a system or developer message (string or text parts).
fn plain_text(content: Option<&Value>) -> Result<String, TranslateError> {
    let mut texts = Vec::new();
    for block in content_blocks(content)? {
        match block.get("text").and_then(Value::as_str) {
            Some(text) => texts.push(text.to_owned()),
            None => {
                return Err(TranslateError::new(
                    Some("messages"),
                    "system and developer messages may only contain text",
                ))
            }
        }
    }
    Ok(texts.join("\n\n"))
}

/// User-side content (string or parts) → Anthropic content blocks.
fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_block(text, None).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                blocks.extend(part_block(part)?);
            }
            Ok(blocks)
        }
        Some(_) => Err(TranslateError::new(
            Some("messages"),
            "message content must be a string or an array of parts",
        )),
    }
}

/// A text block, or nothing for empty text (Anthropic rejects empty text
/// blocks). A `cache_control` marker on the part is kept: clients aiming at
/// Anthropic through OpenAI-compatible gateways send it.
fn text_block(text: &str, cache_control: Option<&Value>) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    let mut block = json!({"type": "text", "text": text});
    if let Some(cc) = cache_control.filter(|cc| cc.is_object()) {
        block["cache_control"] = cc.clone();
    }
    Some(block)
}

/// One OpenAI content part → at most one Anthropic block.
fn part_block(part: &Value) -> Result<Option<Value>, TranslateError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    let str_field = |key: &str| part.get(key).and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(text_block(str_field("text"), part.get("cache_control"))),
        "refusal" => Ok(text_block(str_field("refusal"), None)),
        "image_url" => {
            let image = part.get("image_url");
            // The object form is standard; some clients send the URL bare.
            let url = image
                .and_then(|i| i.get("url"))
                .or(image)
                .and_then(Value::as_str)
                .unwrap_or("");
            image_block(url).map(Some)
        }
        "file" => {
            let file = part.get("file");
            let data = file
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str);
            match data.and_then(parse_data_url) {
                Some((media_type, data)) => {
                    let mut block = json!({
                        "type": "document",
                        "source": {"type": "base64", "media_type": media_type, "data": data},
                    });
                    let filename = file.and_then(|f| f.get("filename"));
                    if let Some(name) = filename.and_then(Value::as_str) {
                        block["title"] = json!(name);
                    }
                    Ok(Some(block))
                }
                None => Err(TranslateError::new(
                    Some("messages"),
                    "file parts must carry file_data as a base64 data URL (file_id has no Anthropic equivalent)",
                )),
            }
        }
        other => Err(TranslateError::new(
            Some("messages"),
            format!("content part type {other:?} has no Anthropic equivalent"),
        )),
    }
}

/// An image URL → an Anthropic image block: data URLs become base64
/// sources, http(s) URLs URL sources.
fn image_block(url: &str) -> Result<Value, TranslateError> {
    if let Some((media_type, data)) = parse_data_url(url) {
        return Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(TranslateError::new(
        Some("messages"),
        "image_url must be an http(s) URL or a base64 data URL",
    ))
}

/// An assistant message → text blocks, then one tool_use block per call.
fn assistant_blocks(message: &ChatMessage) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = content_blocks(message.content.as_ref())?;
    for call in message.tool_calls.as_deref().unwrap_or_default() {
        let arguments = call.function.arguments.as_deref().unwrap_or("").trim();
        // An empty string is how some clients spell "no arguments".
        let input = if arguments.is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(arguments).map_err(|e| {
                TranslateError::new(
                    Some("messages"),
                    format!("tool call {:?} has invalid JSON arguments: {e}", call.id),
                )
            })?
        };
        if !input.is_object() {
            return Err(TranslateError::new(
                Some("messages"),
                format!("tool call {:?} arguments must be a JSON object", call.id),
            ));
        }
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.function.name,
            "input": input,
        }));
    }
    Ok(blocks)
}

/// A `tool` message → a tool_result block (its user turn is merged with
/// neighbouring results by [`convert_messages`]).
fn tool_result(message: &ChatMessage) -> Result<Value, TranslateError> {
    let id = message.tool_call_id.as_deref().ok_or_else(|| {
        TranslateError::new(Some("messages"), "tool messages need a tool_call_id")
    })?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    let content = content_blocks(message.content.as_ref())?;
    if !content.is_empty() {
        block["content"] = collapse(content);
    }
    Ok(block)
}

/// `stop` (a string or a list) → `stop_sequences`; `None` when empty.
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let sequences: Vec<&str> = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str())
            .collect::<Option<_>>()
            .ok_or_else(|| TranslateError::new(Some("stop"), "stop must hold strings"))?,
        Some(_) => {
            return Err(TranslateError::new(
                Some("stop"),
                "stop must be a string or an array of strings",
            ))
        }
    };
    Ok((!sequences.is_empty()).then(|| json!(sequences)))
}
