//! The Anthropic event stream: `message_start`, `content_block_start`,
//! `ping`, one `content_block_delta` per token (or tool input fragment),
//! `content_block_stop`, `message_delta` with the stop reason and output
//! tokens, `message_stop`. Each event is `event: <type>` plus
//! `data: <json>`, as Anthropic sends them.

use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Value};

use super::Answer;
use crate::mock::stream as sse;

/// One streamed (or, read whole, non-streamed) Anthropic answer.
pub(in crate::mock) struct Script {
    pub id: String,
    pub model: String,
    /// `usage.input_tokens`.
    pub prompt: u32,
    pub answer: Answer,
    /// Time between two deltas.
    pub pace: Duration,
    /// Abort the connection after this many events.
    pub reset_after: Option<u32>,
}

/// A position in the stream.
pub(in crate::mock) enum Step {
    MessageStart,
    BlockStart,
    Ping,
    Delta(u32),
    BlockStop,
    MessageDelta,
    MessageStop,
    End,
}

impl sse::Script for Script {
    type Step = Step;

    fn first(&self) -> Step {
        Step::MessageStart
    }

    fn event(&self, step: &Step) -> Option<Bytes> {
        let data = match step {
            Step::MessageStart => json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": self.prompt, "output_tokens": 0},
                },
            }),
            Step::BlockStart => json!({
                "type": "content_block_start", "index": 0, "content_block": self.answer.empty_block()
            }),
            Step::Ping => json!({"type": "ping"}),
            Step::Delta(i) => json!({
                "type": "content_block_delta", "index": 0, "delta": self.answer.delta(*i)
            }),
            Step::BlockStop => json!({"type": "content_block_stop", "index": 0}),
            Step::MessageDelta => json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.answer.stop_reason(), "stop_sequence": null},
                "usage": {"output_tokens": self.answer.output_tokens()},
            }),
            Step::MessageStop => json!({"type": "message_stop"}),
            Step::End => return None,
        };
        Some(frame(&data))
    }

    fn next(&self, step: &Step) -> Step {
        match step {
            Step::MessageStart => Step::BlockStart,
            Step::BlockStart => Step::Ping,
            Step::Ping if self.answer.deltas() > 0 => Step::Delta(0),
            Step::Delta(i) if i + 1 < self.answer.deltas() => Step::Delta(i + 1),
            Step::Ping | Step::Delta(_) => Step::BlockStop,
            Step::BlockStop => Step::MessageDelta,
            Step::MessageDelta => Step::MessageStop,
            Step::MessageStop | Step::End => Step::End,
        }
    }

    fn pause(&self, step: &Step) -> Duration {
        match step {
            // Like the OpenAI stream: the first token is there at once.
            Step::Delta(i) if *i > 0 => self.pace,
            _ => Duration::ZERO,
        }
    }

    fn reset_after(&self) -> Option<u32> {
        self.reset_after
    }
}

/// One SSE frame named after the event's `type`.
fn frame(data: &Value) -> Bytes {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}
