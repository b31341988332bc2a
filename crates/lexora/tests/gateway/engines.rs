//! `type: engine` backends against a real llama-server and a tiny generated
//! model: the gateway starts the small variant for a short prompt, swaps to
//! the large one for a long prompt, answers 400 for a prompt no variant
//! fits, and leaves no engine behind after SIGTERM.
//!
//! The binary comes from `LLAMA_SERVER` or `scripts/llama-server.sh`
//! (cached build); the model from `tests/e2e/make_tiny_gguf.py`, run with
//! `LEXORA_PYTHON` or the e2e venv.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{client, gateway, get_json, TempDir};

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

fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny.gguf");
    let out = Command::new(python())
        .arg(repo_root().join("tests/e2e/make_tiny_gguf.py"))
        .arg(&model)
        .output()
        .expect("run make_tiny_gguf.py");
    assert!(
        out.status.success(),
        "make_tiny_gguf.py failed (needs gguf, numpy; set LEXORA_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    model
}

fn config(binary: &Path, model: &Path) -> String {
    let variant = |name: &str, context: u32| {
        format!(
            "        - name: {name}\n          binary: {binary}\n          args: [\"-m\", \"{model}\", \"-c\", \"{context}\", \"-np\", \"1\"]\n          context: {context}\n",
            binary = binary.display(),
            model = model.display(),
        )
    };
    format!(
        "retry:\n  max_retries: 0\nrate_limit:\n  enabled: false\nbackends:\n  local:\n    type: engine\n    timeout: 60\n    models:\n      - name: tiny\n    engine:\n      ready_timeout: 30\n      stop_timeout: 5\n      variants:\n{}{}",
        variant("small", 512),
        variant("large", 2048),
    )
}

async fn chat(url: &str, words: usize) -> (u16, Value) {
    let prompt = vec!["hello"; words].join(" ");
    let response = client()
        .post(format!("{url}/v1/chat/completions"))
        .timeout(Duration::from_secs(60))
        .json(&json!({
            "model": "tiny",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": prompt}],
        }))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn engine_backend_starts_swaps_refuses_and_cleans_up() {
    let dir = TempDir::new();
    let model = tiny_model(&dir.0);
    let mut gw = gateway(&config(&llama_server(), &model));

    let health = get_json(&format!("{}/health", gw.url)).await;
    let local = &health["backends"]["local"];
    assert_eq!(local["type"], "engine");
    assert_eq!(local["status"], "reachable");
    assert_eq!(local["engine"]["state"], "stopped");

    // A short prompt starts the small variant.
    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "short prompt: {body}\n{}", gw.stderr());
    let engine =
        get_json(&format!("{}/health", gw.url)).await["backends"]["local"]["engine"].clone();
    assert_eq!(engine["state"], "ready", "{engine}");
    assert_eq!(engine["variant"], "small", "{engine}");
    assert_eq!(engine["swaps"], 0, "{engine}");

    // ~600 tokens (one per word in the tiny vocabulary) plus 8 do not fit
    // 512: the large variant takes over.
    let (status, body) = chat(&gw.url, 600).await;
    assert_eq!(status, 200, "long prompt: {body}\n{}", gw.stderr());
    let engine =
        get_json(&format!("{}/health", gw.url)).await["backends"]["local"]["engine"].clone();
    assert_eq!(engine["state"], "ready", "{engine}");
    assert_eq!(engine["variant"], "large", "{engine}");
    assert_eq!(engine["swaps"], 1, "{engine}");
    assert!(engine["swap_seconds"].as_f64().is_some_and(|s| s > 0.0));

    // Too long for every variant: a clear 400, and the engine stays.
    let (status, body) = chat(&gw.url, 3000).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("2048"), "{message}");
    let engine =
        get_json(&format!("{}/health", gw.url)).await["backends"]["local"]["engine"].clone();
    assert_eq!(engine["variant"], "large", "{engine}");
    let pid = engine["pid"].as_u64().expect("engine pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["backends"]["local"]["engine"]["swaps"], 1, "{stats}");
    let metrics = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"lexora_engine_swaps{backend="local"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lexora_engine_ready{backend="local"} 1"#),
        "{metrics}"
    );

    // A reload with the same engine settings keeps the running engine.
    let reloaded = client()
        .post(format!("{}/admin/reload", gw.url))
        .send()
        .await
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let engine =
        get_json(&format!("{}/health", gw.url)).await["backends"]["local"]["engine"].clone();
    assert_eq!(
        engine["pid"].as_u64(),
        Some(pid),
        "the reload started a second engine: {engine}"
    );

    // SIGTERM: Lexora exits cleanly and its engine with it.
    gw.terminate();
    let code = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(15));
        (code, gw.stderr())
    })
    .await
    .expect("join");
    assert_eq!(code.0, Some(0), "{}", code.1);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "engine {pid} outlived lexora"
    );
}
