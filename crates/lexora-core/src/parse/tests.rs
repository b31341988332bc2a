use super::*;
use serde_json::json;

fn parse_json(body: &str, default_model: Option<&str>) -> Result<ParsedRequest, GatewayError> {
    parse(
        Endpoint::ChatCompletions,
        Bytes::from(body.to_owned()),
        &HeaderMap::new(),
        default_model,
    )
}

fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("upstream body is JSON")
}

#[test]
fn untouched_body_is_forwarded_as_the_same_bytes() {
    let body = r#"{"model":"m","messages":[],"top_k":5,  "chat_template_kwargs":{"enable_thinking":false}}"#;
    let parsed = parse_json(body, None).expect("parses");
    assert_eq!(
        parsed.body,
        body.as_bytes(),
        "no rewrite when nothing must change"
    );
    assert_eq!(parsed.model.as_deref(), Some("m"));
    assert!(!parsed.stream);
}

#[test]
fn extensions_are_read_and_stripped_keeping_unknown_fields() {
    let body = r#"{"model":"m","x_priority":"HIGH","x_user_id":"takahito","x_timeout":2.5,"repetition_penalty":1.10,"nested":{"a":[1,2.50,"x"]}}"#;
    let parsed = parse_json(body, None).expect("parses");
    assert_eq!(parsed.extensions.priority, Some(Priority::High));
    assert_eq!(parsed.extensions.user_id.as_deref(), Some("takahito"));
    assert_eq!(parsed.extensions.timeout, Some(Duration::from_millis(2500)));
    let text = std::str::from_utf8(&parsed.body).expect("utf8");
    assert!(!text.contains("x_"), "{text}");
    // Raw member text is kept exactly (1.10 and 2.50 are not re-formatted).
    assert!(text.contains(r#""repetition_penalty":1.10"#), "{text}");
    assert!(text.contains(r#""nested":{"a":[1,2.50,"x"]}"#), "{text}");
}

#[test]
fn null_extension_fields_are_stripped_too() {
    let parsed = parse_json(r#"{"model":"m","x_priority":null}"#, None).expect("parses");
    assert_eq!(parsed.extensions.priority, None);
    assert_eq!(json(&parsed.body), serde_json::json!({"model": "m"}));
}

#[test]
fn headers_supply_extensions_when_the_body_does_not() {
    let mut headers = HeaderMap::new();
    headers.insert("x-lexora-priority", "low".parse().expect("header"));
    headers.insert("x-lexora-user", "alice".parse().expect("header"));
    headers.insert("x-lexora-timeout", "7".parse().expect("header"));
    let parsed = parse(
        Endpoint::Completions,
        Bytes::from_static(b"{\"model\":\"m\"}"),
        &headers,
        None,
    )
    .expect("parses");
    assert_eq!(parsed.extensions.priority, Some(Priority::Low));
    assert_eq!(parsed.extensions.user_id.as_deref(), Some("alice"));
    assert_eq!(parsed.extensions.timeout, Some(Duration::from_secs(7)));
}

#[test]
fn default_model_fills_a_missing_model() {
    let parsed = parse_json(r#"{"messages":[]}"#, Some("qwen3-32b")).expect("parses");
    assert_eq!(parsed.model.as_deref(), Some("qwen3-32b"));
    assert_eq!(json(&parsed.body)["model"], "qwen3-32b");
    let without = parse_json(r#"{"messages":[]}"#, None).expect("parses");
    assert_eq!(without.model, None);
}

#[test]
fn streams_ask_for_usage_and_remember_who_asked() {
    let parsed = parse_json(r#"{"model":"m","stream":true}"#, None).expect("parses");
    assert!(parsed.stream);
    assert!(!parsed.client_wants_usage);
    assert_eq!(json(&parsed.body)["stream_options"]["include_usage"], true);

    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let asked = parse_json(body, None).expect("parses");
    assert!(asked.client_wants_usage);
    assert_eq!(asked.body, body.as_bytes());

    let other = parse_json(
        r#"{"model":"m","stream":true,"stream_options":{"continuous_usage_stats":false}}"#,
        None,
    )
    .expect("parses");
    let options = &json(&other.body)["stream_options"];
    assert_eq!(options["include_usage"], true);
    assert_eq!(options["continuous_usage_stats"], false);
}

#[test]
fn embeddings_never_stream() {
    let parsed = parse(
        Endpoint::Embeddings,
        Bytes::from_static(b"{\"input\":\"x\",\"stream\":true}"),
        &HeaderMap::new(),
        None,
    )
    .expect("parses");
    assert!(!parsed.stream);
}

#[test]
fn malformed_json_says_where() {
    let err = parse_json("{\"model\": \"m\",\n \"messages\": [,]}", None).expect_err("invalid");
    assert_eq!(err.status(), 400);
    let text = err.to_string();
    assert!(text.contains("line 2 column"), "{text}");
}

#[test]
fn non_objects_and_empty_bodies_are_rejected() {
    for body in ["", "  ", "[1,2]", "\"text\"", "hello"] {
        let err = parse_json(body, None).expect_err(body);
        assert!(
            matches!(err, GatewayError::InvalidJson { .. }),
            "{body:?}: {err:?}"
        );
    }
}

#[test]
fn bodies_passed_on_as_they_are_are_whole_json() {
    // Neither needs a rewrite, so they would reach the engine byte for byte;
    // the streamed ones are split into members, the others read by the
    // derived reader: both refuse.
    let bodies: [&[u8]; 4] = [
        br#"{"model":"m","messages":[]} trailing"#,
        br#"{"model":"m","messages":[]}{"model":"n"}"#,
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
        b"{\"model\":\"m\",\"stream\":true,\"x\":\"\xc3\"}",
    ];
    for body in bodies {
        let err = parse(
            Endpoint::ChatCompletions,
            Bytes::from_static(body),
            &HeaderMap::new(),
            None,
        )
        .expect_err("refused");
        assert!(
            matches!(err, GatewayError::InvalidJson { .. }),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    // Whitespace after the object is JSON.
    assert!(parse_json("{\"model\":\"m\"} \n", None).is_ok());
}

#[test]
fn names_the_gateway_counts_by_are_bounded() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for field in ["model", "user"] {
        let body = json!({"model": "m", field: long}).to_string();
        let err = parse_json(&body, None).expect_err(field);
        assert!(
            matches!(err, GatewayError::InvalidRequest { param: Some(p), .. } if p == field),
            "{field}: {err:?}"
        );
        let fits = json!({"model": "m", field: &long[1..]}).to_string();
        assert!(parse_json(&fits, None).is_ok(), "{field}");
    }
}

#[test]
fn wrong_types_are_invalid_requests_naming_the_field() {
    let err = parse_json(r#"{"model":5}"#, None).expect_err("bad model");
    assert!(
        matches!(
            err,
            GatewayError::InvalidRequest {
                param: Some("model"),
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_json(r#"{"model":"m","x_priority":"urgent"}"#, None).expect_err("bad priority");
    assert!(
        matches!(
            err,
            GatewayError::InvalidRequest {
                param: Some("x_priority"),
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_json(r#"{"model":"m","x_timeout":-1}"#, None).expect_err("bad timeout");
    assert!(
        matches!(
            err,
            GatewayError::InvalidRequest {
                param: Some("x_timeout"),
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_json(r#"{"model":"m","x_timeout":"soon"}"#, None).expect_err("bad timeout");
    assert!(
        matches!(
            err,
            GatewayError::InvalidRequest {
                param: Some("x_timeout"),
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_json(r#"{"model":"m","x_user_id":""}"#, None).expect_err("bad user");
    assert!(
        matches!(
            err,
            GatewayError::InvalidRequest {
                param: Some("x_user_id"),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn absurd_timeouts_are_refused_not_overflowed() {
    let err = parse_json(r#"{"model":"m","x_timeout":1e19}"#, None).expect_err("too long");
    assert!(
        matches!(
            err,
            GatewayError::InvalidRequest {
                param: Some("x_timeout"),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(parse_json(r#"{"model":"m","x_timeout":86400}"#, None).is_ok());
}

/// The member-list rewrite must give exactly the bytes (or the error) that
/// the former map-based rewrite gave, which stays as the fallback.
#[test]
fn member_rewrite_matches_the_map_rewrite() {
    let many: String = (0..40)
        .map(|i| format!("\"k{i}\":{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let bodies = [
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#.to_owned(),
        r#"{ "model" : "m" , "stream" : true , "x_priority" : "high" }"#.to_owned(),
        r#"{"stream":true,"stream_options":{"include_usage":false,"other":[1, 2]}}"#.to_owned(),
        r#"{"stream":true,"stream_options":null,"x_user_id":"u","x_timeout":3}"#.to_owned(),
        r#"{"stream":true,"stream_options":{}}"#.to_owned(),
        r#"{"stream":true,"stream_options":[]}"#.to_owned(),
        r#"{"stream":true,"stream_options":{"a":1,"a":2}}"#.to_owned(),
        r#"{"model":"a","model":"b","stream":true,"x_priority":"low","x_priority":null}"#
            .to_owned(),
        r#"{"mod\u0065l":"m","\u00e9t\u00e9":"\ud83d\ude00","k\"q":1,"stream":true}"#.to_owned(),
        r#"{"model":"m","model":"m"}"#.to_owned(),
        format!("{{{many},\"stream\":true}}"),
        format!("{{{many},\"k7\":\"again\",\"stream\":true}}"),
        r#"{}"#.to_owned(),
        "{\"a\":1}  \n".to_owned(),
    ];
    for body in &bodies {
        for fill in [None, Some("filled"), Some("q\"uote\u{e9}")] {
            for add_usage in [false, true] {
                let fast = match Members::parse(body.as_bytes())
                    .ok()
                    .filter(|m| !m.has_repeats())
                {
                    Some(members) => rewrite(members, body.as_bytes(), fill, add_usage),
                    None => rewrite_indexed(body.as_bytes(), fill, add_usage),
                };
                let old = rewrite_indexed(body.as_bytes(), fill, add_usage);
                match (fast, old) {
                    (Ok(fast), Ok(old)) => assert_eq!(fast, old, "{body} {fill:?} {add_usage}"),
                    (Err(fast), Err(old)) => {
                        assert_eq!(fast.to_string(), old.to_string(), "{body}")
                    }
                    (fast, old) => panic!("{body}: {fast:?} vs {old:?}"),
                }
            }
        }
    }
}

/// What a [`Peek`] read, comparable.
fn peek_fields(peek: &Peek<'_>) -> Vec<Option<String>> {
    let raw = |r: Option<&RawValue>| r.map(|r| r.get().to_owned());
    vec![
        peek.model.as_deref().map(str::to_owned),
        peek.stream.map(|s| s.to_string()),
        peek.stream_options
            .as_ref()
            .map(|o| format!("{:?}", o.include_usage)),
        peek.user.as_deref().map(str::to_owned),
        raw(peek.max_tokens),
        raw(peek.max_completion_tokens),
        raw(peek.x_priority),
        raw(peek.x_user_id),
        raw(peek.x_timeout),
    ]
}

/// Fields read from the split members must be what the derived reader
/// reads, and every body it refuses must go to it (for its error).
#[test]
fn members_read_the_fields_the_derived_reader_reads() {
    let bodies = [
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"user":"u"}"#,
        r#"{"model":null,"stream":null,"stream_options":null,"user":null,"max_tokens":null}"#,
        r#"{"max_tokens":12,"max_completion_tokens":1.5e3,"x_priority":null,"x_user_id":"a","x_timeout":3}"#,
        r#"{"mod\u0065l":"esc\"aped","us\u0065r":"\u00e9"}"#,
        r#"{"model":5}"#,
        r#"{"stream":"yes"}"#,
        r#"{"stream_options":[]}"#,
        r#"{"stream_options":[true]}"#,
        r#"{"stream_options":{"include_usage":1}}"#,
        r#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
        r#"{"model":"a","model":"b"}"#,
        r#"{"other":1,"other":2,"model":"m"}"#,
        r#"{"user":["x"]}"#,
        r#"{"model":"m"} trailing"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi \n there"}],"n":1}"#,
    ];
    let mut read_from_members = 0;
    for body in bodies {
        let derived = peek_derived(body.as_bytes());
        let split = Members::parse(body.as_bytes())
            .ok()
            .filter(|m| !m.has_repeats());
        // None: left to the derived reader, which then decides alone.
        if let Some(peek) = split.as_ref().and_then(peek_members) {
            let derived = derived.unwrap_or_else(|e| panic!("{body}: derived refused: {e}"));
            assert_eq!(peek_fields(&peek), peek_fields(&derived), "{body}");
            read_from_members += 1;
        }
    }
    assert_eq!(read_from_members, 7, "the members path was taken");
}
