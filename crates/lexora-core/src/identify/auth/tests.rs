use http::HeaderValue;

use super::*;

fn key(models: &[&str], max: Option<Priority>) -> ApiKey {
    ApiKey {
        key: Secret::new("sk-test-0001"),
        user: "alice".into(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        priority: None,
        max_priority: max,
        requests_per_minute: None,
        tokens_per_minute: None,
    }
}

fn keys() -> Keys {
    Keys::new(&AuthConfig {
        admin_key: Some(Secret::new("admin-secret-1")),
        keys: vec![key(&[], None)],
    })
}

fn headers(name: &'static str, value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_static(value));
    h
}

#[test]
fn bearer_and_x_api_key_both_work() {
    let keys = keys();
    let by_bearer = keys
        .authenticate(&headers("authorization", "Bearer sk-test-0001"))
        .expect("valid");
    assert_eq!(by_bearer.map(|k| k.user.clone()).as_deref(), Some("alice"));
    assert!(keys
        .authenticate(&headers("x-api-key", "sk-test-0001"))
        .is_ok());
}

#[test]
fn missing_and_wrong_keys_are_401_without_echoing_the_key() {
    let keys = keys();
    let missing = keys.authenticate(&HeaderMap::new()).expect_err("missing");
    assert_eq!(missing.status(), 401);
    let wrong = keys
        .authenticate(&headers("authorization", "Bearer sk-guess-9999"))
        .expect_err("wrong");
    assert_eq!(wrong.status(), 401);
    assert!(!String::from_utf8_lossy(&wrong.body()).contains("sk-guess"));
}

#[test]
fn debug_output_shows_no_key() {
    assert!(!format!("{:?}", keys()).contains("sk-test"));
}

#[test]
fn open_gateway_lets_everyone_in() {
    let open = Keys::default();
    assert!(open
        .authenticate(&HeaderMap::new())
        .expect("open")
        .is_none());
    assert!(open.check_admin(&HeaderMap::new()).is_ok());
}

#[test]
fn admin_needs_the_admin_key() {
    let keys = keys();
    assert!(keys
        .check_admin(&headers("authorization", "Bearer admin-secret-1"))
        .is_ok());
    assert_eq!(
        keys.check_admin(&headers("authorization", "Bearer sk-test-0001"))
            .expect_err("user key")
            .status(),
        403
    );
    assert_eq!(
        keys.check_admin(&HeaderMap::new())
            .expect_err("none")
            .status(),
        401
    );
    let no_admin = Keys::new(&AuthConfig {
        admin_key: None,
        keys: vec![key(&[], None)],
    });
    assert_eq!(
        no_admin
            .check_admin(&headers("authorization", "Bearer sk-test-0001"))
            .expect_err("disabled")
            .status(),
        403
    );
}

#[test]
fn model_allow_lists() {
    assert!(check_model(&key(&[], None), Some("any")).is_ok());
    assert!(check_model(&key(&["a"], None), Some("a")).is_ok());
    assert_eq!(
        check_model(&key(&["a"], None), Some("b"))
            .expect_err("b")
            .status(),
        403
    );
}

#[test]
fn priority_is_capped_by_the_key() {
    let capped = key(&[], Some(Priority::Normal));
    assert_eq!(
        priority(Some(Priority::High), Some(&capped)),
        Priority::Normal
    );
    assert_eq!(priority(Some(Priority::Low), Some(&capped)), Priority::Low);
    assert_eq!(priority(None, None), Priority::Normal);
    let mut defaulted = key(&[], None);
    defaulted.priority = Some(Priority::Low);
    assert_eq!(priority(None, Some(&defaulted)), Priority::Low);
}
