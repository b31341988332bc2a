//! Per-backend field rules (seed 004: "some request JSON fields may be
//! changed on the fly for request and/or response to match a particular
//! engine"): rename, remove and set fields of every request body sent to a
//! backend, and of every answer (each chunk of a stream) it sends back.
//!
//! A field is named by a path: `max_tokens`, `chat_template_kwargs.enable_thinking`,
//! `choices.*.message.reasoning_content` (`*` is every element of an
//! array). Only the top-level members a rule reaches are rebuilt; every
//! other member keeps its original text, and backends without rules are not
//! touched at all.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What a rule does to the field its path names.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOp {
    /// Give the field this name, in the same object (replacing a field of
    /// that name).
    Rename(String),
    Remove,
    /// Give the field this value, whatever was there; missing parent
    /// objects are created.
    Set(Value),
}

/// One rule: a path (segments; `*` for every array element) and an op.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    pub path: Vec<String>,
    pub op: FieldOp,
}

/// Rules applied in order (the config lists renames, then removals, then
/// values set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldRules {
    pub rules: Vec<FieldRule>,
}

impl FieldRules {
    /// True when no rule changes anything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds a rule for a dotted `path`.
    pub fn push(&mut self, path: &str, op: FieldOp) {
        self.rules.push(FieldRule {
            path: path.split('.').map(str::to_owned).collect(),
            op,
        });
    }

    /// `body` with the rules applied. Bodies that are not JSON objects are
    /// refused: the rules cannot say what they mean there.
    pub fn apply(&self, body: &[u8]) -> Result<Bytes, String> {
        let mut object: IndexMap<String, Box<RawValue>> =
            serde_json::from_slice(body).map_err(|e| format!("not a JSON object: {e}"))?;
        for rule in &self.rules {
            let Some((head, rest)) = rule.path.split_first() else {
                continue;
            };
            if rest.is_empty() {
                apply_top(&mut object, head, &rule.op)?;
                continue;
            }
            let member = match object.get(head) {
                Some(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string())?,
                // Only a value set creates what is missing.
                None if matches!(rule.op, FieldOp::Set(_)) => Value::Object(Map::new()),
                None => continue,
            };
            let mut member = member;
            if apply_nested(&mut member, rest, &rule.op) {
                let raw = serde_json::value::to_raw_value(&member).map_err(|e| e.to_string())?;
                object.insert(head.clone(), raw);
            }
        }
        serde_json::to_vec(&object)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }
}

/// A rule on a top-level field: the other members stay raw text.
fn apply_top(
    object: &mut IndexMap<String, Box<RawValue>>,
    field: &str,
    op: &FieldOp,
) -> Result<(), String> {
    match op {
        FieldOp::Rename(to) => {
            if let Some(value) = object.shift_remove(field) {
                object.insert(to.clone(), value);
            }
        }
        FieldOp::Remove => {
            object.shift_remove(field);
        }
        FieldOp::Set(value) => {
            let raw = serde_json::value::to_raw_value(value).map_err(|e| e.to_string())?;
            object.insert(field.to_owned(), raw);
        }
    }
    Ok(())
}

/// A rule below the top level. True when `value` changed.
fn apply_nested(value: &mut Value, path: &[String], op: &FieldOp) -> bool {
    let Some((segment, rest)) = path.split_first() else {
        return false;
    };
    if segment == "*" {
        let Value::Array(items) = value else {
            return false;
        };
        let mut changed = false;
        for item in items {
            changed |= apply_nested(item, rest, op);
        }
        return changed;
    }
    let Value::Object(map) = value else {
        return false;
    };
    if !rest.is_empty() {
        if !map.contains_key(segment) {
            if !matches!(op, FieldOp::Set(_)) {
                return false;
            }
            map.insert(segment.clone(), Value::Object(Map::new()));
        }
        return map
            .get_mut(segment)
            .is_some_and(|child| apply_nested(child, rest, op));
    }
    match op {
        FieldOp::Rename(to) => match map.remove(segment) {
            Some(moved) => {
                map.insert(to.clone(), moved);
                true
            }
            None => false,
        },
        FieldOp::Remove => map.remove(segment).is_some(),
        FieldOp::Set(new) => {
            map.insert(segment.clone(), new.clone());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(list: &[(&str, FieldOp)]) -> FieldRules {
        let mut rules = FieldRules::default();
        for (path, op) in list {
            rules.push(path, op.clone());
        }
        rules
    }

    #[test]
    fn top_level_rules_keep_the_rest_verbatim() {
        let rules = rules(&[
            (
                "max_completion_tokens",
                FieldOp::Rename("max_tokens".into()),
            ),
            ("logit_bias", FieldOp::Remove),
            ("cache_prompt", FieldOp::Set(json!(true))),
        ]);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":  64,"logit_bias":{"1":2},"temperature":0.70}"#;
        let out = rules.apply(body).expect("applied");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.70,"max_tokens":64,"cache_prompt":true}"#
        );
    }

    #[test]
    fn nested_paths_reach_into_objects_and_every_array_element() {
        let rules = rules(&[
            (
                "choices.*.message.reasoning_content",
                FieldOp::Rename("reasoning".into()),
            ),
            ("timings", FieldOp::Remove),
            (
                "chat_template_kwargs.enable_thinking",
                FieldOp::Set(json!(false)),
            ),
        ]);
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"content":"a","reasoning_content":"r0"}},{"index":1,"message":{"content":"b"}}],"timings":{"n":1},"usage":{"total_tokens":3}}"#;
        let out: Value =
            serde_json::from_slice(&rules.apply(body).expect("applied")).expect("json");
        assert_eq!(
            out,
            json!({
                "id": "x",
                "choices": [
                    {"index": 0, "message": {"content": "a", "reasoning": "r0"}},
                    {"index": 1, "message": {"content": "b"}}
                ],
                "usage": {"total_tokens": 3},
                "chat_template_kwargs": {"enable_thinking": false}
            })
        );
    }

    #[test]
    fn a_set_field_wins_over_the_clients() {
        let rules = rules(&[("n", FieldOp::Set(json!(1)))]);
        let out = rules.apply(br#"{"n":4,"model":"m"}"#).expect("applied");
        assert_eq!(&out[..], br#"{"n":1,"model":"m"}"#);
    }

    #[test]
    fn missing_fields_are_left_alone() {
        let rules = rules(&[
            ("a.b", FieldOp::Remove),
            ("c.*.d", FieldOp::Rename("e".into())),
        ]);
        let out = rules.apply(br#"{"c":3}"#).expect("applied");
        assert_eq!(&out[..], br#"{"c":3}"#);
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        let rules = rules(&[("x", FieldOp::Remove)]);
        assert!(rules.apply(b"[1,2]").is_err());
        assert!(rules.apply(b"not json").is_err());
    }
}
