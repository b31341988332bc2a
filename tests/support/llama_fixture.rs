//! The real llama-server and tiny model that engine tests run, shared by
//! the engine module's unit tests and the gateway's integration tests
//! (each includes this file with `#[path]`).
//!
//! The binary comes from `LLAMA_SERVER` or `scripts/llama-server.sh`
//! (cached build); the model from `tests/e2e/make_tiny_gguf.py`, run with
//! `LEXORA_PYTHON` or the e2e venv.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The engine binary and a generated tiny GGUF model.
pub struct Fixture {
    pub binary: PathBuf,
    pub model: PathBuf,
}

/// Built once per test process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        binary: llama_server(),
        model: tiny_model(),
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn llama_server() -> PathBuf {
    if let Some(path) = std::env::var_os("LLAMA_SERVER") {
        return PathBuf::from(path);
    }
    let out = Command::new(repo_root().join("scripts/llama-server.sh"))
        .output()
        .expect("run scripts/llama-server.sh");
    assert!(out.status.success(), "scripts/llama-server.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
}

/// A python with `gguf` and `numpy`: `LEXORA_PYTHON`, else the e2e venv.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("LEXORA_PYTHON") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("LEXORA_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lexora"),
        PathBuf::from,
    );
    let plain = cache.join("venv-e2e/bin/python");
    if plain.exists() {
        return plain;
    }
    // scripts/test.sh names its venv after the requirements hash.
    std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python"))
        .find(|p| p.to_string_lossy().contains("venv-e2e") && p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The model is deterministic (seed 0), so test processes share one file;
/// each writes its own and renames it, so parallel runs never see half a
/// file.
fn tiny_model() -> PathBuf {
    let dir = std::env::temp_dir().join("lexora-engine-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let model = dir.join("tiny-seed0.gguf");
    if !model.exists() {
        let partial = dir.join(format!("tiny-seed0.gguf.{}", std::process::id()));
        let out = Command::new(python())
            .arg(repo_root().join("tests/e2e/make_tiny_gguf.py"))
            .arg(&partial)
            .output()
            .expect("run make_tiny_gguf.py");
        assert!(
            out.status.success(),
            "make_tiny_gguf.py failed (needs gguf, numpy; set LEXORA_PYTHON): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &model).expect("rename model");
    }
    model
}
