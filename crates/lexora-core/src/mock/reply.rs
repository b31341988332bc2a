//! The mock engine's answers: deterministic text, token counts, embeddings,
//! in the shapes vLLM and llama-server produce.

use serde_json::{json, Value};

/// Words the mock "generates", in order.
const WORDS: [&str; 16] = [
    "Lexora",
    "keeps",
    "the",
    "engines",
    "reachable,",
    "fair",
    "and",
    "observable;",
    "it",
    "never",
    "invents",
    "answers.",
    "Tokens",
    "flow",
    "through",
    "unchanged.",
];

/// The `i`-th generated token, with the leading space a tokenizer would give.
pub fn token(i: u32) -> String {
    let word = WORDS[i as usize % WORDS.len()];
    if i == 0 {
        word.to_owned()
    } else {
        format!(" {word}")
    }
}

/// The whole text of `n` tokens.
pub fn text(n: u32) -> String {
    (0..n).map(token).collect()
}

/// A whitespace tokenizer: good enough for counting and `/tokenize`.
pub fn count_words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Prompt tokens of a chat or completion request.
pub fn prompt_tokens(body: &Value) -> u32 {
    message_words(body)
        .saturating_add(content_words(body.get("prompt")))
        .max(1)
}

/// Prompt tokens of an Anthropic Messages request: the `system` prompt (a
/// string or text blocks) and the messages' text blocks.
pub fn messages_prompt_tokens(body: &Value) -> u32 {
    message_words(body)
        .saturating_add(content_words(body.get("system")))
        .max(1)
}

/// Words in the text of all `messages` (strings or text parts).
fn message_words(body: &Value) -> u32 {
    body.get("messages")
        .and_then(Value::as_array)
        .map_or(0, |messages| {
            messages
                .iter()
                .map(|message| content_words(message.get("content")))
                .fold(0, u32::saturating_add)
        })
}

fn content_words(content: Option<&Value>) -> u32 {
    match content {
        Some(Value::String(text)) => count_words(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part {
                Value::String(text) => count_words(text),
                other => content_words(other.get("text")),
            })
            .fold(0, u32::saturating_add),
        _ => 0,
    }
}

/// Token ids for `/tokenize`: a stable hash per word.
pub fn tokenize(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(|w| (fnv1a(w.as_bytes()) % 32_000) as u32)
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A unit-length vector derived from the input text.
pub fn embedding(input: &str, dim: u32) -> Vec<f32> {
    let mut state = fnv1a(input.as_bytes()) | 1;
    let mut vector: Vec<f32> = (0..dim)
        .map(|_| {
            // xorshift: deterministic and cheap.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

/// The inputs of an embeddings request as texts (token arrays are joined).
pub fn embedding_inputs(input: &Value) -> Option<Vec<String>> {
    match input {
        Value::String(text) => Some(vec![text.clone()]),
        Value::Array(items) if items.iter().all(Value::is_number) => Some(vec![input.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Some(text.clone()),
                Value::Array(_) => Some(item.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// `usage` as OpenAI reports it.
pub fn usage(prompt: u32, completion: u32) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// An error document in the shape vLLM returns.
pub fn error(message: &str, kind: &str, code: u16) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_deterministic_and_counts_match() {
        assert_eq!(text(3), "Lexora keeps the");
        assert_eq!(count_words(&text(20)), 20);
    }

    #[test]
    fn prompt_tokens_cover_strings_and_parts() {
        let body = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there world"}]}
        ]});
        assert_eq!(prompt_tokens(&body), 5);
        assert_eq!(prompt_tokens(&json!({"prompt": "one two"})), 2);
        assert_eq!(prompt_tokens(&json!({})), 1);
    }

    #[test]
    fn messages_prompt_tokens_count_system_and_text_blocks() {
        let body = json!({
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "one"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {"a": "b c"}}
                ]}
            ]
        });
        assert_eq!(messages_prompt_tokens(&body), 5);
        assert_eq!(
            messages_prompt_tokens(&json!({"system": "a b c", "messages": []})),
            3
        );
    }

    #[test]
    fn embeddings_are_unit_length_and_stable() {
        let a = embedding("hello", 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
