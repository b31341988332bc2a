//! `type: engine` backends against a real llama-server and a tiny generated
//! model: the gateway starts the small variant for a short prompt, swaps to
//! the large one for a long prompt, answers 400 for a prompt no variant
//! fits, and leaves no engine behind after SIGTERM.
//!
//! The binary comes from `LLAMA_SERVER` or `scripts/llama-server.sh`
//! (cached build); the model from `tests/e2e/make_tiny_gguf.py`, run with
//! `LEXORA_PYTHON` or the e2e venv.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{client, gateway, gateway_at, get_json, metrics_text, TempDir};

#[path = "../../../../tests/support/llama_fixture.rs"]
mod llama_fixture;

use llama_fixture::fixture;

/// One `engine.variants` entry running `model` with `context` tokens.
fn variant(name: &str, context: u32, memory_mb: u64) -> String {
    let (binary, model) = (&fixture().binary, &fixture().model);
    format!(
        "        - name: {name}\n          binary: {binary}\n          args: [\"-m\", \"{model}\", \"-c\", \"{context}\", \"-np\", \"1\"]\n          context: {context}\n          memory_mb: {memory_mb}\n",
        binary = binary.display(),
        model = model.display(),
    )
}

/// A `type: engine` backend `name` serving model `model_name`; `extra` goes
/// into its `engine` section.
fn engine_backend(name: &str, model_name: &str, extra: &str, variants: &[String]) -> String {
    format!(
        "  {name}:\n    type: engine\n    timeout: 60\n    models:\n      - name: {model_name}\n    engine:\n      ready_timeout: 30\n      stop_timeout: 5\n{extra}      variants:\n{}",
        variants.concat()
    )
}

const POLICIES_OFF: &str = "retry:\n  max_retries: 0\nrate_limit:\n  enabled: false\n";

fn config() -> String {
    format!(
        "{POLICIES_OFF}backends:\n{}",
        engine_backend(
            "local",
            "tiny",
            "",
            &[variant("small", 512, 100), variant("large", 2048, 200),]
        )
    )
}

async fn chat(url: &str, words: usize) -> (u16, Value) {
    chat_model(url, "tiny", words).await
}

async fn chat_model(url: &str, model: &str, words: usize) -> (u16, Value) {
    let prompt = vec!["hello"; words].join(" ");
    let response = client()
        .post(format!("{url}/v1/chat/completions"))
        .timeout(Duration::from_secs(60))
        .json(&json!({
            "model": model,
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
    let mut gw = gateway(&config());

    let health = get_json(&format!("{}/health", gw.url)).await;
    let local = &health["backends"]["local"];
    assert_eq!(local["type"], "engine");
    assert_eq!(local["status"], "reachable");
    assert_eq!(local["engine"]["state"], "stopped");

    // A short prompt starts the small variant.
    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "short prompt: {body}\n{}", gw.stderr());
    let engine = engine_of(&gw.url, "local").await;
    assert_eq!(engine["state"], "ready", "{engine}");
    assert_eq!(engine["variant"], "small", "{engine}");
    assert_eq!(engine["swaps"], 0, "{engine}");

    // ~600 tokens (one per word in the tiny vocabulary) plus 8 do not fit
    // 512: the large variant takes over.
    let (status, body) = chat(&gw.url, 600).await;
    assert_eq!(status, 200, "long prompt: {body}\n{}", gw.stderr());
    let engine = engine_of(&gw.url, "local").await;
    assert_eq!(engine["state"], "ready", "{engine}");
    assert_eq!(engine["variant"], "large", "{engine}");
    assert_eq!(engine["swaps"], 1, "{engine}");
    assert!(engine["swap_seconds"].as_f64().is_some_and(|s| s > 0.0));

    // Too long for every variant: a clear 400, and the engine stays.
    let (status, body) = chat(&gw.url, 3000).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("2048"), "{message}");
    let engine = engine_of(&gw.url, "local").await;
    assert_eq!(engine["variant"], "large", "{engine}");
    let pid = engine["pid"].as_u64().expect("engine pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["backends"]["local"]["engine"]["swaps"], 1, "{stats}");
    let metrics = metrics_text(&gw).await;
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
    let engine = engine_of(&gw.url, "local").await;
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

async fn engine_of(url: &str, backend: &str) -> Value {
    get_json(&format!("{url}/health")).await["backends"][backend]["engine"].clone()
}

async fn wait_engine(
    url: &str,
    backend: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let engine = engine_of(url, backend).await;
        if check(&engine) {
            return engine;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {}", engine_of(url, backend).await);
}

/// Through the gateway: an idle engine unloads after its TTL (the scheduler
/// does it), the next request starts it again, and an engine killed with
/// SIGKILL is restarted for the next request.
#[tokio::test]
async fn idle_engines_unload_and_killed_ones_restart() {
    let config = format!(
        "{POLICIES_OFF}backends:\n{}",
        engine_backend(
            "local",
            "tiny",
            "      idle_unload: 1\n      restart_backoff: 0.2\n",
            &[variant("small", 512, 100)]
        )
    );
    let gw = gateway(&config);

    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "{body}\n{}", gw.stderr());
    let engine = engine_of(&gw.url, "local").await;
    let pid = engine["pid"].as_u64().expect("pid");
    let engine = wait_engine(&gw.url, "local", "idle unload", |e| e["state"] == "stopped").await;
    assert!(engine["pid"].is_null(), "{engine}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "engine {pid} still runs"
    );

    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "after the unload: {body}\n{}", gw.stderr());
    let engine = engine_of(&gw.url, "local").await;
    assert_eq!(engine["starts"], 2, "{engine}");
    let pid = engine["pid"].as_u64().expect("pid");

    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_engine(&gw.url, "local", "crash noticed", |e| {
        e["state"] == "crashed"
    })
    .await;
    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "after the crash: {body}\n{}", gw.stderr());
    let engine = engine_of(&gw.url, "local").await;
    assert_eq!(engine["restarts"], 1, "{engine}");
    assert_eq!(engine["state"], "ready", "{engine}");
    assert_ne!(engine["pid"].as_u64(), Some(pid), "{engine}");
}

/// Two models with memory for one (seed 004 with llama-swap's problem): a
/// mixed burst of requests for both is served in batches, with few engine
/// starts and every request answered.
#[tokio::test]
async fn a_mixed_burst_for_two_models_with_room_for_one() {
    let config = format!(
        "{POLICIES_OFF}engines:\n  memory_budget_mb: 150\n  min_loaded: 1\nbackends:\n{}{}",
        engine_backend("alpha", "tiny-a", "", &[variant("only", 512, 100)]),
        engine_backend("beta", "tiny-b", "", &[variant("only", 512, 100)]),
    );
    let gw = gateway(&config);
    const BURST: usize = 24;
    let started = std::time::Instant::now();
    let requests = (0..BURST).map(|i| {
        let url = gw.url.clone();
        let model = if i % 2 == 0 { "tiny-a" } else { "tiny-b" };
        tokio::spawn(async move {
            let (status, body) = chat_model(&url, model, 3).await;
            (status, body, started.elapsed())
        })
    });
    let results = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    let mut slowest = Duration::ZERO;
    for result in results {
        let (status, body, took) = result.expect("join");
        assert_eq!(status, 200, "{body}\n{}", gw.stderr());
        slowest = slowest.max(took);
    }
    let alpha = engine_of(&gw.url, "alpha").await;
    let beta = engine_of(&gw.url, "beta").await;
    let starts = alpha["starts"].as_u64().unwrap_or(0) + beta["starts"].as_u64().unwrap_or(0);
    let evictions =
        alpha["evictions"].as_u64().unwrap_or(0) + beta["evictions"].as_u64().unwrap_or(0);
    eprintln!(
        "mixed burst of {BURST}: {starts} engine starts, {evictions} evictions, all done in {:.2} s, slowest request {:.2} s",
        elapsed.as_secs_f64(),
        slowest.as_secs_f64()
    );
    // Alternating one by one would start an engine per request.
    assert!((2..=4).contains(&starts), "{starts} starts: {alpha} {beta}");
    assert!(
        evictions >= 1 && evictions < starts,
        "{evictions} evictions"
    );
    // Never both at once: the budget holds one.
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["engine_memory"]["budget_mb"], 150, "{stats}");
    assert_eq!(stats["engine_memory"]["used_mb"], 100, "{stats}");
    let running = [&alpha, &beta]
        .iter()
        .filter(|e| e["state"] == "ready")
        .count();
    assert_eq!(running, 1, "{alpha} {beta}");
    let models = get_json(&format!("{}/v1/models", gw.url)).await;
    let states: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["engine"]["state"].as_str().unwrap_or("-"))
        .collect();
    assert!(
        states.contains(&"ready") && states.contains(&"stopped"),
        "{models}"
    );
}

/// A reload that changes an engine's settings replaces its manager: the
/// old engine stops and frees its share of the memory budget, so the new
/// one can start at once.
#[tokio::test]
async fn a_reload_with_new_engine_settings_replaces_the_engine() {
    let dir = TempDir::new();
    let path = dir.0.join("lexora.yaml");
    let write = |idle: u32| {
        let config = format!(
            "{POLICIES_OFF}engines:\n  memory_budget_mb: 100\nbackends:\n{}",
            engine_backend(
                "local",
                "tiny",
                &format!("      idle_unload: {idle}\n"),
                &[variant("small", 512, 100)]
            )
        );
        std::fs::write(&path, config).expect("write config");
    };
    write(600);
    let gw = gateway_at(&path);
    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "{body}\n{}", gw.stderr());
    let old = engine_of(&gw.url, "local").await["pid"]
        .as_u64()
        .expect("pid");

    write(900);
    let reloaded = client()
        .post(format!("{}/admin/reload", gw.url))
        .send()
        .await
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "after the reload: {body}\n{}", gw.stderr());
    let engine = engine_of(&gw.url, "local").await;
    assert_ne!(engine["pid"].as_u64(), Some(old), "{engine}");
    assert!(
        !Path::new(&format!("/proc/{old}")).exists(),
        "the replaced engine {old} still runs"
    );
}

/// A gateway killed with SIGKILL (no shutdown code runs) still takes its
/// engine with it: the kernel kills the child when its parent dies.
#[tokio::test]
async fn an_engine_does_not_outlive_a_killed_gateway() {
    let config = format!(
        "{POLICIES_OFF}backends:\n{}",
        engine_backend("local", "tiny", "", &[variant("small", 512, 100)])
    );
    let gw = gateway(&config);
    let (status, body) = chat(&gw.url, 3).await;
    assert_eq!(status, 200, "{body}\n{}", gw.stderr());
    let pid = engine_of(&gw.url, "local").await["pid"]
        .as_u64()
        .expect("pid");
    let killed = Command::new("kill")
        .args(["-KILL", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let engine = format!("/proc/{pid}");
    let gone = crate::support::eventually(Duration::from_secs(5), || {
        let engine = engine.clone();
        async move { !Path::new(&engine).exists() || is_zombie(&engine) }
    })
    .await;
    assert!(gone, "engine {pid} outlived its killed gateway");
}

/// A zombie has died and only waits for its (new) parent to reap it.
fn is_zombie(proc_dir: &str) -> bool {
    std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z'))
    })
}
