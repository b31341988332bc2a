//! Per-backend request field rules (seed 004: "some request JSON fields may
//! be changed on the fly to match a particular engine"): rename, remove and
//! set top-level fields of every request body sent to the backend.
//!
//! Only the top-level object is rebuilt; every member keeps its original
//! text, and bodies of backends without rules are not touched at all.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;

/// What to change in each request, applied in this order: `rename`,
/// `remove`, `set`.
#[derive(Debug, Clone, Default)]
pub struct FieldRules {
    /// `(from, to)`: the value of `from` moves to `to` (replacing it).
    pub rename: Vec<(String, String)>,
    pub remove: Vec<String>,
    /// Fields given this JSON value, whatever the client sent.
    pub set: Vec<(String, Box<RawValue>)>,
}

impl FieldRules {
    /// True when no rule changes anything.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty()
    }

    /// `body` with the rules applied. Bodies that are not JSON objects are
    /// refused: the rules cannot say what they mean there.
    pub fn apply(&self, body: &[u8]) -> Result<Bytes, String> {
        let mut object: IndexMap<String, Box<RawValue>> = serde_json::from_slice(body)
            .map_err(|e| format!("the request body is not a JSON object: {e}"))?;
        for (from, to) in &self.rename {
            if let Some(value) = object.shift_remove(from) {
                object.insert(to.clone(), value);
            }
        }
        for field in &self.remove {
            object.shift_remove(field);
        }
        for (field, value) in &self.set {
            object.insert(field.clone(), value.clone());
        }
        serde_json::to_vec(&object)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(value: serde_json::Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).expect("raw")
    }

    #[test]
    fn renames_removes_and_sets_keeping_the_rest_verbatim() {
        let rules = FieldRules {
            rename: vec![("max_completion_tokens".into(), "max_tokens".into())],
            remove: vec!["logit_bias".into()],
            set: vec![
                ("cache_prompt".into(), raw(json!(true))),
                (
                    "chat_template_kwargs".into(),
                    raw(json!({"enable_thinking": false})),
                ),
            ],
        };
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":  64,"logit_bias":{"1":2},"temperature":0.70}"#;
        let out = rules.apply(body).expect("applied");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.70,"max_tokens":64,"cache_prompt":true,"chat_template_kwargs":{"enable_thinking":false}}"#
        );
    }

    #[test]
    fn a_set_field_wins_over_the_clients() {
        let rules = FieldRules {
            set: vec![("n".into(), raw(json!(1)))],
            ..FieldRules::default()
        };
        let out = rules.apply(br#"{"n":4,"model":"m"}"#).expect("applied");
        assert_eq!(&out[..], br#"{"n":1,"model":"m"}"#);
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        let rules = FieldRules {
            remove: vec!["x".into()],
            ..FieldRules::default()
        };
        assert!(rules.apply(b"[1,2]").is_err());
        assert!(rules.apply(b"not json").is_err());
    }
}
