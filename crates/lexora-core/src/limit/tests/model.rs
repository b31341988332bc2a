//! The limiter against a reference model written independently with `f64`
//! buckets.
//!
//! Time moves in steps of 60/1024 s and per-second rates are multiples of
//! 1/8, so every refill is a multiple of 1/8192 token: a dyadic fraction that
//! `f64` holds exactly. The model's decisions and remaining counts are then
//! exact, and must equal the limiter's to the token; only durations (which
//! the limiter rounds up to the nanosecond) get a tolerance.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::super::{LimitSpec, Limiter, RateInfo, Rejection, Reservation};

/// 60 s / 1024, in nanoseconds.
const STEP_NANOS: u64 = 58_593_750;
const USER: &str = "model";
/// Durations may differ by the limiter's rounding up to the nanosecond.
const TOLERANCE_SECS: f64 = 2e-6;

/// A bucket as the model sees it: a level that refills at `per_sec`.
#[derive(Debug, Clone)]
struct ModelBucket {
    capacity: f64,
    /// Tokens gained per minute: an integer, or a multiple of 7.5 for a
    /// per-second rate, so `per_minute × steps / 1024` is exact.
    per_minute: f64,
    level: f64,
}

impl ModelBucket {
    fn full(capacity: f64, per_minute: f64) -> Self {
        Self {
            capacity,
            per_minute,
            level: capacity,
        }
    }

    fn per_sec(&self) -> f64 {
        self.per_minute / 60.0
    }

    /// `None` if `cost` fits, else the seconds until it does.
    fn wait_for(&self, cost: f64) -> Option<f64> {
        let need = if cost > self.capacity {
            self.capacity
        } else {
            cost
        };
        (self.level < need).then(|| (need - self.level) / self.per_sec())
    }

    fn remaining(&self) -> u64 {
        self.level.max(0.0).floor() as u64
    }

    fn reset_secs(&self) -> f64 {
        (self.capacity - self.level) / self.per_sec()
    }
}

/// The three dimensions in the order the limiter reports them.
#[derive(Debug, Default)]
struct Model {
    buckets: [Option<ModelBucket>; 3],
    /// Estimates of reservations not yet ended; `None` for an unlimited one.
    open: Vec<Option<u64>>,
}

const NAMES: [&str; 3] = ["requests", "tokens", "rate"];

fn shapes(spec: &LimitSpec) -> [Option<(f64, f64)>; 3] {
    [
        spec.requests_per_minute
            .map(|n| (f64::from(n), f64::from(n))),
        spec.tokens_per_minute.map(|n| (n as f64, n as f64)),
        spec.rate
            .map(|(rate, burst)| (f64::from(burst), rate * 60.0)),
    ]
}

impl Model {
    fn advance(&mut self, steps: u64) {
        for bucket in self.buckets.iter_mut().flatten() {
            let gained = bucket.per_minute * steps as f64 / 1024.0;
            bucket.level = (bucket.level + gained).min(bucket.capacity);
        }
    }

    /// What the limiter should answer: `Ok(info)` or `Err((dimensions
    /// that may be named, retry seconds, info))`.
    fn reserve(
        &mut self,
        spec: &LimitSpec,
        estimate: u64,
    ) -> Result<ModelInfo, (Vec<&'static str>, f64, ModelInfo)> {
        if spec.is_unlimited() {
            self.open.push(None);
            return Ok(ModelInfo::default());
        }
        // A reload keeps what was used below the capacity.
        for (bucket, shape) in self.buckets.iter_mut().zip(shapes(spec)) {
            *bucket = shape.map(|(capacity, per_minute)| match bucket.take() {
                Some(old) => ModelBucket {
                    capacity,
                    per_minute,
                    level: capacity - (old.capacity - old.level),
                },
                None => ModelBucket::full(capacity, per_minute),
            });
        }
        let costs = [1.0, estimate as f64, 1.0];
        let waits: Vec<(&'static str, f64)> = self
            .buckets
            .iter()
            .zip(costs)
            .zip(NAMES)
            .filter_map(|((bucket, cost), name)| Some((name, bucket.as_ref()?.wait_for(cost)?)))
            .collect();
        if let Some(longest) = waits.iter().map(|(_, w)| *w).reduce(f64::max) {
            let named = waits
                .iter()
                .filter(|(_, w)| longest - w <= TOLERANCE_SECS)
                .map(|(name, _)| *name)
                .collect();
            return Err((named, longest, self.info()));
        }
        for (bucket, cost) in self.buckets.iter_mut().zip(costs) {
            if let Some(bucket) = bucket {
                bucket.level -= cost;
            }
        }
        self.open.push(Some(estimate));
        Ok(self.info())
    }

    fn end(&mut self, index: usize, actual: Option<u64>) {
        let Some(estimate) = self.open.remove(index) else {
            return;
        };
        if let (Some(actual), Some(tokens)) = (actual, &mut self.buckets[1]) {
            let refund = estimate as f64 - actual as f64;
            tokens.level = (tokens.level + refund).min(tokens.capacity);
        }
    }

    fn is_idle(&self) -> bool {
        self.open.iter().all(Option::is_none)
            && self.buckets.iter().flatten().all(|b| b.level == b.capacity)
    }

    fn info(&self) -> ModelInfo {
        let requests = self.buckets[0].as_ref().or(self.buckets[2].as_ref());
        let tokens = self.buckets[1].as_ref();
        ModelInfo {
            requests: requests.map(|b| (b.capacity as u64, b.remaining(), b.reset_secs())),
            tokens: tokens.map(|b| (b.capacity as u64, b.remaining(), b.reset_secs())),
        }
    }
}

/// (limit, remaining, reset seconds) per header group.
#[derive(Debug, Default)]
struct ModelInfo {
    requests: Option<(u64, u64, f64)>,
    tokens: Option<(u64, u64, f64)>,
}

fn assert_info(info: &RateInfo, model: &ModelInfo) {
    let group = |limit, remaining, reset: Option<Duration>| {
        Some((limit?, remaining?, reset?.as_secs_f64()))
    };
    let checks = [
        (
            group(
                info.limit_requests,
                info.remaining_requests,
                info.reset_requests,
            ),
            model.requests,
        ),
        (
            group(info.limit_tokens, info.remaining_tokens, info.reset_tokens),
            model.tokens,
        ),
    ];
    for (actual, expected) in checks {
        match (actual, expected) {
            (None, None) => {}
            (Some((limit, remaining, reset)), Some((e_limit, e_remaining, e_reset))) => {
                assert_eq!(
                    (limit, remaining),
                    (e_limit, e_remaining),
                    "{info:?} vs {model:?}"
                );
                assert!(
                    (reset - e_reset).abs() <= TOLERANCE_SECS,
                    "{info:?} vs {model:?}"
                );
            }
            _ => panic!("{info:?} vs {model:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Reserve(u64),
    Settle(usize, u64),
    Cancel(usize),
    Drop(usize),
    Respec(LimitSpec),
    Evict,
}

fn spec_strategy() -> impl Strategy<Value = LimitSpec> {
    (
        proptest::option::weighted(0.7, 1u32..=300),
        proptest::option::weighted(0.7, 1u64..=5000),
        proptest::option::weighted(0.5, (1u32..=160, 1u32..=40)),
    )
        .prop_map(|(rpm, tpm, rate)| LimitSpec {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            rate: rate.map(|(eighths, burst)| (f64::from(eighths) / 8.0, burst)),
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![0u64..8, 0u64..64, 0u64..2048].prop_map(Op::Advance),
        4 => prop_oneof![0u64..50, 0u64..6000].prop_map(Op::Reserve),
        2 => (any::<usize>(), prop_oneof![0u64..50, 0u64..6000])
            .prop_map(|(i, actual)| Op::Settle(i, actual)),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => spec_strategy().prop_map(Op::Respec),
        1 => Just(Op::Evict),
    ]
}

fn check_rejection(rejection: &Rejection, named: &[&str], wait: f64, model: &ModelInfo) {
    assert!(
        named.contains(&rejection.dimension),
        "{rejection:?}, expected one of {named:?}"
    );
    let retry = rejection.retry_after.as_secs_f64();
    assert!(
        (retry - wait).abs() <= TOLERANCE_SECS,
        "{rejection:?}, expected {wait}s"
    );
    assert_info(&rejection.info, model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn limiter_matches_the_reference_model(
        first_spec in spec_strategy(),
        ops in proptest::collection::vec(op_strategy(), 1..200),
    ) {
        let limiter = Limiter::new();
        let mut model = Model::default();
        let mut spec = first_spec;
        let start = Instant::now();
        let mut steps = 0u64;
        let mut open: Vec<Reservation> = Vec::new();

        for op in ops {
            let now = start + Duration::from_nanos(steps * STEP_NANOS);
            match op {
                Op::Advance(n) => {
                    steps += n;
                    model.advance(n);
                }
                Op::Reserve(estimate) => {
                    match (limiter.reserve(USER, &spec, estimate, now), model.reserve(&spec, estimate)) {
                        (Ok(reservation), Ok(info)) => {
                            assert_info(reservation.info(), &info);
                            open.push(reservation);
                        }
                        (Err(rejection), Err((named, wait, info))) => {
                            check_rejection(&rejection, &named, wait, &info);
                        }
                        (actual, expected) => panic!("limiter {actual:?}, model {expected:?}"),
                    }
                }
                Op::Settle(i, _) | Op::Cancel(i) | Op::Drop(i) if open.is_empty() => {
                    let _ = i;
                }
                Op::Settle(i, actual) => {
                    let i = i % open.len();
                    open.remove(i).settle(actual, now);
                    model.end(i, Some(actual));
                }
                Op::Cancel(i) => {
                    let i = i % open.len();
                    open.remove(i).cancel(now);
                    model.end(i, Some(0));
                }
                Op::Drop(i) => {
                    let i = i % open.len();
                    drop(open.remove(i));
                    model.end(i, None);
                }
                Op::Respec(next) => spec = next,
                Op::Evict => {
                    // Forgetting an idle user must change no later answer,
                    // which the following operations check.
                    let idle = model.is_idle();
                    let users = limiter.users();
                    let evicted = limiter.evict_idle(now);
                    prop_assert_eq!(evicted, usize::from(idle && users == 1));
                }
            }
        }
    }
}
