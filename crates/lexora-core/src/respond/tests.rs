use super::*;

fn normalized(status: u16, body: &str) -> Value {
    let status = StatusCode::from_u16(status).expect("status");
    serde_json::from_slice(&normalize_error_body(status, body.as_bytes())).expect("json")
}

#[test]
fn openai_shaped_errors_pass_unchanged() {
    let body = r#"{"error":{"message":"context too long","type":"exceed_context_size_error","n_ctx":1024,"code":400}}"#;
    let out = normalize_error_body(StatusCode::BAD_REQUEST, body.as_bytes());
    assert_eq!(out, body.as_bytes());
}

#[test]
fn other_error_shapes_are_wrapped_keeping_the_message() {
    insta::assert_json_snapshot!(
        "vllm_flat",
        normalized(
            400,
            r#"{"object":"error","message":"bad temperature","type":"BadRequestError","param":null,"code":400}"#
        )
    );
    insta::assert_json_snapshot!(
        "fastapi_detail",
        normalized(
            422,
            r#"{"detail":[{"loc":["body","messages"],"msg":"field required"}]}"#
        )
    );
    insta::assert_json_snapshot!(
        "bare_string",
        normalized(429, r#"{"error":"too many requests"}"#)
    );
    insta::assert_json_snapshot!("plain_text", normalized(502, "Bad Gateway\n"));
    insta::assert_json_snapshot!("empty", normalized(503, ""));
}

#[tokio::test]
async fn a_long_error_keeps_its_status_cut_to_the_limit() {
    // A validation error echoing a huge input, in pieces as a socket gives it.
    let echo = format!(
        "{{\"detail\":[{{\"msg\":\"bad\",\"input\":\"{}\"}}]}}",
        "x".repeat(200_000)
    );
    let pieces: Vec<Result<Bytes, std::io::Error>> = echo
        .as_bytes()
        .chunks(10_000)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    let body = Body::from_stream(futures_util::stream::iter(pieces));
    let error = engine_error(422, body).await;
    let GatewayError::UpstreamStatus { status, body, .. } = error else {
        panic!("the engine's status was lost: {error:?}");
    };
    assert_eq!(status, 422);
    assert!(!error_retryable(status), "a 422 is not retried");
    let json: Value = serde_json::from_slice(&body).expect("OpenAI-shaped");
    let message = json["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("{\"detail\""), "{}", &message[..40]);
    assert!(body.len() <= MAX_ERROR_BODY + 1024, "{}", body.len());
}

/// What an OpenAI engine's answer with `status` and `body` becomes, with
/// 5 s to read it.
async fn engine_error(status: u16, body: Body) -> GatewayError {
    let upstream = Response::builder()
        .status(status)
        .body(body)
        .expect("response");
    let timeout = Duration::from_secs(5);
    upstream_error(
        upstream,
        Wire::OpenAi,
        "engine",
        Instant::now() + timeout,
        timeout,
    )
    .await
}

fn error_retryable(status: StatusCode) -> bool {
    GatewayError::UpstreamStatus {
        status,
        body: Bytes::new(),
        retry_after: None,
    }
    .retryable()
}

/// The HTTP/1.1 head and every other way out (HTTP/2, the router) carry
/// the same gateway headers.
#[test]
fn a_stamp_encodes_the_headers_it_writes_into_a_map() {
    use crate::limit::RateInfo;
    let stamps = [
        Stamp::new(HeaderValue::from_static("req-1")),
        Stamp {
            request_id: HeaderValue::from_static("req-2"),
            rate: Some(RateInfo {
                limit_requests: Some(60),
                remaining_requests: Some(0),
                reset_requests: Some(Duration::from_millis(1500)),
                limit_tokens: Some(100_000),
                remaining_tokens: Some(99_744),
                reset_tokens: Some(Duration::from_secs(400)),
            }),
            queue_wait: Some(Duration::from_micros(2_500)),
        },
    ];
    for stamp in stamps {
        let mut head = Vec::new();
        stamp.encode(&mut head);
        let text = String::from_utf8(head).expect("ascii");
        let encoded: Vec<(String, String)> = text
            .split_terminator("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("a header line");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        let mut map = http::HeaderMap::new();
        stamp.write_headers(&mut map);
        let mut written: Vec<(String, String)> = map
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().expect("ascii").to_owned()))
            .collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        written.sort();
        assert_eq!(sorted, written);
        assert!(encoded
            .iter()
            .all(|(name, _)| stamp.writes(&name.parse().expect("name"))));
    }
}

#[test]
fn a_stamp_writes_what_openai_clients_read() {
    let stamp = Stamp {
        request_id: HeaderValue::from_static("req-9"),
        rate: Some(crate::limit::RateInfo {
            remaining_tokens: Some(750),
            reset_tokens: Some(Duration::from_millis(15_000)),
            ..Default::default()
        }),
        queue_wait: Some(Duration::from_millis(7)),
    };
    let mut head = Vec::new();
    stamp.encode(&mut head);
    assert_eq!(
        String::from_utf8(head).expect("ascii"),
        "x-ratelimit-remaining-tokens: 750\r\nx-ratelimit-reset-tokens: 15s\r\n\
         x-lexora-queue-wait-ms: 7\r\nx-request-id: req-9\r\n"
    );
    assert!(!stamp.writes(&http::HeaderName::from_static("x-ratelimit-limit-tokens")));
}

#[tokio::test]
async fn a_status_that_is_neither_success_nor_error_is_a_bad_gateway() {
    for status in [101, 199, 302, 304, 600, 999] {
        let error = engine_error(status, Body::from("{}")).await;
        assert!(
            matches!(&error, GatewayError::UpstreamInvalid { status: s, .. } if *s == status),
            "{status}: {error:?}"
        );
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        let json: Value = serde_json::from_slice(&error.body()).expect("OpenAI-shaped");
        assert_eq!(json["error"]["code"], "upstream_invalid_status");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&status.to_string())),
            "{json}"
        );
    }
}
