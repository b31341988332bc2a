//! Lua values to the JSON tree every config layer is made of.
//!
//! The rules, so a Lua file means what its YAML twin means:
//! - Every global the script defines (new, or changed from the sandbox's
//!   own) is a top-level section; functions are helpers and are skipped.
//! - A table whose keys are exactly `1..n` is a list; a table whose keys are
//!   all strings is a mapping. Anything else (gaps, mixed keys, float or
//!   boolean keys) is an error naming the key, e.g. `backends.a.models[3]`.
//! - Integers stay integers, floats stay floats (`8001.0` is not a port, as
//!   in YAML); NaN and infinities are errors. Strings must be UTF-8.
//! - Mapping keys are taken in sorted order: Lua keeps no order, and sorting
//!   makes the result the same on every run (the YAML tree is sorted too).
//! - `{}` cannot say whether it is an empty list or an empty mapping, so it
//!   becomes whichever the schema expects at that key: a mapping, unless
//!   [`RawConfig`] wants a list there (`models = {}`, `auth.keys = {}`).
//! - A table inside itself (a cycle), nesting deeper than [`MAX_DEPTH`] or
//!   more than [`MAX_VALUES`] values (shared tables are copied at every use)
//!   is an error: the copy would not end or would not fit.

use std::collections::HashMap;
use std::ffi::c_void;

use mlua::{Lua, Table, Value as LuaValue};
use serde_json::{Map, Number, Value};

use crate::config::RawConfig;

/// Tables nested deeper than this are refused (the config needs about 5).
pub const MAX_DEPTH: usize = 64;
/// Values in the whole tree at most.
pub const MAX_VALUES: usize = 100_000;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// The converted globals and where the empty tables were.
#[derive(Debug)]
pub(super) struct Converted {
    pub tree: Value,
    pub empty_tables: Vec<Vec<Step>>,
}

/// A key path as config errors spell it: `backends.vllm.models[2]`.
pub(super) fn path_string(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) if out.is_empty() => out.push_str(key),
            Step::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The sandbox's own globals (libraries, `_G`, `_VERSION`) before the
/// script runs, so that only what the script defines is exported.
pub(super) fn snapshot_globals(lua: &Lua) -> mlua::Result<HashMap<String, LuaValue>> {
    let mut before = HashMap::new();
    for pair in lua.globals().pairs::<LuaValue, LuaValue>() {
        let (key, value) = pair?;
        if let LuaValue::String(key) = key {
            before.insert(key.to_string_lossy(), value);
        }
    }
    Ok(before)
}

/// The script's globals as a JSON object.
pub(super) fn globals(lua: &Lua, before: &HashMap<String, LuaValue>) -> Result<Converted, String> {
    let mut converter = Converter::default();
    let mut sections = Map::new();
    let mut defined = Vec::new();
    for pair in lua.globals().pairs::<LuaValue, LuaValue>() {
        let (key, value) = pair.map_err(|e| format!("Lua error: {e}"))?;
        // `_G[1] = x` is not a variable; only names can be sections.
        let LuaValue::String(key) = key else { continue };
        let Ok(key) = key.to_str().map(|k| k.to_owned()) else {
            continue;
        };
        if before.get(&key) == Some(&value) {
            continue;
        }
        if matches!(
            value,
            LuaValue::Function(_) | LuaValue::Thread(_) | LuaValue::UserData(_)
        ) {
            continue;
        }
        defined.push((key, value));
    }
    defined.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in defined {
        converter.path.push(Step::Key(key.clone()));
        let converted = converter.value(value)?;
        converter.path.pop();
        sections.insert(key, converted);
    }
    Ok(Converted {
        tree: Value::Object(sections),
        empty_tables: converter.empty_tables,
    })
}

#[derive(Default)]
struct Converter {
    path: Vec<Step>,
    /// Tables being converted, to detect a table inside itself.
    ancestors: Vec<*const c_void>,
    values: usize,
    empty_tables: Vec<Vec<Step>>,
}

impl Converter {
    fn fail(&self, message: impl std::fmt::Display) -> String {
        format!("Lua error: key `{}`: {message}", path_string(&self.path))
    }

    fn value(&mut self, value: LuaValue) -> Result<Value, String> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(self.fail(format!(
                "the configuration has more than {MAX_VALUES} values"
            )));
        }
        match value {
            LuaValue::Nil => Ok(Value::Null),
            LuaValue::Boolean(b) => Ok(Value::Bool(b)),
            LuaValue::Integer(i) => Ok(Value::Number(i.into())),
            LuaValue::Number(f) => Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| self.fail(format!("{f} is not a number a config can hold"))),
            LuaValue::String(s) => s
                .to_str()
                .map(|s| Value::String(s.to_owned()))
                .map_err(|_| self.fail("the string is not valid UTF-8")),
            LuaValue::Table(table) => self.table(table),
            other => Err(self.fail(format!("a {} cannot be a config value", other.type_name()))),
        }
    }

    fn table(&mut self, table: Table) -> Result<Value, String> {
        if self.ancestors.len() >= MAX_DEPTH {
            return Err(self.fail(format!("tables are nested deeper than {MAX_DEPTH} levels")));
        }
        let pointer = table.to_pointer();
        if self.ancestors.contains(&pointer) {
            return Err(self.fail("the table contains itself (a cycle)"));
        }
        let mut named = Vec::new();
        let mut indexed = Vec::new();
        for pair in table.pairs::<LuaValue, LuaValue>() {
            let (key, value) = pair.map_err(|e| self.fail(e))?;
            match key {
                LuaValue::String(key) => {
                    let key = key
                        .to_str()
                        .map(|k| k.to_owned())
                        .map_err(|_| self.fail("a key is not valid UTF-8"))?;
                    named.push((key, value));
                }
                LuaValue::Integer(i) => indexed.push((i, value)),
                other => {
                    let shown = other
                        .to_string()
                        .unwrap_or_else(|_| other.type_name().into());
                    return Err(self.fail(format!(
                        "`[{shown}]` is not a valid key (use names, or list positions 1, 2, 3, ...)"
                    )));
                }
            }
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        indexed.sort_by_key(|(i, _)| *i);

        if named.is_empty() && indexed.is_empty() {
            self.empty_tables.push(self.path.clone());
            return Ok(Value::Object(Map::new()));
        }
        if let (Some((name, _)), Some((index, _))) = (named.first(), indexed.first()) {
            return Err(self.fail(format!(
                "mixes list items (`[{index}]`) with named keys (`{name}`); use one or the other"
            )));
        }
        for (expected, (index, _)) in (1..).zip(&indexed) {
            if *index != expected {
                // Named in Lua's own terms: this is about the script's
                // `[n] =` keys, not about a position in the converted list.
                return Err(self.fail(format!(
                    "list positions must run 1, 2, 3, ... without gaps; found [{index}] \
                     where [{expected}] was expected"
                )));
            }
        }

        self.ancestors.push(pointer);
        let result = if indexed.is_empty() {
            self.object(named)
        } else {
            self.array(indexed)
        };
        self.ancestors.pop();
        result
    }

    fn object(&mut self, entries: Vec<(String, LuaValue)>) -> Result<Value, String> {
        let mut map = Map::new();
        for (key, value) in entries {
            self.path.push(Step::Key(key.clone()));
            let converted = self.value(value);
            self.path.pop();
            map.insert(key, converted?);
        }
        Ok(Value::Object(map))
    }

    fn array(&mut self, entries: Vec<(i64, LuaValue)>) -> Result<Value, String> {
        let mut items = Vec::with_capacity(entries.len());
        // Config paths count from 0, as serde reports them: Lua's `[1]` is
        // `models[0]` in an error, the same as in the YAML twin.
        for (position, (_, value)) in entries.into_iter().enumerate() {
            self.path.push(Step::Index(position));
            let converted = self.value(value);
            self.path.pop();
            items.push(converted?);
        }
        Ok(Value::Array(items))
    }
}

/// Turns an empty table into an empty list where the schema wants a list.
///
/// serde reports the first key it cannot read; when that key is an empty
/// table, it is tried as `[]`. A key that fails as a list too goes back to
/// `{}` and is left for the real deserialization to report. This stops at
/// the first error elsewhere, which the load reports anyway.
pub(super) fn settle_empty_tables(converted: &mut Converted) {
    let mut candidates: HashMap<String, Vec<Step>> = converted
        .empty_tables
        .iter()
        .map(|path| (path_string(path), path.clone()))
        .collect();
    let mut flipped: Option<(String, Vec<Step>)> = None;
    // Each round removes a candidate, so this ends.
    loop {
        let Err(error) = serde_path_to_error::deserialize::<_, RawConfig>(&converted.tree) else {
            return;
        };
        let key = error.path().to_string();
        if let Some((last, steps)) = &flipped {
            if *last == key {
                if let Some(slot) = locate(&mut converted.tree, steps) {
                    *slot = Value::Object(Map::new());
                }
                return;
            }
        }
        let Some(steps) = candidates.remove(&key) else {
            return;
        };
        let Some(slot) = locate(&mut converted.tree, &steps) else {
            return;
        };
        *slot = Value::Array(Vec::new());
        flipped = Some((key, steps));
    }
}

fn locate<'a>(tree: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(tree, |node, step| match step {
        Step::Key(key) => node.get_mut(key.as_str()),
        Step::Index(i) => node.get_mut(*i),
    })
}
