//! Whatever a configuration file holds — a value of the wrong type, out of
//! range or absurd at any key, keys nobody knows — and whatever `LEXORA_`
//! variables say, loading never panics, and a refusal names the file or
//! the variable and, for a bad key, the key, and shows no secret.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// The secrets of the valid configuration: no refusal may show them.
const PROVIDER_KEY: &str = "sk-ant-fuzz-provider-secret";
const CLIENT_KEY: &str = "sk-fuzz-client-secret";

/// Values put at random places of a valid configuration.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(18_446_744_073_709_551_615u64)),
        Just(json!("")),
        Just(json!("x")),
        Just(json!("1s")),
        Just(json!("http://")),
        Just(json!("http://127.0.0.1:99999")),
        Just(json!("\u{0}")),
        Just(json!([])),
        Just(json!([{"name": ""}])),
        Just(json!({})),
        Just(json!({"unknown": 1})),
    ]
}

/// A valid configuration with every section written out (the defaults)
/// and backends of several kinds.
fn valid() -> Value {
    let mut tree = defaults_tree();
    tree["backends"] = json!({
        "engine": {"url": "http://127.0.0.1:1", "models": [{"name": "m"}]},
        "claude": {"type": "anthropic", "api_key": PROVIDER_KEY, "models": [{"name": "c", "upstream": "u"}]},
        "local": {"type": "mock", "models": [{"name": "l"}]}
    });
    tree["auth"]["keys"] = json!([{"key": CLIENT_KEY, "user": "u", "models": ["m"]}]);
    tree["rate_limits"]["users"] = json!({"u": {"requests_per_minute": 10}});
    tree["fallbacks"] = json!({"m": ["l"]});
    tree
}

/// Replaces the value that `path` leads to (each index picks a member or
/// an element, as deep as the path goes), or adds an unknown key there.
fn mutate(tree: &mut Value, path: &[prop::sample::Index], value: Value, unknown: bool) {
    // The place as a JSON pointer, found without holding a borrow.
    let mut pointer = String::new();
    let mut node = &*tree;
    for index in path {
        let (step, child) = match node {
            Value::Object(map) if !map.is_empty() => {
                let (key, child) = map.iter().nth(index.index(map.len())).expect("in range");
                (key.replace('~', "~0").replace('/', "~1"), child)
            }
            Value::Array(items) if !items.is_empty() => {
                let at = index.index(items.len());
                (at.to_string(), &items[at])
            }
            _ => break,
        };
        if unknown && !(child.is_object() || child.is_array()) {
            break;
        }
        pointer = format!("{pointer}/{step}");
        node = child;
    }
    let Some(place) = tree.pointer_mut(&pointer) else {
        return;
    };
    match place {
        Value::Object(map) if unknown => {
            map.insert("no_such_key".to_owned(), value);
        }
        _ => *place = value,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_configuration_loads_or_is_refused_naming_the_file_and_key(
        edits in proptest::collection::vec(
            (proptest::collection::vec(any::<prop::sample::Index>(), 1..5), odd_value(), proptest::bool::weighted(0.1)),
            1..4,
        ),
    ) {
        let mut tree = valid();
        for (path, value, unknown) in edits {
            mutate(&mut tree, &path, value, unknown);
        }
        let text = serde_yaml_ng::to_string(&tree).expect("yaml");
        let (_dir, path) = write_yaml(&text);
        match load_with(Some(&path), &[]) {
            Ok(_) => {}
            Err(error) => {
                let message = error.to_string();
                prop_assert!(
                    !message.contains(PROVIDER_KEY) && !message.contains(CLIENT_KEY),
                    "a secret in a refusal: {message}"
                );
                prop_assert!(
                    message.contains(&*path.to_string_lossy()),
                    "the file is not named: {message}\n{text}"
                );
                if let ConfigError::Invalid { key, message: why, .. } = &error {
                    prop_assert!(!key.is_empty() && !why.is_empty(), "{message}\n{text}");
                }
            }
        }
    }
}

/// A `LEXORA_` variable for a key of the configuration (found by walking
/// the valid tree), or for one nobody knows.
fn variable() -> impl Strategy<Value = (String, String)> {
    let name = (
        proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(path, unknown)| {
            let tree = valid();
            let mut node = &tree;
            let mut segments = Vec::new();
            for index in path {
                let Value::Object(map) = node else { break };
                if map.is_empty() {
                    break;
                }
                let (key, child) = map.iter().nth(index.index(map.len())).expect("in range");
                segments.push(key.to_ascii_uppercase());
                node = child;
            }
            if unknown {
                segments.push("NO_SUCH_KEY".to_owned());
            }
            format!("LEXORA_{}", segments.join("__"))
        });
    let value = proptest::sample::select(
        &[
            "",
            "x",
            "-1",
            "0",
            "0.5",
            "1e300",
            "true",
            "http://",
            "[]",
            "{a: 1}",
            "18446744073709551616",
            "\u{0}",
            "sk-fuzz-0001",
        ][..],
    )
    .prop_map(str::to_owned);
    (name, value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_variables_load_or_are_refused_naming_the_variable_or_the_file(
        variables in proptest::collection::vec(variable(), 1..4),
    ) {
        let text = serde_yaml_ng::to_string(&valid()).expect("yaml");
        let (_dir, path) = write_yaml(&text);
        let env: Vec<(&str, &str)> =
            variables.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        if let Err(error) = load_with(Some(&path), &env) {
            let message = error.to_string();
            let named = message.contains(&*path.to_string_lossy())
                || variables.iter().any(|(name, _)| message.contains(name.as_str()));
            prop_assert!(named, "neither the file nor a variable is named: {message}\n{variables:?}");
            if let ConfigError::Invalid { key, message: why, .. } = &error {
                prop_assert!(!key.is_empty() && !why.is_empty(), "{message}");
            }
        }
    }
}
