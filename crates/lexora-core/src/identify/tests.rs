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

#[test]
fn generated_ids_are_prefix_and_counter_in_hex() {
    let id = new_request_id();
    let text = id.to_str().expect("ascii");
    let (prefix, counter) = text
        .strip_prefix("lx-")
        .and_then(|rest| rest.split_once('-'))
        .expect("lx-PREFIX-COUNTER");
    assert_eq!(prefix.len(), 8);
    assert_eq!(counter.len(), 10);
    assert!(text[3..]
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let mut out = [0u8; 4];
    hex(0xbeef, &mut out);
    assert_eq!(&out, b"beef");
    hex(0x1_2345, &mut out);
    assert_eq!(&out, b"2345");
}
