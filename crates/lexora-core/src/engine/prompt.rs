//! How many tokens a request needs, for picking a variant.
//!
//! The engine sees a chat after its chat template wrapped every message in
//! role markers, so counting only the message text undercounts, and a
//! prompt right at a variant's limit would overflow it. With an engine
//! running, the chat goes through its own template (`POST /apply-template`)
//! and tokenizer (`POST /tokenize`); without one, the text estimate gets a
//! per-message allowance for the markers.

use bytes::Bytes;
use serde_json::{json, Value};

/// Tokens a chat template adds per message without an engine to ask
/// (ChatML's `<|im_start|>role\n ... <|im_end|>\n` is 5; Llama 3's headers
/// are 5 as well; rounded up for templates with longer markers).
pub(super) const TEMPLATE_TOKENS_PER_MESSAGE: u32 = 8;

/// Tokens the template adds once (generation prompt, BOS).
pub(super) const TEMPLATE_TOKENS_BASE: u32 = 8;

/// What to count for one request body.
#[derive(Debug, PartialEq)]
pub(super) enum Prompt {
    /// A chat: the messages in OpenAI's shape (a Messages API `system` is
    /// moved in front as a system message) and their plain text.
    Chat { messages: Value, text: String },
    /// A completion prompt, embedding input, or an unreadable body.
    Text(String),
}

impl Prompt {
    pub(super) fn of(body: &Bytes) -> Self {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Self::Text(String::from_utf8_lossy(body).into_owned());
        };
        let mut text = String::new();
        for field in ["system", "messages", "prompt", "input"] {
            if let Some(value) = map.get(field) {
                collect_text(value, &mut text);
            }
        }
        let Some(Value::Array(messages)) = map.get("messages") else {
            return Self::Text(text);
        };
        let mut chat = Vec::with_capacity(messages.len() + 1);
        if let Some(system) = map.get("system") {
            let mut content = String::new();
            collect_text(system, &mut content);
            chat.push(json!({"role": "system", "content": content}));
        }
        chat.extend(messages.iter().cloned());
        Self::Chat {
            messages: Value::Array(chat),
            text,
        }
    }

    pub(super) fn text(&self) -> &str {
        match self {
            Self::Chat { text, .. } | Self::Text(text) => text,
        }
    }

    /// The template's allowance when the engine cannot apply it.
    pub(super) fn template_allowance(&self) -> u32 {
        match self {
            Self::Chat { messages, .. } => {
                let count = messages.as_array().map_or(0, Vec::len);
                let count = u32::try_from(count).unwrap_or(u32::MAX);
                TEMPLATE_TOKENS_BASE
                    .saturating_add(count.saturating_mul(TEMPLATE_TOKENS_PER_MESSAGE))
            }
            Self::Text(_) => 0,
        }
    }
}

/// Every string under `text` and `content` keys, one per line.
fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(text) => {
            out.push_str(text);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| collect_text(v, out)),
        Value::Object(map) => {
            for field in ["text", "content"] {
                if let Some(v) = map.get(field) {
                    collect_text(v, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_keeps_its_messages_and_gathers_the_text() {
        let body = Bytes::from_static(
            br#"{"model":"m","system":"sys","max_tokens":8,"messages":[
                {"role":"user","content":"hello"},
                {"role":"user","content":[{"type":"text","text":"world"}]}]}"#,
        );
        let prompt = Prompt::of(&body);
        assert_eq!(prompt.text(), "sys\nhello\nworld\n");
        let Prompt::Chat { messages, .. } = &prompt else {
            panic!("not a chat: {prompt:?}");
        };
        assert_eq!(messages[0], json!({"role": "system", "content": "sys\n"}));
        assert_eq!(messages.as_array().map(Vec::len), Some(3));
        assert_eq!(prompt.template_allowance(), 8 + 3 * 8);
    }

    #[test]
    fn completions_and_unreadable_bodies_are_text() {
        let completion = Prompt::of(&Bytes::from_static(br#"{"prompt":["a","b"]}"#));
        assert_eq!(completion, Prompt::Text("a\nb\n".into()));
        assert_eq!(completion.template_allowance(), 0);
        let raw = Prompt::of(&Bytes::from_static(b"not json"));
        assert_eq!(raw, Prompt::Text("not json".into()));
    }
}
