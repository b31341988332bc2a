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
    let upstream = Response::builder()
        .status(422)
        .body(body)
        .expect("response");
    let deadline = Instant::now() + Duration::from_secs(5);
    let error = upstream_error(
        upstream,
        Wire::OpenAi,
        "engine",
        deadline,
        Duration::from_secs(5),
    )
    .await;
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

fn error_retryable(status: StatusCode) -> bool {
    GatewayError::UpstreamStatus {
        status,
        body: Bytes::new(),
        retry_after: None,
    }
    .retryable()
}
