//! The per-user limiter (`lexora_core::limit`): admitting a request
//! (reserve) and settling its token estimate to the real usage, as every
//! limited request does once.
//!
//! Run: `cargo bench -p lexora-core --bench limit` (append `-- --quick` for
//! a short pass). To compare two versions: `-- --save-baseline before`,
//! change, `-- --baseline before`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lexora_core::limit::{LimitSpec, Limiter};
use tokio::time::Instant;

/// Every dimension limited, never refusing (the benchmark's policies-on
/// configuration): the most work an admission does.
const ALL_LIMITED: LimitSpec = LimitSpec {
    requests_per_minute: Some(1_000_000_000),
    tokens_per_minute: Some(1_000_000_000_000),
    rate: Some((1_000_000.0, 1_000_000)),
};

fn bench_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("limit");

    let limiter = Limiter::new();
    group.bench_function("reserve_settle/one_user", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(reservation) = limiter.reserve(black_box("alice"), &ALL_LIMITED, 300, now) {
                reservation.settle(black_box(280), now);
            }
        })
    });

    // Many users: the look-up goes through a map of a thousand entries.
    let limiter = Limiter::new();
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let mut next = users.iter().cycle();
    group.bench_function("reserve_settle/1000_users", |b| {
        b.iter(|| {
            let user = next.next().map_or("alice", String::as_str);
            let now = Instant::now();
            if let Ok(reservation) = limiter.reserve(user, &ALL_LIMITED, 300, now) {
                reservation.settle(280, now);
            }
        })
    });

    // An unlimited user must cost next to nothing.
    let limiter = Limiter::new();
    let unlimited = LimitSpec::default();
    group.bench_function("reserve_settle/unlimited", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(reservation) = limiter.reserve(black_box("alice"), &unlimited, 300, now) {
                reservation.settle(280, now);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_limit);
criterion_main!(benches);
