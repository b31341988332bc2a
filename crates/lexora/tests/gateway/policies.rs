//! Team-sharing policies through the real binary: keys, limits, queue.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support::*;

async fn post_with_key(url: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn api_keys_identify_users_and_guard_models_and_admin() {
    let engine = mock(&[]);
    let gw = gateway_for(
        &engine,
        "auth:\n  admin_key: admin-key-0001\n  keys:\n    - key: sk-alice-0001\n      user: alice\n    - key: sk-bob-00001\n      user: bob\n      models: [m2]\n",
    );
    let url = chat_url(&gw);
    let body = json!({"model": "m1", "messages": [], "x_user_id": "mallory"});

    let (status, code) = error_code(post(&url, body.clone()).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_api_key"));
    let wrong = post_with_key(&url, "sk-wrong-key-1", body.clone()).await;
    assert_eq!(wrong.status(), 401);
    let text = wrong.text().await.expect("text");
    assert!(!text.contains("sk-wrong"), "keys are never echoed: {text}");

    let ok = client()
        .post(&url)
        .header("x-api-key", "sk-alice-0001")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(
        stats["users"]["alice"]["requests"], 1,
        "the key's owner wins over x_user_id: {stats}"
    );
    assert!(stats["users"].get("mallory").is_none());

    let (status, code) = error_code(post_with_key(&url, "sk-bob-00001", body.clone()).await).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    let allowed = post_with_key(&url, "sk-bob-00001", json!({"model": "m2", "messages": []})).await;
    assert_eq!(allowed.status(), 200);

    let models = format!("{}/v1/models", gw.url);
    assert_eq!(
        client().get(&models).send().await.expect("send").status(),
        401
    );
    let listed: Value = client()
        .get(&models)
        .bearer_auth("sk-bob-00001")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["m2"], "a key sees only its models");

    let reload = format!("{}/admin/reload", gw.url);
    let none = client().post(&reload).send().await.expect("send");
    assert_eq!(none.status(), 401);
    let user_key = client()
        .post(&reload)
        .bearer_auth("sk-alice-0001")
        .send()
        .await
        .expect("send");
    assert_eq!(user_key.status(), 403);
    let admin = client()
        .post(&reload)
        .bearer_auth("admin-key-0001")
        .send()
        .await
        .expect("send");
    assert_eq!(admin.status(), 200);

    assert!(
        !gw.stderr().contains("sk-alice-0001"),
        "keys never reach the log"
    );
}

#[tokio::test]
async fn requests_per_minute_admit_exactly_the_allowance_under_concurrency() {
    let engine = mock(&["--chunks", "1"]);
    let gw = gateway_for(
        &engine,
        "rate_limits:\n  default:\n    requests_per_minute: 60\n",
    );
    let url = chat_url(&gw);
    let started = Instant::now();
    let responses = burst(
        &url,
        200,
        json!({"model": "m1", "messages": [], "x_user_id": "burst"}),
    )
    .await;
    // The bucket refills one request per second while the burst is on its
    // way: a slow machine may legitimately admit a few more than 60.
    let refilled = started.elapsed().as_secs() as usize + 1;
    let ok: Vec<_> = responses.iter().filter(|r| r.status() == 200).collect();
    let limited: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
    assert!(
        (60..=60 + refilled).contains(&ok.len()),
        "{} passed in {:?}",
        ok.len(),
        started.elapsed()
    );
    assert_eq!(ok.len() + limited.len(), 200);
    let rejected = limited[0].headers();
    assert!(rejected["retry-after"]
        .to_str()
        .expect("ascii")
        .parse::<u64>()
        .is_ok_and(|s| (1..=2).contains(&s)));
    assert_eq!(rejected["x-ratelimit-limit-requests"], "60");
    assert_eq!(rejected["x-ratelimit-remaining-requests"], "0");
    assert!(rejected.contains_key("x-ratelimit-reset-requests"));
    let remaining: Vec<u64> = ok
        .iter()
        .map(|r| {
            r.headers()["x-ratelimit-remaining-requests"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("number")
        })
        .collect();
    assert!(
        remaining.contains(&0) && remaining.contains(&59),
        "{remaining:?}"
    );

    // Another user has their own allowance.
    let other = post(
        &url,
        json!({"model": "m1", "messages": [], "x_user_id": "other"}),
    )
    .await;
    assert_eq!(other.status(), 200);
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["rate_limited"], limited.len() as u64);
}

#[tokio::test]
async fn seed_000_rate_limit_is_on_by_default() {
    let engine = mock(&["--chunks", "1"]);
    // Defaults: 10 requests/s per user with a burst of 20.
    let gw = gateway(&format!(
        "backends:\n  engine:\n    url: {}\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    let started = Instant::now();
    let responses = burst(&url, 25, json!({"model": "m1", "messages": []})).await;
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    assert!(
        (20..=20 + refilled).contains(&ok),
        "the burst passes, the rest waits: {ok} in {:?}",
        started.elapsed()
    );
    assert!(responses.iter().any(|r| r.status() == 429));
}

/// Sends `n` copies of `body` at once over one pre-warmed connection pool,
/// so they reach the gateway as close together as the machine allows.
async fn burst(url: &str, n: usize, body: Value) -> Vec<reqwest::Response> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()
        .expect("client");
    let health = url.replace("/v1/chat/completions", "/health");
    join_all((0..n).map(|_| client.get(&health).send())).await;
    join_all((0..n).map(|_| client.post(url).json(&body).send()))
        .await
        .into_iter()
        .map(|r| r.expect("send"))
        .collect()
}

/// Remaining tokens reported on the next response of `user`.
async fn remaining_tokens(url: &str, user: &str) -> u64 {
    let response = post(
        url,
        json!({"model": "m1", "messages": [], "x_user_id": user, "max_tokens": 1}),
    )
    .await;
    assert_eq!(response.status(), 200);
    response.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn token_limits_settle_to_real_usage_for_streams_and_answers() {
    let engine = mock(&["--chunks", "5"]);
    let gw = gateway_for(
        &engine,
        "rate_limits:\n  default:\n    tokens_per_minute: 100000\n",
    );
    let url = chat_url(&gw);
    // A large max_tokens makes the estimate far above the real usage.
    for (user, stream) in [("plain", false), ("streamer", true)] {
        let response = post(
            &url,
            json!({
                "model": "m1", "messages": [{"role": "user", "content": "two words"}],
                "max_tokens": 5000, "stream": stream, "x_user_id": user
            }),
        )
        .await;
        assert_eq!(response.status(), 200);
        let during: u64 = response.headers()["x-ratelimit-remaining-tokens"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("n");
        assert!(
            during < 95_000,
            "the estimate is reserved up front: {during}"
        );
        let _ = response.text().await;
        // Settled: 2 prompt + 5 completion tokens were used, the rest refunded.
        let left = eventually(Duration::from_secs(2), || async {
            let remaining = remaining_tokens(&url, user).await;
            // The probe request itself reserves an estimate (<= ~30 tokens).
            remaining > 99_900
        })
        .await;
        assert!(left, "{user}: the reservation was not refunded");
    }
}

#[tokio::test]
async fn priorities_order_the_queue_and_low_still_gets_served() {
    // One request at a time; each answer takes 300 ms, the blocker's 3 s.
    let engine = mock(&["--chunks", "3", "--tokens-per-second", "10"]);
    let gw = gateway_for(&engine, "    max_concurrency: 1\n");
    let url = chat_url(&gw);
    let send = |tag: &'static str, priority: &'static str| {
        let url = url.clone();
        async move {
            let r = post(
                &url,
                json!({"model": "m1", "messages": [], "tag": tag, "x_priority": priority}),
            )
            .await;
            (
                tag,
                r.status().as_u16(),
                r.headers().get("x-lexora-queue-wait-ms").cloned(),
            )
        }
    };
    // Each request is sent only once the previous one is seen in flight or
    // waiting, so the arrival order is certain even on a loaded machine.
    let queued = |count: u64| {
        let stats_url = format!("{}/stats", gw.url);
        async move {
            eventually(Duration::from_secs(5), || async {
                let stats = get_json(&stats_url).await;
                let engine = &stats["backends"]["engine"];
                let waiting: u64 = ["high", "normal", "low"]
                    .iter()
                    .filter_map(|p| engine["waiting"][p].as_u64())
                    .sum();
                engine["in_flight"].as_u64().unwrap_or(0) + waiting == count
            })
            .await
        }
    };
    let blocker = tokio::spawn(send("blocker", "normal"));
    assert!(queued(1).await, "the blocker holds the slot");
    let mut waiting = Vec::new();
    for (n, (tag, priority)) in [
        ("low1", "low"),
        ("low2", "low"),
        ("high1", "high"),
        ("high2", "high"),
        ("normal1", "normal"),
    ]
    .into_iter()
    .enumerate()
    {
        waiting.push(tokio::spawn(send(tag, priority)));
        assert!(queued(n as u64 + 2).await, "{tag} is queued");
    }
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["backends"]["engine"]["in_flight"], 1, "{stats}");
    assert_eq!(stats["backends"]["engine"]["waiting"]["low"], 2, "{stats}");
    let mut results = vec![blocker.await.expect("join")];
    for task in waiting {
        results.push(task.await.expect("join"));
    }
    assert!(
        results.iter().all(|(_, status, _)| *status == 200),
        "{results:?}"
    );
    assert!(
        results[1..].iter().all(|(_, _, wait)| wait.is_some()),
        "queued requests report their wait"
    );
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    assert_eq!(stats["queued_requests"], 5, "{stats}");
    assert!(
        stats["avg_queue_wait_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 100.0),
        "{stats}"
    );
    assert_eq!(stats["priorities"]["low"]["requests"], 2, "{stats}");
    let order: Vec<String> = engine_requests(&engine)
        .await
        .iter()
        .filter_map(|b| b["tag"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        order,
        ["blocker", "high1", "high2", "normal1", "low1", "low2"]
    );
}

#[tokio::test]
async fn full_queue_timeout_and_disconnect_free_their_places() {
    let engine = mock(&["--chunks", "10", "--tokens-per-second", "10"]);
    let gw = gateway(&format!(
        "retry:\n  max_retries: 0\nrate_limit:\n  enabled: false\nqueue:\n  max_size: 1\nbackends:\n  engine:\n    url: {}\n    max_concurrency: 1\n    models: [{{name: m1}}]\n",
        engine.url
    ));
    let url = chat_url(&gw);
    let busy = tokio::spawn({
        let url = url.clone();
        async move {
            post(&url, json!({"model": "m1", "messages": []}))
                .await
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Fills the one place in the queue, then gives up (disconnects).
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let waiter = tokio::spawn({
        let url = url.clone();
        async move {
            impatient
                .post(&url)
                .json(&json!({"model": "m1", "messages": []}))
                .send()
                .await
                .is_err()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let full = post(&url, json!({"model": "m1", "messages": []})).await;
    assert_eq!(full.status(), 429);
    assert!(full.headers().contains_key("retry-after"));
    let (_, code) = error_code(full).await;
    assert_eq!(code, "queue_full");
    assert!(
        waiter.await.expect("join"),
        "the impatient client timed out"
    );
    let freed = eventually(Duration::from_secs(1), || async {
        let stats = get_json(&format!("{}/stats", gw.url)).await;
        stats["backends"]["engine"]["waiting"]["normal"] == 0
    })
    .await;
    assert!(freed, "a disconnected waiter left the queue at once");

    // Waiting past x_timeout: 504.
    let started = Instant::now();
    let timed_out = post(
        &url,
        json!({"model": "m1", "messages": [], "x_timeout": 0.3}),
    )
    .await;
    let (status, code) = error_code(timed_out).await;
    assert_eq!((status, code.as_str()), (504, "queue_timeout"));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(busy.await.expect("join"), 200);
}
