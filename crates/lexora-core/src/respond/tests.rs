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
