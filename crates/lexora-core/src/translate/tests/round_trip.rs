//! Round trips: what goes through both translations comes back the same
//! (text and tool calls; see the losses table for the rest).

use super::super::to_openai_response::anthropic_to_openai_response_at;
use super::super::{
    anthropic_to_openai_request, openai_to_anthropic_request, openai_to_anthropic_response,
};
use super::streams::{anthropic_to_openai, openai_to_anthropic, sse_events};
use super::*;

/// The parts of an OpenAI message a round trip must keep: role, text,
/// tool calls (arguments compared as JSON) and tool call ids.
fn essentials(message: &Value) -> Value {
    let text = match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    };
    let calls: Vec<Value> = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let args = c["function"]["arguments"].as_str().unwrap_or("");
            let args = if args.is_empty() {
                json!({})
            } else {
                json(args.as_bytes())
            };
            json!({"id": c["id"], "name": c["function"]["name"], "arguments": args})
        })
        .collect();
    json!({
        "role": message["role"],
        "text": text,
        "tool_calls": calls,
        "tool_call_id": message["tool_call_id"],
    })
}

#[test]
fn openai_request_survives_anthropic_and_back() {
    for name in [
        "text.json",
        "multi_turn_merge.json",
        "parallel_tool_calls_and_results.json",
        "assistant_text_and_tool_call.json",
        "tool_choice_named.json",
        "stop_array.json",
    ] {
        let original = fixture("openai_request", name);
        let anthropic =
            openai_to_anthropic_request(&original, "claude", 1000).expect("to anthropic");
        let back = json(&anthropic_to_openai_request(&anthropic).expect("back to openai"));
        let original = json(&original);

        // Consecutive same-role messages are merged on the way, so compare
        // the conversation as a sequence of essentials with merged text.
        let flatten = |messages: &Value| -> Vec<Value> {
            let mut out: Vec<Value> = Vec::new();
            for m in messages.as_array().expect("messages") {
                let e = essentials(m);
                if e["text"] == "" && e["tool_calls"] == json!([]) && e["role"] != "tool" {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last["role"] == e["role"] && e["role"] != "tool" => {
                        let text = [last["text"].as_str(), e["text"].as_str()]
                            .into_iter()
                            .flatten()
                            .filter(|t| !t.is_empty())
                            .collect::<Vec<_>>()
                            .join("\n\n");
                        last["text"] = json!(text);
                    }
                    _ => out.push(e),
                }
            }
            out
        };
        // Merging changes the separators between merged messages (Anthropic
        // text blocks carry none), nothing else: compare without whitespace.
        let squash = |mut messages: Vec<Value>| -> Vec<Value> {
            for m in &mut messages {
                let text: String = m["text"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                m["text"] = json!(text);
            }
            messages
        };
        let keep = |m: &&Value| m["role"] != "system" && m["role"] != "developer";
        let original_msgs: Vec<Value> = original["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(keep)
            .cloned()
            .collect();
        let back_msgs: Vec<Value> = back["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(keep)
            .cloned()
            .collect();
        assert_eq!(
            squash(flatten(&json!(back_msgs))),
            squash(flatten(&json!(original_msgs))),
            "{name}"
        );

        for key in ["stop", "tool_choice", "temperature", "top_p"] {
            assert_eq!(back.get(key), original.get(key), "{name}: {key}");
        }
        let tool_names = |v: &Value| -> Vec<Value> {
            v["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["function"]["name"].clone())
                .collect()
        };
        assert_eq!(tool_names(&back), tool_names(&original), "{name}: tools");
    }
}

#[test]
fn openai_response_survives_anthropic_and_back() {
    for name in ["text_stop.json", "tool_calls_parallel.json", "length.json"] {
        let original = fixture("openai_response", name);
        let anthropic = openai_to_anthropic_response(&original, "claude").expect("to anthropic");
        let back = anthropic_to_openai_response_at(&anthropic, "gpt-4o", CREATED).expect("back");
        let (original, back) = (json(&original), json(&back));
        let choice = |v: &Value| v["choices"][0].clone();
        assert_eq!(
            essentials(&choice(&back)["message"]),
            essentials(&choice(&original)["message"]),
            "{name}"
        );
        assert_eq!(
            choice(&back)["finish_reason"],
            choice(&original)["finish_reason"],
            "{name}"
        );
        for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(back["usage"][key], original["usage"][key], "{name}: {key}");
        }
    }
}

/// Reassembles an OpenAI chunk stream into (text, [(id, name, arguments)],
/// finish_reason).
fn assemble_openai(sse: &[u8]) -> (String, Vec<(String, String, String)>, String) {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = String::new();
    for (_, data) in sse_events(sse) {
        if data == "[DONE]" {
            continue;
        }
        let chunk = json(data.as_bytes());
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("index") as usize;
            if calls.len() <= index {
                calls.resize(index + 1, Default::default());
            }
            let entry = &mut calls[index];
            entry.0.push_str(call["id"].as_str().unwrap_or(""));
            entry
                .1
                .push_str(call["function"]["name"].as_str().unwrap_or(""));
            entry
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
    }
    (text, calls, finish)
}

#[test]
fn openai_stream_survives_anthropic_and_back() {
    for name in [
        "text.sse",
        "parallel_tools.sse",
        "text_then_tool.sse",
        "interleaved_tools.sse",
        "max_tokens.sse",
    ] {
        let original = fixture("openai_stream", name);
        let (anthropic, _) = openai_to_anthropic(&original);
        let (back, _) = anthropic_to_openai(anthropic.as_bytes(), true);
        assert_eq!(
            assemble_openai(back.as_bytes()),
            assemble_openai(&original),
            "{name}"
        );
    }
}
