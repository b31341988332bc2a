use super::*;

#[test]
fn parses_headers() {
    let (name, value) = parse_header("Authorization: Bearer x").expect("valid");
    assert_eq!(name, "authorization");
    assert_eq!(value, "Bearer x");
    assert!(parse_header("no colon").is_err());
}

#[test]
fn stream_flag_sets_body_field() {
    let cli = Cli::parse_from(["lexora-bench", "--url", "http://127.0.0.1:1/x", "--stream"]);
    let template = template(&cli).expect("template");
    let body: serde_json::Value = serde_json::from_slice(&template.body).expect("json");
    assert_eq!(body["stream"], true);
    assert!(template.stream);
}
