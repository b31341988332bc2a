use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;

/// The reference: what a derived reader of the whole answer finds.
fn derived(json: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct UsageOnly {
        #[serde(default)]
        usage: Option<Usage>,
    }
    serde_json::from_slice::<UsageOnly>(json).ok()?.usage
}

fn counts(usage: Option<Usage>) -> Option<(u64, u64)> {
    usage.map(|u| (u.prompt_tokens, u.completion_tokens))
}

#[test]
fn reads_openai_and_anthropic_answers() {
    let openai = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15},"system_fingerprint":null}"#;
    assert_eq!(counts(of_answer(openai)), Some((12, 3)));
    let anthropic = br#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":7,"output_tokens":2}}"#;
    assert_eq!(counts(of_answer(anthropic)), Some((7, 2)));
    let spaced = b"{ \"usage\" :\n {\"prompt_tokens\": 1, \"completion_tokens\": 2} }";
    assert_eq!(counts(of_answer(spaced)), Some((1, 2)));
    // Both spellings at once: OpenAI's names win.
    let both = br#"{"usage":{"input_tokens":7,"prompt_tokens":8,"completion_tokens":3,"output_tokens":2}}"#;
    assert_eq!(counts(of_answer(both)), Some((8, 3)));
    let mixed = br#"{"usage":{"input_tokens":7,"completion_tokens":3,"prompt_tokens":null}}"#;
    assert_eq!(counts(of_answer(mixed)), Some((7, 3)));
}

#[test]
fn ignores_usage_that_is_not_a_top_level_member() {
    let cases: [&[u8]; 6] = [
        br#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":9}"}}]}"#,
        br#"{"choices":[{"usage":{"prompt_tokens":9,"completion_tokens":9}}]}"#,
        br#"{"note":"usage","usage":null}"#,
        br#"{"a":{"usage":{"prompt_tokens":9}}}"#,
        br#"{"text":"ends with a backslash \\","other":"usage"}"#,
        br#"{"usage":"none"}"#,
    ];
    for json in cases {
        assert_eq!(
            counts(of_answer(json)),
            None,
            "{}",
            String::from_utf8_lossy(json)
        );
        assert_eq!(counts(derived(json)), None);
    }
}

#[test]
fn a_usage_written_last_is_found_from_the_end() {
    let openai = br#"{"id":"x","choices":[{"message":{"content":"a \"quoted\" \\ text"}}],"usage":{"prompt_tokens":12,"completion_tokens":3},"system_fingerprint":null}"#;
    let at = memmem::rfind(openai, USAGE_KEY).expect("mentions usage");
    assert!(
        top_level_from_end(openai, at).is_some(),
        "read from the end, not from the start"
    );
    assert_eq!(counts(of_answer(openai)), Some((12, 3)));
}

#[test]
fn a_later_usage_that_is_not_top_level_leaves_the_top_level_one() {
    let cases: [(&[u8], (u64, u64)); 3] = [
        (
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"x":{"usage":{"prompt_tokens":9}}}"#,
            (1, 2),
        ),
        (
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"t":"say \"usage"}"#,
            (1, 2),
        ),
        (
            br#"{"t":"\\","usage":{"prompt_tokens":3,"completion_tokens":4},"u":["usage"]}"#,
            (3, 4),
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(
            counts(of_answer(json)),
            Some(expected),
            "{}",
            String::from_utf8_lossy(json)
        );
        assert_eq!(counts(derived(json)), Some(expected));
    }
}

#[test]
fn tolerates_truncated_and_broken_bodies() {
    for json in [
        &br#"{"usage":{"prompt_tokens":1"#[..],
        br#"{"text":"unterminated \"usage\""#,
        br#"{"text":"\"#,
        br#""usage""#,
        b"",
    ] {
        assert_eq!(counts(of_answer(json)), None);
    }
}

/// `value` as text, indented or on one line.
fn to_json(value: Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(&value)
    } else {
        serde_json::to_vec(&value)
    }
    .expect("serializes")
}

/// JSON values whose strings and keys often say `usage` and carry quotes
/// and backslashes.
fn value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just("usage".to_owned()),
        Just("\"usage\":{\"prompt_tokens\":5}".to_owned()),
        Just("\\".to_owned()),
        "[a-z\"\\\\ ]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<u32>().prop_map(|n| json!(n)),
        text.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(
                (prop_oneof![Just("usage".to_owned()), "[a-z]{1,3}"], inner),
                0..4
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn usage_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(
            |(p, c)| json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": 0})
        ),
        (any::<u32>(), any::<u32>())
            .prop_map(|(p, c)| json!({"input_tokens": p, "output_tokens": c})),
        Just(json!({})),
        Just(Value::Null),
        value(),
    ]
}

proptest! {
    #[test]
    fn agrees_with_the_derived_reader(
        members in proptest::collection::vec(("[a-z]{1,3}", value()), 0..5),
        usage in proptest::option::of(usage_value()),
        position in 0usize..6,
        pretty in any::<bool>(),
    ) {
        let mut object = serde_json::Map::new();
        let mut members = members.into_iter();
        for (key, value) in members.by_ref().take(position) {
            object.insert(key, value);
        }
        if let Some(usage) = usage {
            object.insert("usage".to_owned(), usage);
        }
        object.extend(members);
        let json = to_json(Value::Object(object), pretty);
        prop_assert_eq!(counts(of_answer(&json)), counts(derived(&json)), "{}", String::from_utf8_lossy(&json));
    }
}

/// The reference for [`of_event`]: a derived reader of the whole event.
fn derived_event(json: &[u8]) -> EventUsage {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        message: Option<Nested>,
    }
    #[derive(Deserialize)]
    struct Nested {
        #[serde(default)]
        usage: Option<Usage>,
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk>(json) else {
        return EventUsage::default();
    };
    EventUsage {
        usage: chunk.usage,
        nested: chunk.message.and_then(|m| m.usage),
        no_choices: chunk.choices.is_some_and(|c| c.is_empty()),
    }
}

#[test]
fn reads_the_usage_of_stream_events() {
    let last = br#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;
    let read = of_event(last);
    assert_eq!(counts(read.usage), Some((7, 2)));
    assert!(read.no_choices);
    assert_eq!(read.nested, None);
    // vLLM's continuous usage: usage beside a token, which must stay.
    let with_token = br#"{"choices":[{"index":0,"delta":{"content":"\"usage\":[]"}}],"usage":{"prompt_tokens":7,"completion_tokens":1}}"#;
    let read = of_event(with_token);
    assert_eq!(counts(read.usage), Some((7, 1)));
    assert!(!read.no_choices);
    let start = br#"{"type":"message_start","message":{"id":"msg_1","content":[],"usage":{"input_tokens":4,"output_tokens":0}}}"#;
    let read = of_event(start);
    assert_eq!(counts(read.nested), Some((4, 0)));
    assert_eq!(read.usage, None);
    let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#;
    assert_eq!(counts(of_event(delta).usage), Some((0, 5)));
    for json in [&last[..], with_token, start, delta] {
        assert_eq!(of_event(json), derived_event(json));
    }
    // A member of the wrong type voids the event, as for the derived reader.
    for json in [
        &br#"{"choices":{},"usage":{"prompt_tokens":1,"completion_tokens":1}}"#[..],
        br#"{"choices":[],"usage":{"prompt_tokens":"one"}}"#,
        br#"{"message":[1],"usage":{"prompt_tokens":1}}"#,
    ] {
        assert_eq!(
            of_event(json),
            EventUsage::default(),
            "{}",
            String::from_utf8_lossy(json)
        );
        assert_eq!(derived_event(json), EventUsage::default());
    }
    assert_eq!(of_event(b"[DONE]"), EventUsage::default());
    assert_eq!(
        of_event(br#"{"usage":{"prompt_tokens":1"#),
        EventUsage::default()
    );
}

/// Values for the members an event's usage is read from: the shapes
/// engines write, and anything else.
fn event_member(key: &'static str) -> impl Strategy<Value = (String, Value)> {
    let shaped = match key {
        "choices" => prop_oneof![
            Just(json!([])),
            Just(json!([{"index": 0, "delta": {"content": "usage"}}])),
        ]
        .boxed(),
        "message" => usage_value()
            .prop_map(|usage| json!({"id": "m", "usage": usage}))
            .boxed(),
        _ => usage_value().boxed(),
    };
    prop_oneof![3 => shaped, 1 => value()].prop_map(move |v| (key.to_owned(), v))
}

proptest! {
    #[test]
    fn events_agree_with_the_derived_reader(
        others in proptest::collection::vec(("[a-z]{1,3}", value()), 0..4),
        members in proptest::collection::vec(
            prop_oneof![event_member("usage"), event_member("choices"), event_member("message")],
            0..4,
        ),
        pretty in any::<bool>(),
    ) {
        // A map: no member repeated (the derived reader refuses repeats).
        let object: serde_json::Map<String, Value> = others.into_iter().chain(members).collect();
        let json = to_json(Value::Object(object), pretty);
        prop_assert_eq!(of_event(&json), derived_event(&json), "{}", String::from_utf8_lossy(&json));
    }
}
