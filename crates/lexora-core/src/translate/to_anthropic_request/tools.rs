//! Tools and tool choice: OpenAI function tools → Anthropic tools.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::TranslateError;

#[derive(Debug, Deserialize)]
pub(super) struct ChatTool {
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    #[serde(default)]
    function: Option<ChatFunction>,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
}

/// OpenAI function tools → Anthropic tools.
pub(super) fn convert_tools(tools: &[ChatTool]) -> Result<Vec<Value>, TranslateError> {
    tools
        .iter()
        .map(|tool| {
            let function = tool.function.as_ref().filter(|_| tool.kind == "function");
            let Some(function) = function else {
                return Err(TranslateError::new(
                    Some("tools"),
                    format!("tool type {:?} has no Anthropic equivalent", tool.kind),
                ));
            };
            // Anthropic requires an object schema; a function without
            // parameters takes none.
            let mut schema = match &function.parameters {
                Some(Value::Object(schema)) => schema.clone(),
                _ => Map::new(),
            };
            schema.entry("type").or_insert_with(|| json!("object"));
            if schema.get("type") == Some(&json!("object")) {
                schema.entry("properties").or_insert_with(|| json!({}));
            }
            let mut out = json!({"name": function.name, "input_schema": schema});
            if let Some(description) = &function.description {
                out["description"] = json!(description);
            }
            Ok(out)
        })
        .collect()
}

/// `tool_choice` and `parallel_tool_calls` → Anthropic's `tool_choice`.
pub(super) fn tool_choice(
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Value>, TranslateError> {
    let mut out = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(TranslateError::new(
                    Some("tool_choice"),
                    format!("unknown tool_choice {other:?}"),
                ))
            }
        }),
        Some(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| object.get("type").and_then(Value::as_str) == Some("function"));
            match name {
                Some(name) => Some(json!({"type": "tool", "name": name})),
                None => {
                    return Err(TranslateError::new(
                        Some("tool_choice"),
                        "tool_choice must be auto, none, required or a named function",
                    ))
                }
            }
        }
    };
    if parallel == Some(false) {
        let choice = out.get_or_insert_with(|| json!({"type": "auto"}));
        // "none" takes no options: no tool calls at all.
        if choice.get("type") != Some(&json!("none")) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(out)
}
