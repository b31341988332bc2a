//! Whatever a configuration file holds — a value of the wrong type, out of
//! range or absurd at any key, keys nobody knows — loading it never
//! panics, and a refusal names the file and, for a bad key, the key.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

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
        "claude": {"type": "anthropic", "api_key": "k", "models": [{"name": "c", "upstream": "u"}]},
        "local": {"type": "mock", "models": [{"name": "l"}]}
    });
    tree["auth"]["keys"] = json!([{"key": "sk-fuzz-0001", "user": "u", "models": ["m"]}]);
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
