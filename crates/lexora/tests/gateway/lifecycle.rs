//! Start-up without an engine, and graceful shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn sigterm_drains_a_running_stream_then_exits_zero() {
    let engine = mock(&["--chunks", "10", "--tokens-per-second", "10"]);
    let mut gw = gateway_for(&engine, "");
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true
        }),
    )
    .await;
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(
        body.next()
            .await
            .expect("first chunk")
            .expect("ok")
            .to_vec(),
    )
    .expect("utf8");

    gw.terminate();
    // New connections are refused while the stream drains.
    let refused = eventually(Duration::from_secs(2), || async {
        client()
            .get(format!("{}/health", gw.url))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(refused, "the listener still accepts after SIGTERM");

    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("the stream is not cut")).expect("utf8"));
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "stream was cut: {text}");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let engine = mock(&["--chunks", "1000", "--tokens-per-second", "10"]);
    let mut gw = gateway_for(&engine, "server:\n  shutdown_grace: 0.5\n");
    let response = post(
        &format!("{}/v1/chat/completions", gw.url),
        json!({
            "model": "m1", "messages": [], "stream": true
        }),
    )
    .await;
    let mut body = response.bytes_stream();
    let _ = body.next().await;
    gw.terminate();
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .expect("join");
    assert_eq!(
        code,
        Some(0),
        "exits after the grace period even with a stream open"
    );
}

#[tokio::test]
async fn starts_without_any_engine_and_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut gw = gateway_with_env(
        "",
        &[("LEXORA_VLLM__URL", &format!("http://127.0.0.1:{port}"))],
    );
    let health = eventually(Duration::from_secs(5), || async {
        let health = get_json(&format!("{}/health", gw.url)).await;
        health["backends"]["vllm"]["status"] == "unreachable"
    })
    .await;
    assert!(health, "health explains the engine is unreachable");
    let health = get_json(&format!("{}/health", gw.url)).await;
    assert_eq!(health["vllm_status"], "disconnected");
    assert!(health["backends"]["vllm"]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    gw.terminate();
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

/// Seed 004's `server.listen_v4` / `listen_v6`: one gateway answers on the
/// IPv4 and the IPv6 loopback.
#[tokio::test]
async fn listens_on_ipv4_and_ipv6_at_once() {
    let engine = mock(&[]);
    let config = format!(
        "server:\n  listen_v4: \"127.0.0.1:0\"\n  listen_v6: \"[::1]:0\"\nrate_limit:\n  enabled: false\nbackends:\n  engine:\n    url: {}\n    models:\n      - name: m1\n",
        engine.url
    );
    let (_gw, urls) = gateway_listening(&config, 2);
    assert!(urls[0].starts_with("http://127.0.0.1:"), "{urls:?}");
    assert!(urls[1].starts_with("http://[::1]:"), "{urls:?}");
    for url in &urls {
        let response = post(
            &format!("{url}/v1/chat/completions"),
            json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(response.status(), 200, "{url}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["object"], "chat.completion", "{url}: {body}");
    }
}

#[test]
fn a_listen_address_of_the_wrong_family_names_the_key() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.yaml");
    std::fs::write(&path, "server:\n  listen_v6: \"127.0.0.1:7777\"\n").expect("write");
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .expect("run lexora");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.listen_v6"), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in USER_HZ, which is 100 on every architecture it runs.
    Duration::from_millis(ticks * 10)
}

/// Sends a chat completion every 2 ms for `span` and returns the
/// gateway's CPU time over that span.
async fn cpu_under_paced_requests(gw: &Process, span: Duration) -> Duration {
    let url = format!("{}/v1/chat/completions", gw.url);
    let http = client();
    let before = cpu_time(gw.pid());
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while started.elapsed() < span {
        tick.tick().await;
        let response = http
            .post(&url)
            .json(&json!({"model": "m1", "messages": []}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
    }
    cpu_time(gw.pid()) - before
}

#[tokio::test]
async fn a_burst_of_connections_is_queued_while_the_gateway_is_busy() {
    // A stopped gateway accepts nothing: the kernel completes handshakes
    // only as far as the listen backlog goes. With the default of 128,
    // connections past it would wait a second for their SYN to be resent.
    let engine = mock(&[]);
    let gw = gateway_for(&engine, "");
    let address = gw.url.trim_start_matches("http://").to_owned();
    gw.signal("STOP");
    let attempts = (0..600).map(|_| {
        let address = address.clone();
        tokio::spawn(async move {
            let connect = tokio::net::TcpStream::connect(address);
            tokio::time::timeout(Duration::from_millis(700), connect)
                .await
                .ok()
                .and_then(Result::ok)
        })
    });
    let mut connected = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        connected.extend(attempt.await.expect("connect task"));
    }
    gw.signal("CONT");
    assert_eq!(
        connected.len(),
        600,
        "handshakes completed while the gateway was stopped"
    );
    drop(connected);
    let answer = post(&chat_url(&gw), json!({"model": "m1", "messages": []})).await;
    assert_eq!(answer.status(), 200);
}

/// No requests: a busy-polling gateway sleeps, however long its window.
async fn assert_sleeps_when_idle(gw: &Process) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = cpu_time(gw.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu = cpu_time(gw.pid()) - before;
    assert!(
        idle_cpu <= Duration::from_millis(100),
        "an idle gateway kept polling: {idle_cpu:?} of CPU in 1 s"
    );
}

/// The names of a process's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list threads")
        .map(|task| {
            let comm = task.expect("thread entry").path().join("comm");
            std::fs::read_to_string(comm)
                .expect("thread name")
                .trim()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_gateway_on_one_cpu_serves_from_its_main_thread_with_busy_polling() {
    // Unpaced: the paced requests below must be answered at once.
    let engine = mock(&["--chunks", "8"]);
    let config = format!(
        "server:\n  busy_poll_us: 5000\nrate_limit:\n  enabled: false\nretry:\n  max_retries: 0\nbackends:\n  engine:\n    url: {}\n    models:\n      - name: m1\n",
        engine.url
    );
    let gw = gateway_on_one_cpu(&config);
    let answer = post(&chat_url(&gw), json!({"model": "m1", "messages": []})).await;
    assert_eq!(answer.status(), 200);
    let stream = post(
        &chat_url(&gw),
        json!({"model": "m1", "messages": [], "stream": true}),
    )
    .await;
    let text = stream.text().await.expect("stream body");
    let events = sse_payloads(&text);
    assert_eq!(events.len(), 11, "role, 8 tokens, finish, [DONE]: {text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // One CPU, one thread serving: no runtime worker thread to hand
    // connections to (tokio names its threads tokio-rt-worker; nothing
    // here needs its blocking pool either).
    let names = thread_names(gw.pid());
    assert!(
        !names.iter().any(|name| name.starts_with("tokio-rt")),
        "runtime worker threads on one CPU: {names:?}"
    );
    // Busy polling works on that single thread too, and stops when idle.
    let span = Duration::from_millis(1000);
    let busy_cpu = cpu_under_paced_requests(&gw, span).await;
    assert!(
        busy_cpu > span / 4,
        "busy polling did not engage on one CPU: {busy_cpu:?} of CPU over {span:?}"
    );
    assert_sleeps_when_idle(&gw).await;
}

#[tokio::test]
async fn busy_polling_spends_cpu_only_while_requests_come() {
    let engine = mock(&[]);
    // A window longer than the gap between requests: the gateway polls
    // the whole time they come.
    let busy = gateway_for(&engine, "server:\n  busy_poll_us: 5000\n");
    let quiet = gateway_for(&engine, "");
    let span = Duration::from_millis(1500);
    let busy_cpu = cpu_under_paced_requests(&busy, span).await;
    let quiet_cpu = cpu_under_paced_requests(&quiet, span).await;
    assert!(
        busy_cpu > quiet_cpu * 2 && busy_cpu > span / 4,
        "busy polling did not engage: {busy_cpu:?} of CPU against {quiet_cpu:?} without it, over {span:?}"
    );

    assert_sleeps_when_idle(&busy).await;
}
