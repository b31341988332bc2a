use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod fuzz;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples")
}

fn load_with(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut layers = Layers::from_file(file)?;
    let vars = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    layers.apply_env(vars, &defaults_tree())?;
    Config::from_layers(layers)
}

fn write_yaml(text: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("lexora.yaml");
    std::fs::write(&path, text).expect("write temp config");
    (dir, path)
}

/// A throwaway directory removed on drop (keeps tests free of a tempfile dep).
mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct Dir(PathBuf);
    static NEXT: AtomicU32 = AtomicU32::new(0);

    impl Dir {
        pub fn new() -> Self {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("lexora-config-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn error_text(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_match_seed_000() {
    let config = load_with(None, &[]).expect("defaults load");
    assert_eq!(config.server.host, "0.0.0.0");
    assert_eq!(config.server.port, 8001);
    assert_eq!(config.server.busy_poll, None, "busy polling is opt-in");
    assert_eq!(config.server.idle_timeout, Some(Duration::from_secs(75)));
    assert_eq!(config.server.send_timeout, Some(Duration::from_secs(60)));
    assert_eq!(config.backends.len(), 1);
    let vllm = &config.backends[0];
    assert_eq!(vllm.name, "vllm");
    assert_eq!(
        vllm.url.as_ref().map(Url::as_str),
        Some("http://localhost:8000/")
    );
    assert_eq!(vllm.timeout, Duration::from_secs(120));
    assert_eq!(vllm.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.logging.level, "info");
    assert_eq!(config.logging.format, LogFormat::Console);
    assert!(config.raw.rate_limit.enabled);
    assert_eq!(config.raw.rate_limit.default_rate, 10.0);
    assert_eq!(config.raw.rate_limit.default_burst, 20);
    assert_eq!(config.raw.retry.max_retries, 3);
    assert_eq!(config.raw.retry.base_delay, 1.0);
}

#[test]
fn seed_000_example_loads_and_means_what_it_says() {
    let config = load_with(Some(&examples().join("seed000.yaml")), &[]).expect("seed 000 loads");
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.backends[0].timeout, Duration::from_secs(120));
    assert_eq!(config.raw.retry.max_delay, 30.0);
    assert_eq!(config.raw.retry.exponential_base, 2.0);
    assert_eq!(config.logging.format, LogFormat::Console);
}

#[test]
fn backends_keep_the_order_written_which_is_the_order_they_are_tried_in() {
    let (_dir, path) = write_yaml(
        "backends:\n  zeta:\n    url: http://127.0.0.1:1\n  alpha:\n    url: http://127.0.0.1:2\n  mid:\n    url: http://127.0.0.1:3\n",
    );
    let config = load_with(Some(&path), &[]).expect("loads");
    let names: Vec<_> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    // A backend only the environment names comes after the file's.
    let config = load_with(
        Some(&path),
        &[("LEXORA_BACKENDS__BETA__URL", "http://127.0.0.1:4")],
    )
    .expect("loads");
    let names: Vec<_> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid", "beta"]);
}

#[test]
fn seed_001_example_loads_and_means_what_it_says() {
    let config = load_with(Some(&examples().join("seed001.yaml")), &[]).expect("seed 001 loads");
    assert_eq!(config.default_model.as_deref(), Some("qwen3-32b"));
    // ollama is `enabled: false`, so only vllm remains.
    let names: Vec<_> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["vllm"]);
    assert_eq!(config.backends[0].models, ["qwen3-32b"]);
    assert_eq!(config.backends[0].timeout, Duration::from_secs(120));
    assert_eq!(config.raw.queue.max_size, 100);
    assert_eq!(config.raw.queue.priorities.low, 10);
    let takahito = &config.raw.rate_limits.users["takahito"];
    assert_eq!(takahito.requests_per_minute, Some(60));
    assert_eq!(takahito.tokens_per_minute, Some(100_000));
    assert_eq!(config.raw.retry.max_attempts, Some(3));
    assert_eq!(config.raw.retry.backoff_multiplier, Some(2.0));
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.metrics.port, Some(9090));
}

#[test]
fn every_seed_000_variable_works() {
    let env = [
        ("LEXORA_VLLM__URL", "http://engine:9000"),
        ("LEXORA_VLLM__TIMEOUT", "30.5"),
        ("LEXORA_VLLM__CONNECT_TIMEOUT", "2"),
        ("LEXORA_SERVER__HOST", "127.0.0.1"),
        ("LEXORA_SERVER__PORT", "9001"),
        ("LEXORA_RATE_LIMIT__ENABLED", "false"),
        ("LEXORA_RATE_LIMIT__DEFAULT_RATE", "2.5"),
        ("LEXORA_RATE_LIMIT__DEFAULT_BURST", "7"),
        ("LEXORA_RETRY__MAX_RETRIES", "5"),
        ("LEXORA_RETRY__BASE_DELAY", "0.25"),
        ("LEXORA_LOGGING__LEVEL", "DEBUG"),
        ("LEXORA_LOGGING__FORMAT", "json"),
    ];
    let config = load_with(None, &env).expect("env loads");
    let vllm = &config.backends[0];
    assert_eq!(
        vllm.url.as_ref().map(Url::as_str),
        Some("http://engine:9000/")
    );
    assert_eq!(vllm.timeout, Duration::from_secs_f64(30.5));
    assert_eq!(vllm.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.server.host, "127.0.0.1");
    assert_eq!(config.server.port, 9001);
    assert!(!config.raw.rate_limit.enabled);
    assert_eq!(config.raw.rate_limit.default_rate, 2.5);
    assert_eq!(config.raw.rate_limit.default_burst, 7);
    assert_eq!(config.raw.retry.max_retries, 5);
    assert_eq!(config.raw.retry.base_delay, 0.25);
    assert_eq!(config.logging.level, "debug");
    assert_eq!(config.logging.format, LogFormat::Json);
}

#[test]
fn secrets_from_env_are_taken_as_written() {
    let config = load_with(
        None,
        &[
            ("LEXORA_AUTH__ADMIN_KEY", "00123456"),
            ("LEXORA_BACKENDS__VLLM__API_KEY", "1e5"),
        ],
    )
    .expect("digits are a key like any other");
    let admin = config.raw.auth.admin_key.as_ref().expect("admin key");
    assert_eq!(admin.expose(), "00123456");
    let backend = config.raw.backends.get("vllm").expect("vllm");
    assert_eq!(backend.api_key.as_ref().map(Secret::expose), Some("1e5"));
    // Written unquoted in a file, YAML reads a number: refused, not shown.
    let (_dir, path) = write_yaml("auth:\n  admin_key: 98765432\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("auth.admin_key"), "{text}");
    assert!(!text.contains("98765432"), "{text}");
}

#[test]
fn an_api_key_that_cannot_be_a_header_is_named_not_shown() {
    let (_dir, path) = write_yaml(
        "backends:\n  hosted:\n    url: https://api.example.com\n    api_key: \"sk-abc\\ndef\"\n",
    );
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("backends.hosted.api_key"), "{text}");
    assert!(!text.contains("sk-abc"), "{text}");
}

#[test]
fn bad_urls_are_named_without_their_credentials() {
    let (_dir, path) = write_yaml("backends:\n  x:\n    url: ftp://me:hunter2@host/\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("backends.x.url"), "{text}");
    assert!(
        text.contains("ftp://host/") && !text.contains("hunter2"),
        "{text}"
    );
}

#[test]
fn precedence_is_default_then_file_then_env() {
    let (_dir, path) = write_yaml("server:\n  port: 7000\nvllm:\n  timeout: 60\n");
    let file_only = load_with(Some(&path), &[]).expect("file loads");
    assert_eq!(file_only.server.port, 7000, "file beats default");
    assert_eq!(file_only.server.host, "0.0.0.0", "default fills the rest");
    let both = load_with(Some(&path), &[("LEXORA_SERVER__PORT", "7001")]).expect("env loads");
    assert_eq!(both.server.port, 7001, "env beats file");
    assert_eq!(both.backends[0].timeout, Duration::from_secs(60));
}

#[test]
fn vllm_url_variable_reaches_a_seed_001_backend() {
    let config = load_with(
        Some(&examples().join("seed001.yaml")),
        &[("LEXORA_VLLM__URL", "http://gpu-box:8000")],
    )
    .expect("loads");
    assert_eq!(
        config.backends[0].url.as_ref().map(Url::as_str),
        Some("http://gpu-box:8000/")
    );
}

#[test]
fn unrelated_lexora_variables_are_ignored() {
    let config = load_with(
        None,
        &[("LEXORA_CONFIG", "x.yaml"), ("LEXORA_CACHE_DIR", "/tmp")],
    );
    assert!(config.is_ok());
}

#[test]
fn unknown_key_names_key_and_file() {
    let (_dir, path) = write_yaml("server:\n  prot: 8001\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("key `server.prot`"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("unknown field"), "{text}");
}

#[test]
fn unknown_section_names_key() {
    let (_dir, path) = write_yaml("servr:\n  port: 8001\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("key `servr`"), "{text}");
}

#[test]
fn unknown_env_key_names_variable() {
    let text = error_text(load_with(None, &[("LEXORA_SERVER__PROT", "1")]));
    assert!(text.contains("LEXORA_SERVER__PROT"), "{text}");
    assert!(text.contains("key `server.prot`"), "{text}");
}

#[test]
fn connection_time_limits_take_seconds_and_zero_turns_them_off() {
    let config = load_with(
        None,
        &[
            ("LEXORA_SERVER__IDLE_TIMEOUT", "0"),
            ("LEXORA_SERVER__SEND_TIMEOUT", "2.5"),
        ],
    )
    .expect("loads");
    assert_eq!(config.server.idle_timeout, None);
    assert_eq!(
        config.server.send_timeout,
        Some(Duration::from_millis(2500))
    );
}

#[test]
fn out_of_range_port_is_rejected() {
    let (_dir, path) = write_yaml("server:\n  port: 70000\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("server.port"), "{text}");
    assert!(text.contains("70000"), "{text}");
}

#[test]
fn wrong_type_from_env_names_variable() {
    let text = error_text(load_with(None, &[("LEXORA_SERVER__PORT", "eighty")]));
    assert!(text.contains("LEXORA_SERVER__PORT"), "{text}");
    assert!(text.contains("server.port"), "{text}");
}

#[test]
fn negative_timeout_is_rejected() {
    let (_dir, path) = write_yaml("vllm:\n  timeout: -5\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("vllm.timeout"), "{text}");
    assert!(text.contains("positive"), "{text}");
}

#[test]
fn url_without_scheme_is_rejected() {
    let (_dir, path) = write_yaml("vllm:\n  url: localhost:8000\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("vllm.url"), "{text}");
    assert!(text.contains("not an http(s) URL"), "{text}");
    let (_dir, path) = write_yaml("backends:\n  a:\n    url: engine.local\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains("backends.a.url"), "{text}");
}

#[test]
fn v1_suffix_is_stripped_from_urls() {
    let (_dir, path) = write_yaml("vllm:\n  url: http://h:8000/v1/\n");
    let config = load_with(Some(&path), &[]).expect("loads");
    assert_eq!(
        config.backends[0].url.as_ref().map(Url::as_str),
        Some("http://h:8000/")
    );
}

#[test]
fn bad_values_name_their_keys() {
    for (yaml, key) in [
        ("logging:\n  level: loud\n", "logging.level"),
        ("logging:\n  format: xml\n", "logging.format"),
        (
            "backends:\n  a:\n    type: carrier-pigeon\n    url: http://x\n",
            "backends.a.type",
        ),
        (
            "backends:\n  a:\n    enabled: false\n    url: http://x\n",
            "backends",
        ),
        ("retry:\n  max_attempts: 0\n", "retry.max_attempts"),
        ("server:\n  max_body_size: 0\n", "server.max_body_size"),
        ("server:\n  busy_poll_us: 20000\n", "server.busy_poll_us"),
        ("server:\n  idle_timeout: -1\n", "server.idle_timeout"),
        ("server:\n  send_timeout: .nan\n", "server.send_timeout"),
        (
            "backends:\n  a:\n    url: http://x\n    models:\n      - name: ''\n",
            "backends.a.models[0].name",
        ),
        ("backends:\n  a:\n    models: 3\n", "backends.a.models"),
    ] {
        let (_dir, path) = write_yaml(yaml);
        let text = error_text(load_with(Some(&path), &[]));
        assert!(
            text.contains(&format!("key `{key}`")),
            "{yaml:?} gave {text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let (_dir, path) = write_yaml("server:\n  port: [8001\n");
    let text = error_text(load_with(Some(&path), &[]));
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("line"), "{text}");
}

#[test]
fn missing_file_is_an_error() {
    let text = error_text(load_with(Some(Path::new("/nonexistent/lexora.yaml")), &[]));
    assert!(text.contains("/nonexistent/lexora.yaml"), "{text}");
}

#[test]
fn secrets_are_masked_when_printed() {
    let (_dir, path) = write_yaml(
        "backends:\n  hosted:\n    url: https://api.example.com\n    api_key: sk-very-secret\n    headers:\n      x-org: org-secret\n",
    );
    let config = load_with(Some(&path), &[]).expect("loads");
    let printed = serde_yaml_ng::to_string(&config.raw).expect("serializes");
    assert!(!printed.contains("sk-very-secret"), "{printed}");
    assert!(!printed.contains("org-secret"), "{printed}");
    assert!(printed.contains("***"));
    assert!(!format!("{config:?}").contains("sk-very-secret"));
    assert_eq!(
        config.backends[0].api_key.as_ref().map(Secret::expose),
        Some("sk-very-secret")
    );
}

#[test]
fn mock_backend_needs_no_url() {
    let (_dir, path) =
        write_yaml("backends:\n  demo:\n    type: mock\n    models:\n      - name: demo-model\n");
    let config = load_with(Some(&path), &[]).expect("loads");
    assert_eq!(config.backends[0].kind, BackendKind::Mock);
    assert_eq!(config.backends[0].mock.models, ["demo-model"]);
}

#[test]
fn seed_policies_mean_what_they_say() {
    let seed000 = load_with(Some(&examples().join("seed000.yaml")), &[]).expect("loads");
    let p = &seed000.policies;
    assert_eq!(p.limits.rate, Some((10.0, 20)));
    assert_eq!(p.retry.max_retries, 3);
    assert_eq!(p.retry.base_delay, Duration::from_secs(1));
    assert_eq!(p.retry.max_delay, Duration::from_secs(30));

    let seed001 = load_with(Some(&examples().join("seed001.yaml")), &[]).expect("loads");
    let p = &seed001.policies;
    assert_eq!(
        p.retry.max_retries, 2,
        "max_attempts: 3 is the first try and two retries"
    );
    assert_eq!(p.retry.exponential_base, 2.0);
    assert_eq!(p.limits.requests_per_minute, Some(30));
    assert_eq!(p.limits.tokens_per_minute, Some(50_000));
    assert_eq!(p.limits.users["takahito"], (Some(60), Some(100_000)));
    assert_eq!(p.queue.max_size, 100);
    assert_eq!(p.queue.weights, [1, 5, 10]);
    assert_eq!(p.queue.default_timeout, Duration::from_secs(60));
    assert!(p.breaker.enabled);
    assert_eq!(p.breaker.failure_threshold, 5, "seed 003's defaults");
    assert_eq!(p.breaker.open_for, Duration::from_secs(60));
}

#[test]
fn api_keys_load_from_the_file_and_a_keys_file() {
    let dir = tempdir::Dir::new();
    std::fs::write(
        dir.path().join("keys.yaml"),
        "- key: sk-from-file-1\n  user: bob\n  max_priority: normal\n",
    )
    .expect("write");
    let path = dir.path().join("lexora.yaml");
    std::fs::write(
        &path,
        "auth:\n  admin_key: admin-secret\n  keys_file: keys.yaml\n  keys:\n    - key: sk-inline-0001\n      user: alice\n      models: [m1]\n      requests_per_minute: 5\n",
    )
    .expect("write");
    let config = load_with(Some(&path), &[]).expect("loads");
    let keys = &config.policies.auth.keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].user, "alice");
    assert_eq!(keys[0].requests_per_minute, Some(5));
    assert_eq!(keys[1].user, "bob");
    assert_eq!(keys[1].max_priority, Some(crate::parse::Priority::Normal));
    assert!(!format!("{config:?}").contains("sk-inline"));
    let printed = serde_yaml_ng::to_string(&config.raw).expect("yaml");
    assert!(
        !printed.contains("sk-inline") && !printed.contains("admin-secret"),
        "{printed}"
    );
}

#[test]
fn bad_policy_values_name_their_keys() {
    for (yaml, key) in [
        (
            "auth:\n  keys:\n    - key: short\n      user: a\n",
            "auth.keys[0].key",
        ),
        (
            "auth:\n  keys:\n    - key: long-enough-1\n      user: a\n      priority: urgent\n",
            "auth.keys[0].priority",
        ),
        (
            "rate_limits:\n  users:\n    bob:\n      requests_per_minute: 0\n",
            "rate_limits.users.bob.requests_per_minute",
        ),
        (
            "rate_limit:\n  default_burst: 0\n",
            "rate_limit.default_burst",
        ),
        (
            "circuit_breaker:\n  timeout: -1\n",
            "circuit_breaker.timeout",
        ),
        ("queue:\n  aging_seconds: 0\n", "queue.aging_seconds"),
        (
            "backends:\n  a:\n    url: http://x\n    max_concurrency: 0\n",
            "backends.a.max_concurrency",
        ),
        (
            "auth:\n  keys_file: /nonexistent/keys.yaml\n",
            "auth.keys_file",
        ),
    ] {
        let (_dir, path) = write_yaml(yaml);
        let text = error_text(load_with(Some(&path), &[]));
        assert!(
            text.contains(&format!("key `{key}`")),
            "{yaml:?} gave {text}"
        );
    }
}

const ENGINE_YAML: &str = "backends:
  local:
    type: engine
    models:
      - name: tiny
    engine:
      idle_unload: 300
      ready_timeout: 30
      variants:
        - name: large
          binary: llama-server
          args: [\"-m\", \"tiny.gguf\", \"-c\", \"2048\"]
          context: 2048
          memory_mb: 900
        - name: small
          binary: llama-server
          args: [\"-m\", \"tiny.gguf\", \"-c\", \"512\"]
          context: 512
";

#[test]
fn engine_backend_carries_its_model_and_settings() {
    let (_dir, path) = write_yaml(ENGINE_YAML);
    let config = load_with(Some(&path), &[]).expect("loads");
    let backend = &config.backends[0];
    assert!(backend.url.is_none());
    assert_eq!(backend.models, ["tiny"]);
    assert_eq!(backend.kind.label(), "engine");
    let BackendKind::Engine { model, settings } = &backend.kind else {
        panic!("not an engine backend: {:?}", backend.kind);
    };
    assert_eq!(model.name, "tiny");
    let names: Vec<&str> = model.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["large", "small"]);
    assert_eq!(model.variants[0].memory_mb, Some(900));
    assert_eq!(model.variants[1].args, ["-m", "tiny.gguf", "-c", "512"]);
    assert_eq!(settings.idle_unload, Some(Duration::from_secs(300)));
    assert_eq!(settings.ready_timeout, Duration::from_secs(30));
    assert_eq!(
        settings.drain_timeout,
        crate::engine::EngineSettings::default().drain_timeout
    );
}

#[test]
fn engine_backend_errors_name_the_key() {
    let cases = [
        (
            "backends:\n  local:\n    type: engine\n    models:\n      - name: tiny\n",
            "backends.local.engine.variants",
        ),
        (
            &ENGINE_YAML.replace("name: small", "name: large"),
            "backends.local.engine.variants[1].name",
        ),
        (
            &ENGINE_YAML.replace("context: 512", "context: 0"),
            "backends.local.engine.variants[1].context",
        ),
        (
            &ENGINE_YAML.replace("      - name: tiny\n", ""),
            "backends.local.models",
        ),
        (
            &ENGINE_YAML.replace("idle_unload: 300", "idle_unload: -1"),
            "backends.local.engine.idle_unload",
        ),
        (
            &ENGINE_YAML.replace("memory_mb: 900", "memroy_mb: 900"),
            "memroy_mb",
        ),
    ];
    for (yaml, key) in cases {
        let (_dir, path) = write_yaml(yaml);
        let error = load_with(Some(&path), &[]).expect_err(key).to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
}

#[test]
fn a_backend_named_engine_is_still_a_server() {
    let (_dir, path) = write_yaml(
        "backends:\n  engine:\n    url: http://127.0.0.1:9\n    models:\n      - name: m\n",
    );
    let config = load_with(Some(&path), &[]).expect("loads");
    assert_eq!(config.backends[0].kind, BackendKind::OpenAiCompatible);
}
