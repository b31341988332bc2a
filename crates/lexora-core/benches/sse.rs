//! SSE relaying (`lexora_core::respond::sse::SseRelay`): a 64-token chat
//! stream from the engine to the client, event by event, with the usage
//! chunk read for accounting and dropped when only Lexora asked for it.
//! Each iteration also settles the request's record (stats, metrics), as
//! the end of every stream does.
//!
//! Run: `cargo bench -p lexora-core --bench sse` (append `-- --quick` for a
//! short pass). To compare two versions: `-- --save-baseline before`,
//! change, `-- --baseline before`.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::HeaderValue;
use http_body_util::BodyExt;
use lexora_core::parse::Endpoint;
use lexora_core::record::Recorder;
use lexora_core::respond::sse::SseRelay;
use tokio::time::Instant;

const TOKENS: usize = 64;

/// The events of a streamed chat answer as an OpenAI-compatible engine
/// writes them: role, one event per token, the usage chunk, `[DONE]`.
fn events() -> Vec<Bytes> {
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            "data: {{\"choices\":[{{\"delta\":{delta},\"finish_reason\":{finish},\"index\":0,\"logprobs\":null}}],\"created\":1795614538,\"id\":\"chatcmpl-mock-2\",\"model\":\"m\",\"object\":\"chat.completion.chunk\"}}\n\n"
        ))
    };
    let mut events = vec![chunk(r#"{"content":"","role":"assistant"}"#, "null")];
    for i in 0..TOKENS {
        events.push(chunk(&format!(r#"{{"content":" token{i}"}}"#), "null"));
    }
    events.push(chunk("{}", r#""stop""#));
    events.push(Bytes::from_static(
        b"data: {\"choices\":[],\"created\":1795614538,\"id\":\"chatcmpl-mock-2\",\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":64,\"prompt_tokens\":2,\"total_tokens\":66}}\n\n",
    ));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// Relays `frames` to the end and returns the bytes the client got.
async fn relay(recorder: &Arc<Recorder>, frames: Vec<Bytes>, strip_usage: bool) -> usize {
    let upstream = Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    ));
    let record = recorder.start(Endpoint::ChatCompletions, HeaderValue::from_static("bench"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut relay = pin!(SseRelay::new(
        upstream,
        Bytes::new(),
        record,
        strip_usage,
        deadline
    ));
    let mut sent = 0;
    while let Some(Ok(frame)) = relay.frame().await {
        sent += frame.data_ref().map_or(0, Bytes::len);
    }
    sent
}

fn bench_sse(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let recorder = Arc::new(Recorder::default());
    let events = events();
    let total: usize = events.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Elements(events.len() as u64));

    // As engines stream: one event per read.
    for strip_usage in [true, false] {
        let name = if strip_usage {
            "event_per_frame/strip_usage"
        } else {
            "event_per_frame/keep_usage"
        };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| runtime.block_on(relay(&recorder, events.clone(), strip_usage)))
        });
    }

    // A burst: the whole answer arrives in one read.
    let burst = Bytes::from(events.concat());
    assert_eq!(burst.len(), total);
    group.bench_function(BenchmarkId::from_parameter("one_frame"), |b| {
        b.iter(|| runtime.block_on(relay(&recorder, vec![burst.clone()], true)))
    });

    // Events split at awkward places, as TCP reads may cut them.
    let cut: Vec<Bytes> = burst.chunks(97).map(Bytes::copy_from_slice).collect();
    group.bench_function(BenchmarkId::from_parameter("split_97_bytes"), |b| {
        b.iter(|| runtime.block_on(relay(&recorder, cut.clone(), true)))
    });
    group.finish();
}

criterion_group!(benches, bench_sse);
criterion_main!(benches);
