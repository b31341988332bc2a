use super::*;

#[test]
fn client_request_ids_are_kept_when_sane() {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
    assert_eq!(request_id(&headers), "abc-123");
    headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
    assert_ne!(request_id(&headers), "has space");
    let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
    headers.insert(REQUEST_ID, HeaderValue::from_str(&long).expect("header"));
    assert_ne!(request_id(&headers), long.as_str());
}

#[test]
fn generated_ids_are_unique() {
    let a = request_id(&HeaderMap::new());
    let b = request_id(&HeaderMap::new());
    assert_ne!(a, b);
    assert!(a.to_str().expect("ascii").starts_with("lx-"));
}
