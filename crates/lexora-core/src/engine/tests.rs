//! Engine manager tests against a real llama-server and a tiny generated
//! model (see `tests/support/llama_fixture.rs`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{sleep, timeout, Duration, Instant};

use super::client::EngineHttp;
use super::*;

const WAIT: Duration = Duration::from_secs(30);

#[path = "../../../../tests/support/llama_fixture.rs"]
mod llama_fixture;

use llama_fixture::fixture;

fn variant(name: &str, ctx: u32) -> Variant {
    let f = fixture();
    let args = ["-m", &f.model.to_string_lossy(), "-c", &ctx.to_string()];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(["-np", "1", "-t", "1", "--alias", "tiny"].map(String::from));
    Variant {
        name: name.into(),
        binary: f.binary.clone(),
        args,
        context: ctx,
        memory_mb: None,
    }
}

fn settings() -> EngineSettings {
    EngineSettings {
        ready_timeout: WAIT,
        drain_timeout: Duration::from_secs(20),
        stop_timeout: Duration::from_secs(5),
        idle_unload: None,
        restart_backoff: Duration::from_millis(200),
    }
}

fn manager(settings: EngineSettings) -> Arc<EngineManager> {
    let model = EngineModel {
        name: "tiny".into(),
        // Out of order on purpose: new() sorts by context.
        variants: vec![variant("large", 2048), variant("small", 512)],
    };
    EngineManager::new(model, settings)
}

/// Alive and not a zombie.
fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn acquire(m: &Arc<EngineManager>, variant: &str) -> Lease {
    timeout(WAIT, m.acquire(variant))
        .await
        .expect("acquire in time")
        .expect("acquire")
}

async fn shutdown_and_check(m: &EngineManager, pid: u32) {
    m.shutdown().await;
    assert!(!pid_alive(pid), "engine {pid} outlived shutdown");
    assert_eq!(m.status().state, EngineState::Stopped);
    assert_eq!(m.status().pid, None);
}

#[tokio::test]
async fn select_picks_the_smallest_fitting_variant() {
    let m = manager(settings());
    assert_eq!(m.select(1).expect("fits").name, "small");
    assert_eq!(m.select(512).expect("fits").name, "small");
    assert_eq!(m.select(513).expect("fits").name, "large");
    assert_eq!(m.select(2048).expect("fits").name, "large");
    let error = m.select(2049).expect_err("too large");
    assert!(error.is_client_error());
    assert!(error.to_string().contains("2048"), "{error}");
    assert!(matches!(
        error,
        EngineError::NoVariantFits {
            needed: 2049,
            largest: 2048,
            ..
        }
    ));
    let unknown = m.acquire("huge").await.expect_err("unknown variant");
    assert!(unknown.is_client_error());
    assert_eq!(m.status().state, EngineState::Stopped);
}

#[tokio::test]
async fn acquire_starts_the_variant_and_health_answers() {
    let m = manager(settings());
    let lease = acquire(&m, "small").await;
    assert!(lease.base_url.starts_with("http://127.0.0.1:"));
    assert!(EngineHttp::new().healthy(&lease.base_url).await);
    let status = m.status();
    assert_eq!(status.state, EngineState::Ready);
    assert_eq!(status.variant.as_deref(), Some("small"));
    assert_eq!(status.pid, Some(lease.pid));
    assert_eq!(status.leases, 1);
    assert!(pid_alive(lease.pid));
    let pid = lease.pid;
    drop(lease);
    assert_eq!(m.status().leases, 0);
    shutdown_and_check(&m, pid).await;
    assert!(matches!(
        m.acquire("small").await,
        Err(EngineError::ShuttingDown { .. })
    ));
}

#[tokio::test]
async fn a_request_that_gives_up_does_not_kill_the_start() {
    let m = manager(settings());
    // Gives up long before the engine can be ready (its timeout, or its
    // client gone): the start goes on for the requests behind it.
    let gave_up = timeout(Duration::from_millis(5), m.acquire("small")).await;
    assert!(gave_up.is_err(), "ready within 5 ms?");
    wait_for("the engine to be ready", || {
        m.status().state == EngineState::Ready
    })
    .await;
    let status = m.status();
    let pid = status.pid.expect("running");
    assert_eq!(status.leases, 0, "the lease nobody took was dropped");
    let lease = acquire(&m, "small").await;
    assert_eq!(lease.pid, pid, "the same engine, not a second start");
    assert_eq!(m.status().starts, 1);
    drop(lease);
    shutdown_and_check(&m, pid).await;
}

#[tokio::test]
async fn concurrent_acquires_share_one_start() {
    let m = manager(settings());
    let calls = (0..4).map(|_| {
        let m = m.clone();
        tokio::spawn(async move { acquire(&m, "small").await })
    });
    let leases: Vec<Lease> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let pid = leases[0].pid;
    assert!(leases.iter().all(|l| l.pid == pid));
    let status = m.status();
    assert_eq!((status.leases, status.swaps, status.restarts), (4, 0, 0));
    drop(leases);
    shutdown_and_check(&m, pid).await;
}

#[tokio::test]
async fn swap_waits_for_the_lease_to_drain() {
    let m = manager(settings());
    let small = acquire(&m, "small").await;
    let old_pid = small.pid;
    let swapper = tokio::spawn({
        let m = m.clone();
        async move { acquire(&m, "large").await }
    });
    let held = Duration::from_millis(300);
    sleep(held).await;
    assert!(!swapper.is_finished(), "swap did not wait for the lease");
    assert_eq!(m.status().state, EngineState::Draining);
    assert!(pid_alive(old_pid));
    let released = Instant::now();
    drop(small);
    let large = timeout(WAIT, swapper)
        .await
        .expect("swap in time")
        .expect("task");
    let waited = released.elapsed();
    let status = m.status();
    eprintln!(
        "swap small -> large: {:?} (stop + start until /health), acquire returned {:?} after the lease dropped",
        status.swap_time, waited
    );
    assert_eq!(status.swaps, 1);
    assert_eq!(status.variant.as_deref(), Some("large"));
    assert_eq!(status.state, EngineState::Ready);
    assert!(status.swap_time > Duration::ZERO);
    assert!(!pid_alive(old_pid), "old engine {old_pid} still runs");
    assert_ne!(large.pid, old_pid);
    assert!(EngineHttp::new().healthy(&large.base_url).await);
    let pid = large.pid;
    drop(large);
    shutdown_and_check(&m, pid).await;
}

#[tokio::test]
async fn idle_engine_unloads_after_the_ttl() {
    let m = manager(EngineSettings {
        idle_unload: Some(Duration::from_millis(400)),
        ..settings()
    });
    let lease = acquire(&m, "small").await;
    let pid = lease.pid;
    // Held leases keep it loaded past the TTL.
    sleep(Duration::from_millis(700)).await;
    assert_eq!(m.status().state, EngineState::Ready);
    drop(lease);
    wait_for("idle unload", || m.status().state == EngineState::Stopped).await;
    assert!(!pid_alive(pid));
    // And it comes back on demand.
    let again = acquire(&m, "small").await;
    assert_ne!(again.pid, pid);
    let status = m.status();
    assert_eq!((status.swaps, status.restarts), (0, 0));
    let pid = again.pid;
    drop(again);
    shutdown_and_check(&m, pid).await;
}

#[tokio::test]
async fn killed_engine_is_restarted_by_the_next_acquire() {
    let m = manager(settings());
    let lease = acquire(&m, "small").await;
    let pid = lease.pid;
    drop(lease);
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for("crash detection", || {
        m.status().state == EngineState::Crashed
    })
    .await;
    assert!(m.status().pid.is_none());
    let lease = acquire(&m, "small").await;
    assert_ne!(lease.pid, pid);
    assert!(EngineHttp::new().healthy(&lease.base_url).await);
    let status = m.status();
    assert_eq!((status.state, status.restarts), (EngineState::Ready, 1));
    assert!(status
        .last_error
        .is_some_and(|e| e.contains("unexpectedly")));
    let pid = lease.pid;
    drop(lease);
    shutdown_and_check(&m, pid).await;
}

#[tokio::test]
async fn count_tokens_uses_the_running_engine() {
    let m = manager(settings());
    let text = "Hello there, how many tokens is this prompt?";
    assert_eq!(m.count_tokens(text).await, estimate_tokens(text));
    let lease = acquire(&m, "small").await;
    let direct = direct_tokenize(&lease.base_url, text).await;
    assert!(direct > 0);
    assert_eq!(m.count_tokens(text).await, direct);
    let pid = lease.pid;
    drop(lease);
    shutdown_and_check(&m, pid).await;
}

/// A chat is counted through the engine's chat template, so the role
/// markers count too; without an engine, an allowance stands in for them.
#[tokio::test]
async fn count_request_counts_the_chat_template() {
    let m = manager(settings());
    let text = "Hello there, how many tokens is this prompt?";
    let messages = serde_json::json!([{"role": "user", "content": text}]);
    let body = Bytes::from(serde_json::json!({"model": "tiny", "messages": messages}).to_string());
    assert_eq!(
        m.count_request(&body).await,
        estimate_tokens(&format!("{text}\n")) + 8 + 8,
        "estimate plus the template allowance"
    );
    let lease = acquire(&m, "small").await;
    let templated = direct_post(
        &lease.base_url,
        "/apply-template",
        serde_json::json!({ "messages": messages }),
    )
    .await;
    let prompt = templated["prompt"].as_str().expect("prompt");
    let exact = direct_tokenize(&lease.base_url, prompt).await;
    let plain = direct_tokenize(&lease.base_url, text).await;
    assert!(
        exact > plain,
        "the template adds tokens: {exact} vs {plain}"
    );
    assert_eq!(m.count_request(&body).await, exact);
    let pid = lease.pid;
    drop(lease);
    shutdown_and_check(&m, pid).await;
}

#[tokio::test]
async fn missing_binary_fails_clearly_and_backs_off() {
    let mut model = EngineModel {
        name: "broken".into(),
        variants: vec![variant("small", 512)],
    };
    model.variants[0].binary = PathBuf::from("/nonexistent/llama-server");
    let m = EngineManager::new(model, settings());
    let error = m.acquire("small").await.expect_err("no binary");
    assert!(matches!(error, EngineError::Spawn { .. }), "{error}");
    assert!(!error.is_client_error());
    assert_eq!(m.status().state, EngineState::Crashed);
    let began = Instant::now();
    assert!(m.acquire("small").await.is_err());
    assert!(began.elapsed() >= Duration::from_millis(150), "no backoff");
    m.shutdown().await;
}

#[tokio::test]
async fn engine_output_reaches_the_log() {
    // A current-thread runtime runs the output readers on this thread, so
    // a thread-local subscriber sees their events.
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let buffer = buffer.clone();
        move || SharedWriter(buffer.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let m = manager(settings());
    let lease = acquire(&m, "small").await;
    // Parallel tests without a subscriber can leave a stale "never" in the
    // callsite interest cache; rebuild it so at least the lines llama-server
    // writes while shutting down are seen.
    tracing::callsite::rebuild_interest_cache();
    let pid = lease.pid;
    drop(lease);
    shutdown_and_check(&m, pid).await;
    let log = String::from_utf8(buffer.lock().expect("log").clone()).expect("utf-8");
    let engine_line = log
        .lines()
        .find(|l| l.contains("lexora::engine") && l.contains("stream=stderr"));
    let engine_line = engine_line.expect("an engine output line in the log");
    assert!(
        engine_line.contains("model=tiny") && engine_line.contains("variant=small"),
        "{engine_line}"
    );
}

struct SharedWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `POST /tokenize` without going through the manager.
async fn direct_tokenize(base_url: &str, text: &str) -> u32 {
    let value = direct_post(
        base_url,
        "/tokenize",
        serde_json::json!({ "content": text }),
    )
    .await;
    value["tokens"].as_array().expect("tokens").len() as u32
}

/// POST JSON to the engine itself; the answer must be 200.
async fn direct_post(base_url: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("{base_url}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = client.request(request).await.expect(path);
    assert_eq!(response.status(), 200, "{path}");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}
