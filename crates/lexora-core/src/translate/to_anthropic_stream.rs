//! OpenAI `chat.completion.chunk` SSE → Anthropic SSE events.
//!
//! OpenAI streams one growing message; Anthropic streams content blocks,
//! each opened, filled and closed in turn. Reasoning, text and each tool
//! call become their own block, opened when their first delta arrives and
//! closed when something else starts. `message_delta` waits for the end of
//! the stream because OpenAI's usage chunk comes after `finish_reason`.

use serde_json::{json, Value};

use super::errors::{anthropic_error, anthropic_type, read_openai_error};
use super::mapping::{stop_reason_for, OpenAiUsage};
use super::to_bytes;

/// The Anthropic block being filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking(u64),
    Text(u64),
    Tool(u64),
}

/// Streaming translation of one OpenAI answer into Anthropic events.
///
/// Feed each SSE `data:` payload to [`push`](Self::push) (including
/// `[DONE]`) and send what it returns; call [`finish`](Self::finish) when
/// the upstream ends, which completes the message if `[DONE]` never came.
/// Output is `event: <type>\ndata: <json>\n\n` events: `message_start`,
/// blocks (`content_block_start`, deltas, `content_block_stop`),
/// `message_delta` with `stop_reason` and usage, `message_stop`.
///
/// OpenAI and the engines stream tool calls one after another. Should an
/// engine interleave argument fragments of several calls, the fragments
/// for an already-closed call's block still go to that block's index
/// (Anthropic's SDKs accumulate by index) rather than being dropped.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    model: String,
    id: Option<String>,
    started: bool,
    finished: bool,
    open: Option<Open>,
    next_block: u64,
    /// OpenAI `tool_calls[].index` → Anthropic block index.
    tools: Vec<(u64, u64)>,
    finish_reason: Option<String>,
    /// The model streamed a `refusal` instead of content.
    refused: bool,
    usage: Option<OpenAiUsage>,
}

impl OpenAiToAnthropicStream {
    /// A translator reporting `model` to the client.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            id: None,
            started: false,
            finished: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish_reason: None,
            refused: false,
            usage: None,
        }
    }

    /// Feeds one OpenAI SSE `data:` payload (without the `data: ` prefix),
    /// `[DONE]` included. Returns the Anthropic SSE bytes to send. An
    /// OpenAI error payload (`{"error": ...}`) becomes an Anthropic `error`
    /// event and ends the stream. Unparsable payloads produce nothing.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let data = data.trim_ascii();
        if self.finished {
            return Vec::new();
        }
        if data == b"[DONE]" {
            return self.finish();
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            let (message, kind, code) = read_openai_error(&chunk);
            let kind = anthropic_type(None, kind.as_deref(), code.as_deref());
            let message = message.unwrap_or_else(|| "upstream error".to_owned());
            event(&mut out, "error", &anthropic_error(kind, &message));
            self.finished = true;
            return out;
        }
        if let Some(usage) = OpenAiUsage::from_value(chunk.get("usage")) {
            self.usage = Some(usage);
        }
        if self.id.is_none() {
            self.id = chunk.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        self.start(&mut out);

        let choices = chunk.get("choices").and_then(Value::as_array);
        // Anthropic has one answer; extra choices (n > 1) are dropped.
        let first = choices.and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        if let Some(choice) = first {
            self.choice(choice, &mut out);
        }
        out
    }

    /// Completes the message: closes the open block and sends
    /// `message_delta` (stop reason, usage) and `message_stop`, unless that
    /// already happened. Safe to call more than once.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(&mut out);
        self.close(&mut out);
        let usage = self.usage.unwrap_or_default();
        let mut delta_usage = json!({ "output_tokens": usage.completion_tokens });
        // message_start went out before OpenAI's usage chunk, so the input
        // counts ride here (Anthropic's message_delta usage is cumulative).
        if self.usage.is_some() {
            delta_usage["input_tokens"] = json!(usage.input_tokens());
            delta_usage["cache_read_input_tokens"] = json!(usage.cached_tokens());
        }
        let stop_reason = if self.refused {
            "refusal"
        } else {
            stop_reason_for(self.finish_reason.as_deref())
        };
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": delta_usage,
        });
        event(&mut out, "message_delta", &delta);
        event(&mut out, "message_stop", &json!({"type": "message_stop"}));
        self.finished = true;
        out
    }

    /// Usage as OpenAI reported it: (prompt tokens including cached ones,
    /// completion tokens). `None` until a chunk carried usage.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.usage.map(|u| (u.prompt_tokens, u.completion_tokens))
    }

    fn message_id(&self) -> String {
        match &self.id {
            Some(id) => format!("msg_{id}"),
            None => "msg_stream".to_owned(),
        }
    }

    /// `message_start`, once, before anything else.
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        // Engines that send usage on every chunk already know the input.
        let usage = self.usage.unwrap_or_default();
        let start = json!({
            "type": "message_start",
            "message": {
                "id": self.message_id(),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": usage.input_tokens(),
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": usage.cached_tokens(),
                },
            },
        });
        event(out, "message_start", &start);
    }

    fn choice(&mut self, choice: &Value, out: &mut Vec<u8>) {
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let text = |key: &str| {
            delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(reasoning) = text("reasoning_content").or_else(|| text("reasoning")) {
            let index = self.open_block(out, Open::Thinking, thinking_start());
            let delta = json!({"type": "thinking_delta", "thinking": reasoning});
            block_delta(out, index, &delta);
        }
        // A refusal is text to an Anthropic client, with its own stop reason.
        if let Some(refusal) = text("refusal") {
            self.refused = true;
            self.text_delta(out, refusal);
        }
        if let Some(content) = text("content") {
            self.text_delta(out, content);
        }
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        for (position, call) in calls.into_iter().flatten().enumerate() {
            self.tool_delta(out, position as u64, call);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            self.close(out);
        }
    }

    fn text_delta(&mut self, out: &mut Vec<u8>, text: &str) {
        let index = self.open_block(out, Open::Text, json!({"type": "text", "text": ""}));
        block_delta(out, index, &json!({"type": "text_delta", "text": text}));
    }

    fn tool_delta(&mut self, out: &mut Vec<u8>, position: u64, call: &Value) {
        let tool = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let function = call.get("function");
        let known = self.tools.iter().find(|(t, _)| *t == tool).map(|(_, b)| *b);
        let index = match known {
            Some(index) => index,
            None => {
                let id = call.get("id").and_then(Value::as_str).map_or_else(
                    || format!("toolu_{}_{tool}", self.message_id()),
                    str::to_owned,
                );
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let start = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let index = self.open_block(out, Open::Tool, start);
                self.tools.push((tool, index));
                index
            }
        };
        let fragment = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty());
        if let Some(fragment) = fragment {
            // Interleaved fragments for an earlier call go to its block's
            // index; Anthropic's SDKs accumulate by index.
            let delta = json!({"type": "input_json_delta", "partial_json": fragment});
            block_delta(out, index, &delta);
        }
    }

    /// The index of the open block of this kind, closing another kind and
    /// starting a new block with `content_block` if needed.
    fn open_block(
        &mut self,
        out: &mut Vec<u8>,
        kind: impl Fn(u64) -> Open,
        content_block: Value,
    ) -> u64 {
        if let Some(open) = self.open {
            let index = match open {
                Open::Thinking(i) | Open::Text(i) | Open::Tool(i) => i,
            };
            // Tool blocks are reused by OpenAI index in tool_delta, never here.
            if open == kind(index) && !matches!(open, Open::Tool(_)) {
                return index;
            }
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        let start = json!({
            "type": "content_block_start",
            "index": index,
            "content_block": content_block,
        });
        event(out, "content_block_start", &start);
        self.open = Some(kind(index));
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let index = match self.open.take() {
            Some(Open::Thinking(i) | Open::Text(i) | Open::Tool(i)) => i,
            None => return,
        };
        let stop = json!({"type": "content_block_stop", "index": index});
        event(out, "content_block_stop", &stop);
    }
}

fn thinking_start() -> Value {
    json!({"type": "thinking", "thinking": "", "signature": ""})
}

fn block_delta(out: &mut Vec<u8>, index: u64, delta: &Value) {
    let event_data = json!({"type": "content_block_delta", "index": index, "delta": delta});
    event(out, "content_block_delta", &event_data);
}

/// One `event: <name>\ndata: <json>\n\n` SSE event.
fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend(to_bytes(data));
    out.extend_from_slice(b"\n\n");
}
