//! Reading the layers of configuration into one JSON tree: the file, then
//! `LEXORA_` environment variables on top, remembering where each key came
//! from so an error can name the file or the variable.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ConfigError;

/// Which layer set a key; named in every config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Defaults,
    /// The config file.
    File(PathBuf),
    /// A `LEXORA_` variable.
    Env(String),
    /// A flag such as `--port`.
    CommandLine(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defaults => f.write_str("built-in defaults"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::CommandLine(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// The merged tree and the keys that the environment or flags overrode.
#[derive(Debug, Default)]
pub struct Layers {
    pub tree: Value,
    pub file: Option<PathBuf>,
    overrides: Vec<(Vec<String>, Origin)>,
    /// The backends' names in the order the file wrote them. The tree's
    /// objects keep their keys sorted, and the order of `backends` is the
    /// order they are tried in for a model.
    pub backend_order: Vec<String>,
}

impl Layers {
    /// Starts from a file's contents, or from nothing.
    pub fn from_file(file: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = file else {
            return Ok(Self {
                tree: Value::Object(Map::new()),
                ..Self::default()
            });
        };
        let origin = Origin::File(path.to_path_buf());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        let tree = parse_file(path, &text).map_err(|message| ConfigError::Syntax {
            origin: origin.clone(),
            message,
        })?;
        let tree = match tree {
            Value::Null => Value::Object(Map::new()),
            Value::Object(map) => Value::Object(map),
            _ => {
                return Err(ConfigError::Syntax {
                    origin,
                    message: "the top level must be a mapping of sections".into(),
                })
            }
        };
        Ok(Self {
            tree,
            file: Some(path.to_path_buf()),
            overrides: Vec::new(),
            backend_order: backend_order(path, &text),
        })
    }

    /// Lays `LEXORA_*` variables over the tree. `defaults` is the serialized
    /// default config: it says which top-level names are config keys and
    /// which type a string from the environment should become.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
        defaults: &Value,
    ) -> Result<(), ConfigError> {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("LEXORA_")?.to_ascii_lowercase();
                let path: Vec<String> = key.split("__").map(str::to_owned).collect();
                // Single-word variables such as LEXORA_CONFIG are not config
                // keys unless they name a top-level setting.
                if path.len() == 1 && defaults.get(&path[0]).is_none() {
                    return None;
                }
                Some((name, path, value))
            })
            .collect();
        // Stable order: a variable's effect must not depend on the process
        // environment's iteration order.
        vars.sort();
        for (name, path, value) in vars {
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid {
                    origin: Origin::Env(name.clone()),
                    key: path.join("."),
                    message: "empty key segment (use `__` only between names)".into(),
                });
            }
            let typed = if is_secret(&path) {
                // As written: YAML would read `00123` as the number 123.
                Value::String(value.clone())
            } else {
                typed_env_value(&value, lookup(defaults, &path))
            };
            self.set(&path, typed.clone(), Origin::Env(name.clone()))?;
            // Seed 000 documents LEXORA_VLLM__URL as "the vLLM server": when
            // a seed 001 file also lists `backends.vllm`, the variable must
            // reach that backend too, or it would silently do nothing.
            if path.len() == 2 && path[0] == "vllm" {
                let shadow = ["backends".to_owned(), "vllm".to_owned(), path[1].clone()];
                if lookup(&self.tree, &shadow[..2]).is_some_and(Value::is_object) {
                    self.set(&shadow, typed, Origin::Env(name))?;
                }
            }
        }
        Ok(())
    }

    /// Sets one key from a command-line flag.
    pub fn set_flag(&mut self, path: &[&str], value: Value, flag: &'static str) {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        // Flags only name known scalar keys, so this cannot hit a non-object.
        let _ = self.set(&path, value, Origin::CommandLine(flag));
    }

    fn set(&mut self, path: &[String], value: Value, origin: Origin) -> Result<(), ConfigError> {
        let mut node = &mut self.tree;
        for (depth, segment) in path.iter().enumerate() {
            let Value::Object(map) = node else {
                return Err(ConfigError::Invalid {
                    origin,
                    key: path[..depth].join("."),
                    message: "is not a section, so it has no sub-keys".into(),
                });
            };
            if depth + 1 == path.len() {
                map.insert(segment.clone(), value);
                break;
            }
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if node.is_null() {
                *node = Value::Object(Map::new());
            }
        }
        self.overrides.push((path.to_vec(), origin));
        Ok(())
    }

    /// The layer that set the key at `path` (dotted, as serde reports it).
    pub fn origin_of(&self, key: &str) -> Origin {
        let segments: Vec<&str> = key
            .split(['.', '['])
            .map(|s| s.trim_end_matches(']'))
            .filter(|s| !s.is_empty())
            .collect();
        // The latest override whose path is a prefix of the key, or that the
        // key is a prefix of (an unknown field is reported at its parent).
        let found = self.overrides.iter().rev().find(|(path, _)| {
            let n = path.len().min(segments.len());
            n > 0 && path[..n].iter().zip(&segments[..n]).all(|(a, b)| a == b)
        });
        match (found, &self.file) {
            (Some((_, origin)), _) => origin.clone(),
            (None, Some(file)) => Origin::File(file.clone()),
            (None, None) => Origin::Defaults,
        }
    }
}

/// The names under `backends` in a YAML file, in the order written. A Lua
/// table has no order (its backends go by name), and a file whose
/// `backends` is not a mapping gets its error from the full parse.
fn backend_order(path: &Path, text: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        backends: Option<indexmap::IndexMap<String, serde::de::IgnoredAny>>,
    }
    if is_lua(path) {
        return Vec::new();
    }
    serde_yaml_ng::from_str::<Probe>(text)
        .ok()
        .and_then(|probe| probe.backends)
        .map(|backends| backends.into_keys().collect())
        .unwrap_or_default()
}

/// A file's contents as a tree: `.lua` files are run (see [`super::lua`]),
/// anything else is read as YAML.
fn parse_file(path: &Path, text: &str) -> Result<Value, String> {
    if is_lua(path) {
        super::lua::parse(path, text)
    } else {
        serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("invalid YAML: {e}"))
    }
}

fn is_lua(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("lua"))
}

/// Whether `path` names a credential (an API key, the admin key, a
/// client key, an upstream header's value).
fn is_secret(path: &[String]) -> bool {
    let last = path.last().map_or("", String::as_str);
    matches!(last, "api_key" | "admin_key" | "key")
        || path.len() >= 2 && path[path.len() - 2] == "headers"
}

fn lookup<'a>(tree: &'a Value, path: &[impl AsRef<str>]) -> Option<&'a Value> {
    path.iter()
        .try_fold(tree, |node, key| node.get(key.as_ref()))
}

/// Environment values are strings; give them the type the key expects so
/// `LEXORA_SERVER__PORT=8001` is a number and `LEXORA_DEFAULT_MODEL=qwen3`
/// stays a string. Unparseable values stay strings and fail type checking
/// with a message that names the variable.
fn typed_env_value(raw: &str, default: Option<&Value>) -> Value {
    match default {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Bool(_)) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => Value::String(raw.to_owned()),
        },
        Some(Value::Number(_)) => serde_json::from_str::<serde_json::Number>(raw.trim())
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
        _ => serde_yaml_ng::from_str::<Value>(raw)
            .ok()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    }
}
