use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::config::{defaults_tree, Config, ConfigError, Layers};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples")
}

/// Runs `text` as if read from `t.lua`.
fn tree(text: &str) -> Result<Value, String> {
    parse(Path::new("t.lua"), text)
}

fn tree_ok(text: &str) -> Value {
    match tree(text) {
        Ok(tree) => tree,
        Err(e) => panic!("{text:?} failed: {e}"),
    }
}

fn tree_err(text: &str) -> String {
    match tree(text) {
        Ok(tree) => panic!("{text:?} should fail, gave {tree}"),
        Err(e) => e,
    }
}

/// A Lua file in a throwaway directory, removed on drop.
struct LuaFile {
    dir: PathBuf,
    path: PathBuf,
}

impl LuaFile {
    fn new(text: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lexora-lua-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join("gateway.lua");
        std::fs::write(&path, text).expect("write temp config");
        Self { dir, path }
    }
}

impl Drop for LuaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load_with(path: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut layers = Layers::from_file(Some(path))?;
    let vars = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    layers.apply_env(vars, &defaults_tree())?;
    Config::from_layers(layers)
}

fn load_lua(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let file = LuaFile::new(text);
    load_with(&file.path, env)
}

/// The error of loading `text` as a file, and the file's path.
fn load_err(text: &str) -> (String, String) {
    let file = LuaFile::new(text);
    match load_with(&file.path, &[]) {
        Ok(config) => panic!("{text:?} should fail, gave {config:?}"),
        Err(e) => (e.to_string(), file.path.display().to_string()),
    }
}

#[test]
fn scalars_lists_and_mappings_convert() {
    let tree = tree_ok(
        r#"
        int = 42
        float = 1.5
        whole_float = 8.0
        yes = true
        text = "héllo"
        list = { 1, "two", 3.5, false }
        nested = { a = { b = { 1, { c = "d" } } }, e = { { f = 1 }, { f = 2 } } }
        local hidden = 5
        function helper() return 1 end
        "#,
    );
    assert_eq!(
        tree,
        json!({
            "int": 42,
            "float": 1.5,
            "whole_float": 8.0,
            "yes": true,
            "text": "héllo",
            "list": [1, "two", 3.5, false],
            "nested": { "a": { "b": [1, { "c": "d" }] }, "e": [{ "f": 1 }, { "f": 2 }] },
        })
    );
    assert!(tree["int"].is_i64(), "integers stay integers");
    assert!(tree["whole_float"].is_f64(), "floats stay floats");
}

#[test]
fn computed_values_and_explicit_positions_work() {
    let tree = tree_ok(
        r#"
        local models = {}
        for i = 1, 3 do models[#models + 1] = { name = "m" .. i } end
        backends = { a = { models = models, timeout = 2 * 60 } }
        explicit = { [1] = "a", [2] = "b" }
        "#,
    );
    assert_eq!(
        tree["backends"]["a"]["models"],
        json!([{ "name": "m1" }, { "name": "m2" }, { "name": "m3" }])
    );
    assert_eq!(tree["backends"]["a"]["timeout"], json!(120));
    assert_eq!(tree["explicit"], json!(["a", "b"]));
}

#[test]
fn an_empty_script_is_an_empty_mapping() {
    assert_eq!(tree_ok("-- nothing here\n"), json!({}));
    assert_eq!(tree_ok("local x = { 1 }\n"), json!({}));
}

#[test]
fn empty_tables_become_what_the_schema_expects() {
    let tree = tree_ok(
        r#"
        server = {}
        backends = { a = { url = "http://x", models = {}, headers = {} } }
        auth = { keys = {} }
        fallbacks = { m = {} }
        rate_limits = { users = { bob = {} } }
        "#,
    );
    assert_eq!(tree["server"], json!({}));
    assert_eq!(tree["backends"]["a"]["models"], json!([]));
    assert_eq!(tree["backends"]["a"]["headers"], json!({}));
    assert_eq!(tree["auth"]["keys"], json!([]));
    assert_eq!(tree["fallbacks"]["m"], json!([]));
    assert_eq!(tree["rate_limits"]["users"]["bob"], json!({}));

    let config = load_lua("backends = {}\n", &[]).expect("backends = {} loads");
    assert_eq!(config.backends.len(), 1, "no backends: the `vllm` default");
    let config = load_lua(
        "backends = { a = { url = \"http://x\", models = {} } }\n",
        &[],
    )
    .expect("models = {} loads");
    assert!(config.backends[0].models.is_empty());
    assert!(config.raw.rate_limits.users.is_empty());
}

#[test]
fn an_empty_table_where_neither_fits_stays_a_mapping() {
    assert_eq!(
        tree_ok("server = { port = {} }\n")["server"]["port"],
        json!({})
    );
    let (text, path) = load_err("server = { port = {} }\n");
    assert!(text.contains("key `server.port`"), "{text}");
    assert!(text.contains("map"), "{text}");
    assert!(text.contains(&path), "{text}");
}

#[test]
fn tables_that_are_not_lists_or_mappings_name_the_key() {
    let text = tree_err(
        "backends = { vllm = { models = { [1] = { name = 'a' }, [3] = { name = 'b' } } } }",
    );
    assert!(text.contains("key `backends.vllm.models`"), "{text}");
    assert!(text.contains("[3]") && text.contains("[2]"), "{text}");

    let text = tree_err("backends = { vllm = { models = { { name = 'a' }, url = 'x' } } }");
    assert!(text.contains("key `backends.vllm.models`"), "{text}");
    assert!(text.contains("mixes"), "{text}");

    let text = tree_err("queue = { [1.5] = 1 }");
    assert!(
        text.contains("key `queue`") && text.contains("1.5"),
        "{text}"
    );

    let text = tree_err("queue = { [true] = 1 }");
    assert!(
        text.contains("key `queue`") && text.contains("true"),
        "{text}"
    );

    let text = tree_err("queue = { [0] = 'a' }");
    assert!(text.contains("[0]"), "{text}");
}

#[test]
fn values_json_cannot_hold_name_the_key() {
    let text = tree_err(
        "backends = { vllm = { models = { { name = 'a' }, { name = 'b' }, function() end } } }",
    );
    assert!(text.contains("key `backends.vllm.models[2]`"), "{text}");
    assert!(text.contains("function"), "{text}");

    let text = tree_err("health = { check_interval = 0/0 }");
    assert!(text.contains("key `health.check_interval`"), "{text}");
    let text = tree_err("health = { check_interval = math.huge }");
    assert!(text.contains("key `health.check_interval`"), "{text}");

    let text = tree_err("logging = { level = '\\xff' }");
    assert!(
        text.contains("key `logging.level`") && text.contains("UTF-8"),
        "{text}"
    );
}

#[test]
fn cycles_deep_nesting_and_huge_trees_are_refused() {
    let text = tree_err("backends = { a = {} }\nbackends.a.again = backends");
    assert!(text.contains("key `backends.a.again`"), "{text}");
    assert!(text.contains("cycle"), "{text}");

    let text = tree_err("local t = {} for i = 1, 200 do t = { t } end\ndeep = t");
    assert!(text.contains("deeper than"), "{text}");

    // Shared tables are copied at every use: 2^40 values from 40 lines.
    let text = tree_err("local t = { 1 } for i = 1, 40 do t = { t, t } end\nwide = t");
    assert!(text.contains("more than"), "{text}");
}

#[test]
fn the_sandbox_has_no_way_out() {
    for (script, name) in [
        ("x = io.open('/etc/passwd')", "io"),
        ("x = os.getenv('HOME')", "os"),
        ("x = require('socket')", "require"),
        ("x = dofile('/etc/passwd')", "dofile"),
        ("x = loadfile('/etc/passwd')", "loadfile"),
        ("x = load('return 1')", "load"),
        ("x = debug.getinfo(1)", "debug"),
        ("x = package.path", "package"),
        ("print('hello')", "print"),
        ("x = string.dump(function() end)", "dump"),
    ] {
        let (text, path) = load_err(script);
        assert!(text.contains(&path), "{script}: {text}");
        assert!(text.contains("Lua error"), "{script}: {text}");
        assert!(text.contains(&format!("'{name}'")), "{script}: {text}");
        assert!(
            text.contains("gateway.lua:1:"),
            "{script} names the line: {text}"
        );
    }
    // What a config needs is there.
    let tree = tree_ok(
        "x = { string.format('%s-%d', 'a', 1), math.max(1, 2), table.concat({ 'a', 'b' }, ','), utf8.char(72) }",
    );
    assert_eq!(tree["x"], json!(["a-1", 2, "a,b", "H"]));
}

#[test]
fn an_endless_loop_is_stopped_quickly() {
    let started = Instant::now();
    let (text, path) = load_err("server = {}\nwhile true do end\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(text.contains(&path), "{text}");
    assert!(text.contains("gateway.lua:2:"), "{text}");
    assert!(text.contains("instructions"), "{text}");
}

#[test]
fn a_memory_bomb_is_stopped() {
    let started = Instant::now();
    let (text, path) = load_err("local s = 'x'\nwhile true do s = s .. s end\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(text.contains(&path), "{text}");
    assert!(text.contains("16 MiB"), "{text}");
    let text = tree_err("x = string.rep('x', 1 << 30)");
    assert!(text.contains("16 MiB"), "{text}");
}

#[test]
fn a_long_c_call_is_cut_off_by_the_time_limit() {
    // One `find` call does quadratic work in C, where the instruction hook
    // never runs; only the wall-time limit can stop it.
    let limits = Limits {
        time: Duration::from_millis(50),
        ..LIMITS
    };
    let started = Instant::now();
    let result = parse_with(
        Path::new("t.lua"),
        "x = string.rep('a', 30000):find('.-b')",
        limits,
    );
    let elapsed = started.elapsed();
    let Err(text) = result else {
        panic!("the call finished within the limit; make it slower");
    };
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(text.contains("did not finish within 0.05 s"), "{text}");
}

#[test]
fn syntax_and_runtime_errors_name_file_and_line() {
    let (text, path) = load_err("server = {\n  port = 8001,\n");
    assert!(text.contains(&path), "{text}");
    assert!(
        text.contains("Lua error: syntax error: gateway.lua:3:"),
        "{text}"
    );

    let (text, path) = load_err("server = {}\nserver.port = nil + 1\n");
    assert!(text.contains(&path), "{text}");
    assert!(text.contains("Lua error: gateway.lua:2:"), "{text}");
    assert!(text.contains("arithmetic"), "{text}");
    assert!(!text.contains("traceback"), "one line: {text}");

    let (text, _) = load_err("error('port must be set')\n");
    assert!(text.contains("gateway.lua:1: port must be set"), "{text}");
}

#[test]
fn conversion_errors_name_the_file() {
    let (text, path) = load_err("backends = { a = { models = { function() end } } }\n");
    assert!(text.contains(&path), "{text}");
    assert!(text.contains("key `backends.a.models[0]`"), "{text}");
}

#[test]
fn schema_errors_name_the_key_and_the_lua_file() {
    let (text, path) = load_err("server = { port = 70000 }\n");
    assert!(text.contains("server.port"), "{text}");
    assert!(text.contains("70000"), "{text}");
    assert!(text.contains(&path), "{text}");

    let (text, path) = load_err("server = { prot = 1 }\n");
    assert!(text.contains("key `server.prot`"), "{text}");
    assert!(text.contains("unknown field"), "{text}");
    assert!(text.contains(&path), "{text}");

    let (text, _) = load_err("servr = { port = 1 }\n");
    assert!(text.contains("key `servr`"), "{text}");

    let (text, path) = load_err(
        "backends = { a = { url = 'http://x', models = { { name = 'a' }, { name = '' } } } }\n",
    );
    assert!(text.contains("key `backends.a.models[1].name`"), "{text}");
    assert!(text.contains(&path), "{text}");
}

#[test]
fn lua_and_yaml_twins_mean_the_same() {
    let load = |name: &str| {
        let layers = Layers::from_file(Some(&examples().join(name))).expect("example parses");
        Config::from_layers(layers).expect("example is valid")
    };
    let lua = load("gateway.lua");
    let yaml = load("gateway.yaml");
    let lua_raw = serde_json::to_value(&lua.raw).expect("serializes");
    let yaml_raw = serde_json::to_value(&yaml.raw).expect("serializes");
    assert_eq!(lua_raw, yaml_raw);
    // And both say what the example says.
    assert_eq!(lua.server.host, "127.0.0.1");
    assert_eq!(lua.server.port, 7777);
    assert_eq!(lua.server.max_body_size, 16 * 1024 * 1024);
    let mut names: Vec<_> = lua.backends.iter().map(|b| b.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["demo", "llamacpp", "vllm"]);
    let vllm = lua
        .backends
        .iter()
        .find(|b| b.name == "vllm")
        .expect("vllm");
    assert_eq!(vllm.models, ["qwen3-32b", "qwen3-8b"]);
    assert_eq!(vllm.timeout, Duration::from_secs(300));
    assert_eq!(
        lua.policies.fallbacks["qwen3-32b"],
        ["qwen3-8b", "gemma-3-4b"]
    );
    assert_eq!(
        lua.policies.limits.users["takahito"],
        (Some(60), Some(100_000))
    );
    assert_eq!(lua.metrics.port, Some(9090));
}

#[test]
fn environment_overrides_apply_over_a_lua_file() {
    let text = "server = { host = '127.0.0.1', port = 7000 }\n\
                backends = { vllm = { url = 'http://a:8000', timeout = 60 } }\n";
    let config = load_lua(
        text,
        &[
            ("LEXORA_SERVER__PORT", "9000"),
            ("LEXORA_BACKENDS__VLLM__TIMEOUT", "30"),
        ],
    )
    .expect("loads");
    assert_eq!(config.server.port, 9000, "env beats the Lua file");
    assert_eq!(config.server.host, "127.0.0.1", "the file beats defaults");
    assert_eq!(config.backends[0].timeout, Duration::from_secs(30));

    let file = LuaFile::new(text);
    let Err(e) = load_with(&file.path, &[("LEXORA_SERVER__PORT", "eighty")]) else {
        panic!("a bad variable must fail");
    };
    let text = e.to_string();
    assert!(
        text.contains("LEXORA_SERVER__PORT") && text.contains("server.port"),
        "{text}"
    );
}

#[test]
fn config_load_reads_lua_files() {
    let file = LuaFile::new("server = { port = 7123 }\n");
    let config = Config::load(Some(&file.path)).expect("Config::load reads .lua");
    assert_eq!(config.file.as_deref(), Some(file.path.as_path()));
    if std::env::var_os("LEXORA_SERVER__PORT").is_none() {
        assert_eq!(config.server.port, 7123);
    }
}
