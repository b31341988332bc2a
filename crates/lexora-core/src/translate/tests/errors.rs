//! Error bodies both ways.

use super::super::{anthropic_error_to_openai, openai_error_to_anthropic};
use super::*;

#[test]
fn anthropic_error_fixtures() {
    for (name, body) in fixtures("anthropic_error") {
        snapshot_json(
            "anthropic_error",
            &name,
            &json(&anthropic_error_to_openai(&body)),
        );
    }
}

/// Fixture names start with the upstream status: `429_rate_limit.json`.
#[test]
fn openai_error_fixtures() {
    for (name, body) in fixtures("openai_error") {
        let status: u16 = name
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("fixture name starts with a status");
        let out = json(&openai_error_to_anthropic(status, &body));
        snapshot_json("openai_error", &name, &out);
    }
}

#[test]
fn documented_statuses_give_documented_types() {
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in cases {
        let out = json(&openai_error_to_anthropic(
            status,
            br#"{"error":{"message":"m"}}"#,
        ));
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": kind, "message": "m"}})
        );
    }
}

#[test]
fn anthropic_types_survive_a_round_trip_through_openai() {
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in cases {
        let original = json!({"type": "error", "error": {"type": kind, "message": "m"}});
        let openai = anthropic_error_to_openai(original.to_string().as_bytes());
        let back = json(&openai_error_to_anthropic(status, &openai));
        assert_eq!(back, original, "{kind}");
    }
}
