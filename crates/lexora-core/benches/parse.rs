//! Request parsing (`lexora_core::parse::parse`): reading the fields the
//! policies need from a chat request, stripping the `x_*` extensions and
//! asking a stream for usage, with the raw body kept otherwise.
//!
//! Run: `cargo bench -p lexora-core --bench parse` (append `-- --quick` for
//! a short pass, or a name such as `-- parse/plain` to pick one). To compare
//! two versions: `-- --save-baseline before`, change, `-- --baseline before`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use lexora_core::parse::{parse, Endpoint};

/// The body `scripts/bench.sh` sends.
const PLAIN: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16}"#;

/// A chat of `turns` messages, about 150 bytes each.
fn conversation(turns: usize) -> String {
    let messages: Vec<String> = (0..turns)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            format!(
                r#"{{"role":"{role}","content":"Message {i}: the engines stay reachable, fair and observable; \"quoted\" text and unicode é included."}}"#
            )
        })
        .collect();
    format!(
        r#"{{"model":"m","messages":[{}],"max_tokens":256,"temperature":0.7,"top_k":40}}"#,
        messages.join(",")
    )
}

fn cases() -> Vec<(&'static str, Bytes, HeaderMap)> {
    let mut with_headers = HeaderMap::new();
    with_headers.insert("x-lexora-priority", HeaderValue::from_static("high"));
    with_headers.insert("x-lexora-user", HeaderValue::from_static("alice"));
    vec![
        // Forwarded as it came: nothing to change.
        ("plain", Bytes::from_static(PLAIN.as_bytes()), HeaderMap::new()),
        // Extensions as headers: the body still passes unchanged.
        (
            "header_extensions",
            Bytes::from_static(PLAIN.as_bytes()),
            with_headers,
        ),
        // Extensions in the body: the top-level object is rebuilt without them.
        (
            "body_extensions",
            Bytes::from_static(
                br#"{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16,"x_priority":"high","x_user_id":"alice","x_timeout":30}"#,
            ),
            HeaderMap::new(),
        ),
        // A stream without usage: `stream_options.include_usage` is added.
        (
            "stream_add_usage",
            Bytes::from_static(
                br#"{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16,"stream":true}"#,
            ),
            HeaderMap::new(),
        ),
        ("long_plain", Bytes::from(conversation(40)), HeaderMap::new()),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, body, headers) in cases() {
        // A benchmark of the error path would measure nothing useful.
        assert!(
            parse(Endpoint::ChatCompletions, body.clone(), &headers, None).is_ok(),
            "{name} must parse"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                parse(
                    Endpoint::ChatCompletions,
                    black_box(body.clone()),
                    black_box(&headers),
                    None,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
