//! The small correspondences both directions share: why a turn ended,
//! token usage, reasoning effort and thinking budgets, and data URLs.

use serde::Deserialize;
use serde_json::{json, Value};

/// Anthropic rejects thinking budgets below this.
pub(super) const MIN_THINKING_BUDGET: u64 = 1024;

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(super) fn finish_reason_for(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever comes next:
        // the turn ended normally as far as an OpenAI client can tell.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(super) fn stop_reason_for(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        // OpenAI's "stop" does not say whether a stop sequence matched.
        _ => "end_turn",
    }
}

/// OpenAI `reasoning_effort` → Anthropic thinking budget. `Ok(None)` means
/// thinking off; `Err` an effort this table does not know.
pub(super) fn budget_for_effort(effort: &str) -> Result<Option<u64>, ()> {
    match effort {
        "none" => Ok(None),
        "minimal" | "low" => Ok(Some(MIN_THINKING_BUDGET)),
        "medium" => Ok(Some(4096)),
        "high" => Ok(Some(16384)),
        _ => Err(()),
    }
}

/// Anthropic thinking budget → OpenAI `reasoning_effort`; the inverse of
/// [`budget_for_effort`] on its values, bucketed in between.
pub(super) fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=2048 => "low",
        2049..=8192 => "medium",
        _ => "high",
    }
}

/// Token usage as Anthropic reports it. Every field is optional because
/// streamed `message_delta` events carry only what changed.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub(super) struct AnthropicUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Reads a `usage` object; anything unreadable counts as empty.
    pub fn from_value(value: Option<&Value>) -> Self {
        value
            .and_then(|v| Self::deserialize(v).ok())
            .unwrap_or_default()
    }

    /// Takes the fields a later event reports (Anthropic's counts are
    /// cumulative, so the newest wins).
    pub fn update(&mut self, newer: &Self) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// OpenAI's `prompt_tokens` counts every input token; Anthropic's
    /// `input_tokens` excludes the ones written to or read from the cache.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }

    pub fn completion_tokens(&self) -> u64 {
        self.output_tokens.unwrap_or(0)
    }

    /// The OpenAI `usage` object.
    pub fn to_openai(self) -> Value {
        let prompt = self.prompt_tokens();
        let completion = self.completion_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {
                "cached_tokens": self.cache_read_input_tokens.unwrap_or(0),
            },
        })
    }
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub(super) struct OpenAiUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// The part of `prompt_tokens_details` that maps to Anthropic.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub(super) struct PromptTokensDetails {
    pub cached_tokens: Option<u64>,
}

impl OpenAiUsage {
    /// Reads a `usage` object; `None` when absent, null or unreadable.
    pub fn from_value(value: Option<&Value>) -> Option<Self> {
        value
            .filter(|v| v.is_object())
            .and_then(|v| Self::deserialize(v).ok())
    }

    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }

    /// Anthropic's `input_tokens` leaves out cache reads, which OpenAI
    /// counts inside `prompt_tokens`.
    pub fn input_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_sub(self.cached_tokens())
    }

    /// The Anthropic `usage` object. OpenAI does not report cache writes.
    pub fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.input_tokens(),
            "output_tokens": self.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cached_tokens(),
        })
    }
}

/// Splits `data:<media type>;base64,<data>` into media type and data.
/// `None` for anything else, including data URLs that are not base64
/// (Anthropic only takes base64 sources).
pub(super) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let mut params = header.split(';');
    let media_type = params.next().filter(|m| !m.is_empty())?;
    params
        .any(|p| p.eq_ignore_ascii_case("base64"))
        .then_some((media_type, data))
}

/// Builds a base64 data URL.
pub(super) fn data_url(media_type: &str, data: &str) -> String {
    format!("data:{media_type};base64,{data}")
}
