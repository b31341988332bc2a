//! Clients that leave at any moment (queued, waiting for the head,
//! mid-stream) leave no slot, queue place, in-flight count or engine
//! stream behind.

use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::support::*;

/// How a storm client leaves its request.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Reads the whole answer.
    Finish,
    /// Gives up before the answer's head, or after this many µs.
    After(u64),
    /// Streams, and leaves once the first piece of the stream came.
    MidStream,
}

#[tokio::test]
async fn clients_that_leave_at_any_moment_leak_no_slot_stream_or_count() {
    // 2 slots and a queue: many requests wait, and clients leave while
    // queued, while the engine is starting and in the middle of streams.
    // Streams of 200 ms, clients leaving within 300 ms.
    let engine = mock(&["--chunks", "20", "--tokens-per-second", "100"]);
    let gw = gateway_for(&engine, "    max_concurrency: 2\n");
    let mut runner = TestRunner::new(Config::default());
    let strategy = (
        any::<bool>(),
        prop_oneof![
            2 => Just(Leave::Finish),
            5 => (0u64..300_000).prop_map(Leave::After),
            1 => Just(Leave::MidStream),
        ],
    );
    let url = chat_url(&gw);
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..80 {
        let (stream, leave) = strategy.new_tree(&mut runner).expect("case").current();
        let stream = stream || matches!(leave, Leave::MidStream);
        let url = url.clone();
        storm.spawn(async move {
            let request = client()
                .post(&url)
                .json(&json!({"model": "m1", "messages": [], "stream": stream}));
            match leave {
                Leave::Finish => {
                    let response = request.send().await.expect("sent");
                    assert_eq!(response.status(), 200);
                    response.bytes().await.expect("a whole answer");
                }
                Leave::After(micros) => {
                    let exchange = async {
                        if let Ok(response) = request.send().await {
                            let _ = response.bytes().await;
                        }
                    };
                    // Dropping the exchange closes its connection.
                    let _ = tokio::time::timeout(Duration::from_micros(micros), exchange).await;
                }
                Leave::MidStream => {
                    let response = request.send().await.expect("sent");
                    assert_eq!(response.status(), 200);
                    let mut body = response.bytes_stream();
                    body.next().await.expect("a first piece").expect("read");
                }
            }
        });
    }
    while let Some(done) = storm.join_next().await {
        done.expect("a storm client panicked");
    }
    // Everything the storm held is given back: the gateway's slots and
    // queue, its in-flight count, and the engine's streams.
    let settled = eventually(Duration::from_secs(10), || async {
        let stats = get_json(&format!("{}/stats", gw.url)).await;
        let engine_stats = get_json(&format!("{}/mock/stats", engine.url)).await;
        let backend = &stats["backends"]["engine"];
        let waiting: u64 = ["high", "normal", "low"]
            .iter()
            .filter_map(|p| backend["waiting"][p].as_u64())
            .sum();
        backend["in_flight"] == 0
            && waiting == 0
            && engine_stats["active_streams"] == 0
            && engine_stats["active_answers"] == 0
    })
    .await;
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    let engine_stats = get_json(&format!("{}/mock/stats", engine.url)).await;
    assert!(settled, "{stats}\n{engine_stats}");
    // The storm did leave streams in the middle, and finished others.
    let count = |key: &str| engine_stats[key].as_u64().unwrap_or(0);
    assert!(
        count("cancelled_streams") > 0 && count("completed_streams") > 0,
        "{engine_stats}"
    );
    let metrics = metrics_text(&gw).await;
    assert!(metrics.contains("lexora_requests_in_flight 0"), "{metrics}");
    // And both slots serve again at once.
    let (a, b) = tokio::join!(
        post(&url, json!({"model": "m1", "messages": [], "stream": true})),
        post(&url, json!({"model": "m1", "messages": []})),
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let log = gw.stderr();
    assert!(!log.contains("panicked"), "{log}");
}
