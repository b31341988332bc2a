//! Streams both ways, fed event by event as a relay would.

use super::super::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};
use super::*;

/// Splits an SSE document into (event name, data) pairs.
pub(super) fn sse_events(text: &[u8]) -> Vec<(Option<String>, String)> {
    let text = std::str::from_utf8(text).expect("utf8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = Vec::new();
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

/// Runs an Anthropic SSE document through the OpenAI translator.
pub(super) fn anthropic_to_openai(sse: &[u8], include_usage: bool) -> (String, Option<(u64, u64)>) {
    let mut stream =
        AnthropicToOpenAiStream::new("claude-sonnet-4-5", include_usage).with_created(CREATED);
    let mut out = Vec::new();
    for (name, data) in sse_events(sse) {
        out.extend(stream.push(name.as_deref(), data.as_bytes()));
    }
    (String::from_utf8(out).expect("utf8"), stream.usage())
}

/// Runs an OpenAI SSE document through the Anthropic translator, calling
/// `finish` at the end as the relay does when the upstream closes.
pub(super) fn openai_to_anthropic(sse: &[u8]) -> (String, Option<(u64, u64)>) {
    let mut stream = OpenAiToAnthropicStream::new("gpt-4o-mini");
    let mut out = Vec::new();
    for (_, data) in sse_events(sse) {
        out.extend(stream.push(data.as_bytes()));
    }
    out.extend(stream.finish());
    (String::from_utf8(out).expect("utf8"), stream.usage())
}

fn with_usage(text: String, usage: Option<(u64, u64)>) -> String {
    format!("{text}---\nusage(): {usage:?}\n")
}

#[test]
fn anthropic_stream_fixtures() {
    for (name, sse) in fixtures("anthropic_stream") {
        let (text, usage) = anthropic_to_openai(&sse, true);
        snapshot_text("anthropic_stream", &name, &with_usage(text, usage));
    }
}

#[test]
fn openai_stream_fixtures() {
    for (name, sse) in fixtures("openai_stream") {
        let (text, usage) = openai_to_anthropic(&sse);
        snapshot_text("openai_stream", &name, &with_usage(text, usage));
    }
}

#[test]
fn without_include_usage_there_is_no_usage_chunk() {
    let (text, usage) = anthropic_to_openai(&fixture("anthropic_stream", "text.sse"), false);
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Usage is still counted for the gateway's own accounting.
    assert_eq!(usage, Some((25, 15)));
}

#[test]
fn every_openai_event_is_a_complete_sse_event() {
    for (name, sse) in fixtures("anthropic_stream") {
        let (text, _) = anthropic_to_openai(&sse, true);
        for event in text.split_terminator("\n\n") {
            let data = event.strip_prefix("data: ").expect("data line");
            assert!(!data.contains('\n'), "{name}: one line per event");
            if data != "[DONE]" {
                json(data.as_bytes());
            }
        }
    }
}

#[test]
fn anthropic_events_keep_block_discipline() {
    // Each block starts once, its deltas and stop use its index, only one is
    // open at a time (except deltas for an interleaved earlier tool call),
    // and the message is bracketed by message_start ... message_stop.
    for (name, sse) in fixtures("openai_stream") {
        let (text, _) = openai_to_anthropic(&sse);
        let events = sse_events(text.split("---\n").next().unwrap_or("").as_bytes());
        let mut started = std::collections::BTreeSet::new();
        let mut open: Option<u64> = None;
        for (i, (event, data)) in events.iter().enumerate() {
            let event = event.as_deref().expect("named event");
            let data = json(data.as_bytes());
            assert_eq!(data["type"], event, "{name}: event name matches type");
            match event {
                "message_start" => assert_eq!(i, 0, "{name}"),
                "content_block_start" => {
                    assert!(open.is_none(), "{name}: a block is already open");
                    let index = data["index"].as_u64().expect("index");
                    assert!(started.insert(index), "{name}: block {index} restarted");
                    assert_eq!(
                        index as usize,
                        started.len() - 1,
                        "{name}: indexes in order"
                    );
                    open = Some(index);
                }
                "content_block_delta" => {
                    let index = data["index"].as_u64().expect("index");
                    assert!(started.contains(&index), "{name}: delta before start");
                }
                "content_block_stop" => {
                    assert_eq!(
                        data["index"].as_u64(),
                        open.take(),
                        "{name}: stop of the open block"
                    );
                }
                "message_delta" => assert!(open.is_none(), "{name}: block left open"),
                "message_stop" => assert_eq!(i, events.len() - 1, "{name}"),
                "error" => assert_eq!(i, events.len() - 1, "{name}: error ends the stream"),
                other => panic!("{name}: unexpected event {other}"),
            }
        }
    }
}

#[test]
fn finish_after_done_adds_nothing_and_is_idempotent() {
    let mut stream = OpenAiToAnthropicStream::new("m");
    assert!(!stream
        .push(br#"{"id":"a","choices":[{"index":0,"delta":{"content":"x"}}]}"#)
        .is_empty());
    assert!(!stream.push(b"[DONE]").is_empty());
    assert!(stream.finish().is_empty());
    assert!(stream
        .push(br#"{"id":"a","choices":[{"index":0,"delta":{"content":"late"}}]}"#)
        .is_empty());
}

#[test]
fn an_empty_upstream_still_yields_a_well_formed_message() {
    let mut stream = OpenAiToAnthropicStream::new("m");
    let text = String::from_utf8(stream.finish()).expect("utf8");
    let names: Vec<_> = sse_events(text.as_bytes())
        .into_iter()
        .filter_map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
}
