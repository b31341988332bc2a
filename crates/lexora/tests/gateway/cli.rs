//! The command line: `config check`, `--version`, `--help`, bad configs.

use std::process::Command;

use crate::support::*;

fn lexora(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("LEXORA_") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run lexora");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples")
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_masked() {
    let dir = TempDir::new();
    let path = dir.0.join("c.yaml");
    std::fs::write(
        &path,
        "backends:\n  hosted:\n    url: https://api.example.com/v1\n    api_key: sk-live-123456\n  \
         proxied:\n    url: http://gw-user:gw-pass@engine:8000\n",
    )
    .expect("write");
    let (code, stdout, stderr) = lexora(
        &["config", "check", path.to_str().expect("utf8")],
        &[("LEXORA_SERVER__PORT", "9100")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("port: 9100"), "env applies: {stdout}");
    assert!(
        stdout.contains("api_key: '***'") || stdout.contains("api_key: \"***\""),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-live"), "{stdout}");
    // Credentials written into a URL are masked too.
    assert!(stdout.contains("url: http://engine:8000"), "{stdout}");
    assert!(
        !stdout.contains("gw-pass") && !stdout.contains("gw-user"),
        "{stdout}"
    );
}

#[test]
fn config_check_accepts_the_shipped_examples() {
    for name in [
        "seed000.yaml",
        "seed001.yaml",
        "../lexora_config.example.yaml",
        "../demo.yaml",
    ] {
        let path = examples().join(name);
        let (code, stdout, stderr) =
            lexora(&["config", "check", path.to_str().expect("utf8")], &[]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert!(
            stdout.contains("url: http://localhost:8000"),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn config_check_fails_naming_key_and_file() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(&path, "server:\n  port: 70000\n").expect("write");
    let (code, _, stderr) = lexora(&["config", "check", path.to_str().expect("utf8")], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("server.port"), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_with_a_clear_message() {
    let (code, _, stderr) = lexora(
        &["serve", "--port", "0"],
        &[("LEXORA_VLLM__URL", "localhost:8000")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("LEXORA_VLLM__URL"), "{stderr}");
    assert!(stderr.contains("vllm.url"), "{stderr}");
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = lexora(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
    let (code, stdout, _) = lexora(&["--help"], &[]);
    assert_eq!(code, 0);
    for word in ["serve", "mock", "config", "LEXORA_"] {
        assert!(stdout.contains(word), "{stdout}");
    }
    let (code, _, _) = lexora(&["server", "--help"], &[]);
    assert_eq!(code, 0, "`server` is an alias of `serve`");
}

#[test]
fn lua_and_yaml_engine_examples_are_the_same_config() {
    let check = |name: &str| {
        let path = examples().join(name);
        let (code, stdout, stderr) =
            lexora(&["config", "check", path.to_str().expect("utf8")], &[]);
        assert_eq!(code, 0, "{name}: {stderr}");
        // Everything after the "FILE is valid" line.
        stdout.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    let yaml = check("engines.yaml");
    assert!(yaml.contains("ctx32k"), "{yaml}");
    assert_eq!(yaml, check("engines.lua"));
}
