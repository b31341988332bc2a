//! Resilience through the real binary: retries, circuit breaker,
//! failover, fallback models, hot reload.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn retries_recover_from_transient_failures_honouring_retry_after() {
    let engine = mock(&["--chunks", "2"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 3\n  base_delay: 0.05\nbackends:\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    let recovering = json!({"model": "m1", "messages": [], "mock": {"status": 503, "fail_first": 2, "fail_key": "a"}});
    let response = post(&url, recovering).await;
    assert_eq!(response.status(), 200, "two failures, then success");
    assert_eq!(engine_requests(&engine).await.len(), 3);

    let started = Instant::now();
    let throttled = json!({"model": "m1", "messages": [], "mock": {"status": 429, "retry_after": 1, "fail_first": 1, "fail_key": "b"}});
    assert_eq!(post(&url, throttled).await.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was honoured: {:?}",
        started.elapsed()
    );

    let hopeless = json!({"model": "m1", "messages": [], "mock": {"status": 502, "fail_first": 10, "fail_key": "c"}});
    assert_eq!(
        post(&url, hopeless).await.status(),
        502,
        "gives up after max_retries"
    );
    let not_retryable = json!({"model": "m1", "messages": [], "mock": {"status": 400, "fail_first": 1, "fail_key": "d"}});
    let before = engine_requests(&engine).await.len();
    assert_eq!(post(&url, not_retryable).await.status(), 400);
    assert_eq!(
        engine_requests(&engine).await.len(),
        before + 1,
        "a 400 is not retried"
    );

    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["retries"], 2 + 1 + 3, "{stats}");
}

#[tokio::test]
async fn no_retry_once_the_stream_has_started() {
    let engine = mock(&["--chunks", "10"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 3\n  base_delay: 0.05\nbackends:\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let text = post(&chat_url(&gw), json!({
        "model": "m1", "messages": [], "stream": true, "mock": {"reset_after": 3, "tokens_per_second": 50}
    }))
    .await
    .text()
    .await
    .expect("text");
    assert!(text.contains("upstream_reset"), "{text}");
    assert_eq!(
        engine_requests(&engine).await.len(),
        1,
        "bytes had reached the client: no retry"
    );
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let engine = mock(&["--chunks", "1"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\ncircuit_breaker:\n  failure_threshold: 3\n  timeout: 1.5\nbackends:\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    let failing = json!({"model": "m1", "messages": [], "mock": {"status": 500}});
    for _ in 0..3 {
        assert_eq!(post(&url, failing.clone()).await.status(), 500);
    }
    let (status, code) = error_code(post(&url, json!({"model": "m1", "messages": []})).await).await;
    assert_eq!(
        (status, code.as_str()),
        (503, "circuit_open"),
        "skipped at once while open"
    );
    assert_eq!(
        engine_requests(&engine).await.len(),
        3,
        "the open breaker sent nothing"
    );
    let health = get_json(&format!("{}/health", gw.url)).await;
    assert_eq!(health["backends"]["engine"]["circuit_breaker"], "open");
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains(r#"lexora_circuit_breaker_state{backend="engine"} 2"#),
        "{metrics}"
    );

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        post(&url, failing.clone()).await.status(),
        500,
        "the half-open probe fails"
    );
    let (status, _) = error_code(post(&url, json!({"model": "m1", "messages": []})).await).await;
    assert_eq!(status, 503, "open again");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        post(&url, json!({"model": "m1", "messages": []}))
            .await
            .status(),
        200,
        "the probe succeeds"
    );
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["backends"]["engine"]["circuit_breaker"], "closed");
    assert_eq!(stats["backends"]["engine"]["breaker_opened"], 2);
}

#[tokio::test]
async fn the_first_backend_written_is_the_one_used_whatever_the_names() {
    // Named against the alphabet: a gateway that sorted its backends by
    // name would send everything to the fallback.
    let primary = mock(&["--chunks", "2"]);
    let fallback = mock(&["--chunks", "2"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nbackends:\n  zeta_primary:\n    url: {}\n    models: [{{name: m1}}]\n  alpha_fallback:\n    url: {}\n    models: [{{name: m1}}]\n",
        primary.url, fallback.url
    ));
    for _ in 0..5 {
        let status = post(&chat_url(&gw), json!({"model": "m1", "messages": []}))
            .await
            .status();
        assert_eq!(status, 200);
    }
    assert_eq!(engine_requests(&primary).await.len(), 5);
    assert!(engine_requests(&fallback).await.is_empty());
    let models = get_json(&format!("{}/v1/models", gw.url)).await;
    assert_eq!(models["data"][0]["owned_by"], "zeta_primary", "{models}");
}

#[tokio::test]
async fn failover_loses_no_request_when_an_engine_dies() {
    let first = mock(&["--chunks", "2"]);
    let second = mock(&["--chunks", "2"]);
    let mut gw_config = format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 2\n  base_delay: 0.05\nbackends:\n  a:\n    url: {}\n    models: [{{name: m1}}]\n  b:\n    url: {}\n    models: [{{name: m1}}]\n",
        first.url, second.url
    );
    gw_config.push_str("health:\n  check_interval: 0.2\n");
    let gw = gateway(&gw_config);
    let url = chat_url(&gw);
    let mut first = Some(first);
    let mut statuses = Vec::new();
    for i in 0..40 {
        if i == 10 {
            drop(first.take()); // kills engine a
        }
        statuses.push(
            post(&url, json!({"model": "m1", "messages": []}))
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(engine_requests(&second).await.len(), 30);
}

#[tokio::test]
async fn fallback_models_take_over_when_a_model_has_no_working_backend() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let hosted = mock(&[]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 1\n  base_delay: 0.05\nfallbacks:\n  local: [m2]\nbackends:\n  gpu:\n    url: http://127.0.0.1:{port}\n    models: [{{name: local}}]\n  hosted:\n    url: {}\n    models: [{{name: m2}}]\n",
        hosted.url
    ));
    let answer: Value = post(&chat_url(&gw), json!({"model": "local", "messages": []}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["model"], "m2", "{answer}");
    assert_eq!(
        engine_requests(&hosted).await.pop().expect("request")["model"],
        "m2"
    );
}

#[tokio::test]
async fn reload_applies_valid_files_and_refuses_invalid_ones_under_load() {
    let engine = mock(&["--chunks", "1"]);
    let dir = TempDir::new();
    let path = dir.0.join("lexora.yaml");
    let config = |default_model: &str| {
        format!(
            "rate_limit:\n  enabled: false\ndefault_model: {default_model}\nbackends:\n  engine:\n    url: {}\n    max_concurrency: 4\n    models: [{{name: m1}}, {{name: m2}}]\n",
            engine.url
        )
    };
    std::fs::write(&path, config("m1")).expect("write");
    let gw = gateway_at(&path);
    let url = chat_url(&gw);

    let load = tokio::spawn({
        let url = url.clone();
        async move {
            let mut statuses = Vec::new();
            for _ in 0..150 {
                statuses.push(post(&url, json!({"messages": []})).await.status().as_u16());
            }
            statuses
        }
    });
    let reload = format!("{}/admin/reload", gw.url);
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&path, config("m2")).expect("write");
    let ok = client().post(&reload).send().await.expect("send");
    assert_eq!(ok.status(), 200);
    std::fs::write(&path, "backends:\n  engine:\n    url: localhost:8000\n").expect("write");
    let refused = client().post(&reload).send().await.expect("send");
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_config");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("backends.engine.url")),
        "{body}"
    );

    let statuses = load.await.expect("join");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no request failed during reloads: {statuses:?}"
    );
    let answer: Value = post(&url, json!({"messages": []}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["model"], "m2",
        "the valid reload is in force, the invalid one was refused"
    );

    // SIGHUP reloads too.
    std::fs::write(&path, config("m1")).expect("write");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let switched = eventually(Duration::from_secs(3), || async {
        let answer: Value = post(&url, json!({"messages": []}))
            .await
            .json()
            .await
            .expect("json");
        answer["model"] == "m1"
    })
    .await;
    assert!(switched, "SIGHUP reloaded the file");
}

#[tokio::test]
async fn a_probe_abandoned_by_its_client_does_not_wedge_the_breaker() {
    let engine = mock(&["--chunks", "1"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\ncircuit_breaker:\n  failure_threshold: 1\n  timeout: 0.3\nbackends:\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    assert_eq!(
        post(
            &url,
            json!({"model": "m1", "messages": [], "mock": {"status": 500}})
        )
        .await
        .status(),
        500
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The probe: a slow answer the client gives up on.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let probe = impatient
        .post(&url)
        .json(&json!({"model": "m1", "messages": [], "mock": {"delay_ms": 2000}}))
        .send()
        .await;
    assert!(probe.is_err());
    let recovered = eventually(Duration::from_secs(3), || async {
        post(&url, json!({"model": "m1", "messages": []}))
            .await
            .status()
            == 200
    })
    .await;
    assert!(
        recovered,
        "the next request probed instead of a breaker stuck half-open"
    );
}

#[tokio::test]
async fn a_refused_request_with_a_huge_max_tokens_costs_nothing() {
    let engine = mock(&["--chunks", "1"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\nrate_limits:\n  default:\n    tokens_per_minute: 100000\nbackends:\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    let huge =
        json!({"model": "m1", "messages": [], "max_tokens": u64::MAX, "mock": {"status": 400}});
    assert_eq!(post(&url, huge).await.status(), 400);
    let next = post(
        &url,
        json!({"model": "m1", "messages": [], "max_tokens": 10}),
    )
    .await;
    assert_eq!(
        next.status(),
        200,
        "the refused request was refunded, not left as debt"
    );
}

#[tokio::test]
async fn only_the_backends_own_timeout_counts_against_its_breaker() {
    let engine = mock(&["--chunks", "1"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\ncircuit_breaker:\n  failure_threshold: 2\n  timeout: 30\nbackends:\n  engine:\n    url: {}\n    timeout: 0.4\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    let slow = |x_timeout: Option<f64>| {
        let mut body = json!({"model": "m1", "messages": [], "mock": {"delay_ms": 1500}});
        if let Some(seconds) = x_timeout {
            body["x_timeout"] = json!(seconds);
        }
        body
    };
    // Clients that give up sooner than the backend's timeout: their
    // deadlines pass, the breaker stays closed.
    for _ in 0..4 {
        let (status, code) = error_code(post(&url, slow(Some(0.05))).await).await;
        assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    }
    let ok = post(&url, json!({"model": "m1", "messages": []})).await;
    assert_eq!(
        ok.status(),
        200,
        "a client's own deadline opened the breaker"
    );
    // The backend's own timeout (0.4 s) passing twice does open it.
    for _ in 0..2 {
        let (status, _) = error_code(post(&url, slow(None)).await).await;
        assert_eq!(status, 504);
    }
    let (status, code) = error_code(post(&url, json!({"model": "m1", "messages": []})).await).await;
    assert_eq!((status, code.as_str()), (503, "circuit_open"));
}

#[tokio::test]
async fn a_full_queue_fails_over_to_the_next_backend_of_the_model() {
    let busy_engine = mock(&["--chunks", "10", "--tokens-per-second", "10"]);
    let spare_engine = mock(&["--chunks", "1"]);
    let gw = gateway(&format!(
        "rate_limit:\n  enabled: false\nretry:\n  max_retries: 0\nqueue:\n  max_size: 1\nbackends:\n  busy:\n    url: {}\n    max_concurrency: 1\n    models: [{{name: m1}}]\n  spare:\n    url: {}\n    models: [{{name: m1}}]\n",
        busy_engine.url, spare_engine.url
    ));
    let url = chat_url(&gw);
    // The first backend: one request generating (1 s), one queued.
    let mut held = Vec::new();
    for _ in 0..2 {
        let url = url.clone();
        held.push(tokio::spawn(async move {
            post(&url, json!({"model": "m1", "messages": []}))
                .await
                .status()
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Its queue is full: served by the other backend, not refused.
    let response = post(&url, json!({"model": "m1", "messages": []})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(engine_requests(&spare_engine).await.len(), 1);
    for request in held {
        assert_eq!(request.await.expect("join"), 200);
    }
    assert_eq!(engine_requests(&busy_engine).await.len(), 2);
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(
        stats["retries"], 0,
        "failover past a full queue is not a retry"
    );
}
