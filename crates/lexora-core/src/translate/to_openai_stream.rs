//! Anthropic SSE events → OpenAI `chat.completion.chunk` SSE.
//!
//! Anthropic streams content blocks one after another, each with its own
//! index; OpenAI streams one growing message whose tool calls carry their
//! own index. The translator remembers which Anthropic block is which
//! tool call so argument fragments land on the right call.

use serde_json::{json, Value};

use super::errors::openai_error_object;
use super::mapping::{finish_reason_for, AnthropicUsage};
use super::to_openai_response::arguments_text;
use super::{fresh_id, to_bytes, unix_now};

/// What an Anthropic content block turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, with its OpenAI `tool_calls[].index`.
    Tool(u64),
    /// A block OpenAI has no place for (redacted thinking, server tools).
    Ignored,
}

/// Streaming translation of one Anthropic answer into OpenAI chunks.
///
/// Feed each SSE event to [`push`](Self::push) and send what it returns.
/// Chunks follow OpenAI's order: a first chunk with the role, content and
/// tool-call deltas, a chunk with `finish_reason`, the usage chunk (empty
/// `choices`) when `include_usage` was asked for, then `data: [DONE]`.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    model: String,
    include_usage: bool,
    id: String,
    created: u64,
    usage: Option<AnthropicUsage>,
    /// Anthropic block index → what it became.
    blocks: Vec<(u64, Block)>,
    next_tool: u64,
    finish_sent: bool,
    done: bool,
}

impl AnthropicToOpenAiStream {
    /// A translator reporting `model` to the client; `include_usage` is the
    /// client's `stream_options.include_usage`.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            include_usage,
            id: fresh_id("chatcmpl-"),
            created: unix_now(),
            usage: None,
            blocks: Vec::new(),
            next_tool: 0,
            finish_sent: false,
            done: false,
        }
    }

    /// Fixes the `created` timestamp every chunk carries (by default the
    /// time of [`new`](Self::new)).
    pub fn with_created(mut self, created: u64) -> Self {
        self.created = created;
        self
    }

    /// Feeds one complete SSE event: its `event:` name, if any, and its
    /// `data:` payload. Returns the OpenAI SSE bytes to send: zero or more
    /// complete `data: ...\n\n` events, ending with `data: [DONE]\n\n`
    /// after `message_stop`. An Anthropic `error` event becomes an
    /// OpenAI-shaped `data: {"error": {...}}` and ends the stream (no
    /// `[DONE]`: the answer is incomplete). Unparsable payloads, `ping`
    /// and unknown events produce nothing.
    pub fn push(&mut self, event: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return out;
        };
        // The payload names its own type; the SSE event name is the same
        // by Anthropic's contract and serves when the payload does not.
        let kind = value.get("type").and_then(Value::as_str).or(event);
        match kind.unwrap_or("") {
            "message_start" => self.message_start(&value, &mut out),
            "content_block_start" => self.block_start(&value, &mut out),
            "content_block_delta" => self.block_delta(&value, &mut out),
            "message_delta" => self.message_delta(&value, &mut out),
            "message_stop" => self.message_stop(&mut out),
            "error" => {
                let error = openai_error_object(value.get("error"));
                out.extend(sse_data(&json!({ "error": error })));
                self.done = true;
            }
            // ping, content_block_stop (OpenAI has no block boundaries),
            // and event types added later.
            _ => {}
        }
        out
    }

    /// Usage seen so far as OpenAI counts it: (prompt tokens including
    /// cached ones, completion tokens). `None` before `message_start`.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.usage
            .map(|u| (u.prompt_tokens(), u.completion_tokens()))
    }

    fn message_start(&mut self, value: &Value, out: &mut Vec<u8>) {
        let message = value.get("message");
        if let Some(id) = message.and_then(|m| m.get("id")).and_then(Value::as_str) {
            self.id = id.to_owned();
        }
        let usage = AnthropicUsage::from_value(message.and_then(|m| m.get("usage")));
        self.usage
            .get_or_insert_with(Default::default)
            .update(&usage);
        // OpenAI's first chunk announces the role with empty content.
        self.chunk(json!({"role": "assistant", "content": ""}), None, out);
    }

    fn block_start(&mut self, value: &Value, out: &mut Vec<u8>) {
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        let start = value.get("content_block").unwrap_or(&Value::Null);
        let str_field = |key: &str| start.get(key).and_then(Value::as_str).unwrap_or("");
        let block = match str_field("type") {
            "text" => {
                self.content(str_field("text"), out);
                Block::Text
            }
            "thinking" => {
                self.reasoning(str_field("thinking"), out);
                Block::Thinking
            }
            "tool_use" => {
                let tool = self.next_tool;
                self.next_tool += 1;
                // Anthropic starts with `input: {}` and streams the JSON;
                // a non-empty start input is sent whole.
                let input = start.get("input").filter(|i| !is_empty_object(i));
                let arguments = input.map_or_else(String::new, |i| arguments_text(Some(i)));
                let call = json!({
                    "index": tool,
                    "id": str_field("id"),
                    "type": "function",
                    "function": {"name": str_field("name"), "arguments": arguments},
                });
                self.chunk(json!({ "tool_calls": [call] }), None, out);
                Block::Tool(tool)
            }
            _ => Block::Ignored,
        };
        self.blocks.push((index, block));
    }

    fn block_delta(&mut self, value: &Value, out: &mut Vec<u8>) {
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        let block = self
            .blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| *b);
        let delta = value.get("delta").unwrap_or(&Value::Null);
        let str_field = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or("");
        match (str_field("type"), block) {
            ("text_delta", Some(Block::Text)) => self.content(str_field("text"), out),
            ("thinking_delta", Some(Block::Thinking)) => self.reasoning(str_field("thinking"), out),
            ("input_json_delta", Some(Block::Tool(tool))) => {
                let fragment = str_field("partial_json");
                if !fragment.is_empty() {
                    let call = json!({"index": tool, "function": {"arguments": fragment}});
                    self.chunk(json!({ "tool_calls": [call] }), None, out);
                }
            }
            // signature_delta, citations_delta, deltas for ignored blocks.
            _ => {}
        }
    }

    fn message_delta(&mut self, value: &Value, out: &mut Vec<u8>) {
        let usage = AnthropicUsage::from_value(value.get("usage"));
        self.usage
            .get_or_insert_with(Default::default)
            .update(&usage);
        let stop_reason = value
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        if let Some(stop_reason) = stop_reason {
            self.finish(finish_reason_for(Some(stop_reason)), out);
        }
    }

    fn message_stop(&mut self, out: &mut Vec<u8>) {
        // A stream that never said why it stopped still ended normally.
        self.finish("stop", out);
        if self.include_usage {
            let usage = self.usage.unwrap_or_default().to_openai();
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            });
            out.extend(sse_data(&chunk));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// The chunk carrying `finish_reason`, once.
    fn finish(&mut self, reason: &str, out: &mut Vec<u8>) {
        if !self.finish_sent {
            self.finish_sent = true;
            self.chunk(json!({}), Some(reason), out);
        }
    }

    fn content(&self, text: &str, out: &mut Vec<u8>) {
        if !text.is_empty() {
            self.chunk(json!({ "content": text }), None, out);
        }
    }

    fn reasoning(&self, text: &str, out: &mut Vec<u8>) {
        if !text.is_empty() {
            self.chunk(json!({ "reasoning_content": text }), None, out);
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        // With include_usage, OpenAI sends `usage: null` on every chunk
        // but the last.
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        out.extend(sse_data(&chunk));
    }
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.is_empty())
}

/// One `data: <json>\n\n` SSE event.
fn sse_data(value: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend(to_bytes(value));
    out.extend_from_slice(b"\n\n");
    out
}
