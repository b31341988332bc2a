use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::*;

mod model;

const USER: &str = "alice";

fn rpm(n: u32) -> LimitSpec {
    LimitSpec {
        requests_per_minute: Some(n),
        ..LimitSpec::default()
    }
}

fn tpm(n: u64) -> LimitSpec {
    LimitSpec {
        tokens_per_minute: Some(n),
        ..LimitSpec::default()
    }
}

fn rejected(result: Result<Reservation, Rejection>) -> Rejection {
    match result {
        Ok(reservation) => panic!("admitted: {:?}", reservation.info()),
        Err(rejection) => rejection,
    }
}

fn admitted(result: Result<Reservation, Rejection>) -> Reservation {
    match result {
        Ok(reservation) => reservation,
        Err(rejection) => panic!("rejected: {rejection:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_60_admits_exactly_60_of_200_concurrent_requests() {
    let limiter = Arc::new(Limiter::new());
    let start = Arc::new(tokio::sync::Barrier::new(200));
    let now = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..200 {
        let limiter = Arc::clone(&limiter);
        let start = Arc::clone(&start);
        tasks.spawn(async move {
            // All tasks race for the lock at once.
            start.wait().await;
            limiter.reserve(USER, &rpm(60), 0, now).is_ok()
        });
    }
    let mut admitted_count = 0;
    while let Some(result) = tasks.join_next().await {
        admitted_count += usize::from(result.expect("task"));
    }
    assert_eq!(admitted_count, 60);

    let refusal = rejected(limiter.reserve(USER, &rpm(60), 0, now));
    assert_eq!(refusal.dimension, "requests");
    assert_eq!(refusal.retry_after, Duration::from_secs(1));
    assert_eq!(refusal.retry_after_secs(), 1);

    let later = now + Duration::from_secs(1);
    admitted(limiter.reserve(USER, &rpm(60), 0, later));
    let refusal = rejected(limiter.reserve(USER, &rpm(60), 0, later));
    assert_eq!(refusal.retry_after, Duration::from_secs(1));
}

#[test]
fn settle_refunds_the_unused_estimate() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let first = admitted(limiter.reserve(USER, &tpm(1500), 1000, now));
    assert_eq!(first.info().remaining_tokens, Some(500));
    let refusal = rejected(limiter.reserve(USER, &tpm(1500), 1000, now));
    assert_eq!(refusal.dimension, "tokens");
    // 500 tokens missing at 25 tokens/s.
    assert_eq!(refusal.retry_after, Duration::from_secs(20));

    first.settle(200, now);
    let second = admitted(limiter.reserve(USER, &tpm(1500), 1000, now));
    assert_eq!(second.info().remaining_tokens, Some(300));
}

#[test]
fn usage_above_the_estimate_leaves_debt_that_delays_the_next_request() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let spec = tpm(1000);
    admitted(limiter.reserve(USER, &spec, 100, now)).settle(1600, now);

    // 600 tokens of debt: even a request estimated at zero waits for it.
    let refusal = rejected(limiter.reserve(USER, &spec, 0, now));
    assert_eq!(refusal.dimension, "tokens");
    assert_eq!(refusal.info.remaining_tokens, Some(0));
    // 600 tokens at 1000/60 per second.
    assert_eq!(refusal.retry_after, Duration::from_secs(36));

    // One token needs 601 tokens of refill: 36.06 s.
    let refusal = rejected(limiter.reserve(USER, &spec, 1, now));
    assert_eq!(refusal.retry_after, Duration::from_millis(36_060));
    let almost = now + Duration::from_millis(36_059);
    rejected(limiter.reserve(USER, &spec, 1, almost));
    let then = now + refusal.retry_after;
    let next = admitted(limiter.reserve(USER, &spec, 1, then));
    assert_eq!(next.info().remaining_tokens, Some(0));
}

#[test]
fn an_estimate_above_the_capacity_passes_when_the_bucket_is_full() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let big = admitted(limiter.reserve(USER, &tpm(100), 250, now));
    assert_eq!(big.info().remaining_tokens, Some(0));
    let refusal = rejected(limiter.reserve(USER, &tpm(100), 250, now));
    // 150 of debt plus 100 to be full again, at 100 per minute.
    assert_eq!(refusal.retry_after, Duration::from_secs(150));
    admitted(limiter.reserve(USER, &tpm(100), 250, now + refusal.retry_after));
}

#[test]
fn cancel_refunds_the_tokens_but_not_the_request() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let spec = LimitSpec {
        requests_per_minute: Some(2),
        tokens_per_minute: Some(1000),
        rate: None,
    };
    let first = admitted(limiter.reserve(USER, &spec, 800, now));
    assert_eq!(first.info().remaining_tokens, Some(200));
    assert_eq!(first.info().remaining_requests, Some(1));
    first.cancel(now);

    let second = admitted(limiter.reserve(USER, &spec, 1000, now));
    assert_eq!(second.info().remaining_tokens, Some(0));
    assert_eq!(second.info().remaining_requests, Some(0));
    second.cancel(now);
    assert_eq!(
        rejected(limiter.reserve(USER, &spec, 1, now)).dimension,
        "requests"
    );
}

#[test]
fn dropping_a_reservation_keeps_the_estimate_charged() {
    let limiter = Limiter::new();
    let now = Instant::now();
    drop(admitted(limiter.reserve(USER, &tpm(1000), 700, now)));
    let refusal = rejected(limiter.reserve(USER, &tpm(1000), 700, now));
    assert_eq!(refusal.info.remaining_tokens, Some(300));
}

#[test]
fn a_rejection_takes_nothing_from_the_other_buckets() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let spec = LimitSpec {
        requests_per_minute: Some(10),
        tokens_per_minute: Some(100),
        rate: None,
    };
    admitted(limiter.reserve(USER, &spec, 100, now));
    for _ in 0..5 {
        let refusal = rejected(limiter.reserve(USER, &spec, 50, now));
        assert_eq!(refusal.dimension, "tokens");
        assert_eq!(refusal.info.remaining_requests, Some(9));
    }

    // And the other way round: the request bucket refuses, tokens stay.
    let spec = LimitSpec {
        requests_per_minute: Some(1),
        tokens_per_minute: Some(1000),
        rate: None,
    };
    admitted(limiter.reserve("bob", &spec, 10, now));
    for _ in 0..5 {
        let refusal = rejected(limiter.reserve("bob", &spec, 10, now));
        assert_eq!(refusal.dimension, "requests");
        assert_eq!(refusal.info.remaining_tokens, Some(990));
    }
}

#[test]
fn the_dimension_named_is_the_one_with_the_longest_wait() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let spec = LimitSpec {
        requests_per_minute: Some(1),
        tokens_per_minute: Some(60),
        rate: None,
    };
    admitted(limiter.reserve(USER, &spec, 60, now));
    // Requests: 60 s; tokens: 30 s.
    let refusal = rejected(limiter.reserve(USER, &spec, 30, now));
    assert_eq!(refusal.dimension, "requests");
    assert_eq!(refusal.retry_after, Duration::from_secs(60));
    // A tie (both 60 s) names the first: requests.
    let refusal = rejected(limiter.reserve(USER, &spec, 60, now));
    assert_eq!(refusal.dimension, "requests");

    // With 60 tokens of debt, tokens take longer: 90 s for 30 tokens.
    admitted(limiter.reserve("bob", &spec, 60, now)).settle(120, now);
    let refusal = rejected(limiter.reserve("bob", &spec, 30, now));
    assert_eq!(refusal.dimension, "tokens");
    assert_eq!(refusal.retry_after, Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn seed_000_rate_admits_the_burst_then_one_per_100_ms() {
    let limiter = Limiter::new();
    let spec = LimitSpec {
        rate: Some((10.0, 20)),
        ..LimitSpec::default()
    };
    for _ in 0..20 {
        admitted(limiter.reserve(USER, &spec, 0, Instant::now()));
    }
    let refusal = rejected(limiter.reserve(USER, &spec, 0, Instant::now()));
    assert_eq!(refusal.dimension, "rate");
    assert_eq!(refusal.retry_after, Duration::from_millis(100));
    assert_eq!(refusal.info.limit_requests, Some(20));

    tokio::time::advance(Duration::from_millis(99)).await;
    rejected(limiter.reserve(USER, &spec, 0, Instant::now()));
    tokio::time::advance(Duration::from_millis(1)).await;
    admitted(limiter.reserve(USER, &spec, 0, Instant::now()));
    rejected(limiter.reserve(USER, &spec, 0, Instant::now()));
}

#[test]
fn info_reports_limits_remaining_and_reset_as_openai_headers() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let spec = LimitSpec {
        requests_per_minute: Some(60),
        tokens_per_minute: Some(1000),
        rate: None,
    };
    let reservation = admitted(limiter.reserve(USER, &spec, 250, now));
    let info = reservation.info();
    assert_eq!(
        *info,
        RateInfo {
            limit_requests: Some(60),
            remaining_requests: Some(59),
            reset_requests: Some(Duration::from_secs(1)),
            limit_tokens: Some(1000),
            remaining_tokens: Some(750),
            reset_tokens: Some(Duration::from_secs(15)),
        }
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-ratelimit-remaining-tokens",
        "stale".parse().expect("value"),
    );
    info.write_headers(&mut headers);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(header("x-ratelimit-remaining-requests"), Some("59"));
    assert_eq!(header("x-ratelimit-reset-requests"), Some("1s"));
    assert_eq!(header("x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(header("x-ratelimit-remaining-tokens"), Some("750"));
    assert_eq!(header("x-ratelimit-reset-tokens"), Some("15s"));
    assert_eq!(headers.len(), 6);
}

#[test]
fn only_configured_dimensions_write_headers() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let unlimited = admitted(limiter.reserve(USER, &LimitSpec::default(), 10, now));
    assert!(unlimited.info().is_empty());
    let mut headers = HeaderMap::new();
    unlimited.info().write_headers(&mut headers);
    assert!(headers.is_empty());
    // Unlimited users cost no state.
    assert_eq!(limiter.users(), 0);

    // Seed 000 alone: the requests headers describe the per-second bucket.
    let spec = LimitSpec {
        rate: Some((2.0, 5)),
        ..LimitSpec::default()
    };
    let reservation = admitted(limiter.reserve(USER, &spec, 10, now));
    reservation.info().write_headers(&mut headers);
    assert_eq!(headers.len(), 3);
    assert_eq!(reservation.info().remaining_requests, Some(4));
    assert_eq!(
        reservation.info().reset_requests,
        Some(Duration::from_millis(500))
    );
    assert_eq!(headers["x-ratelimit-reset-requests"], "500ms");
}

#[test]
fn reset_is_formatted_like_openai() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(1), "1ms"),
        (Duration::from_millis(250), "250ms"),
        (Duration::from_micros(999_500), "1s"),
        (Duration::from_secs(1), "1s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_millis(59_847), "59.847s"),
        (Duration::from_secs(360), "6m0s"),
        (Duration::from_millis(61_020), "1m1.02s"),
        (Duration::from_secs(3600), "1h0m0s"),
        (Duration::from_secs(3 * 3600 + 7), "3h0m7s"),
    ];
    for (duration, text) in cases {
        assert_eq!(format_reset(duration), text, "{duration:?}");
    }
}

/// The `format!` formulation `format_reset` had before it was written
/// without allocating; the two must agree on every duration.
fn reference_reset(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let millis = nanos / 1_000_000 + u128::from(!nanos.is_multiple_of(1_000_000));
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let whole_seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    let seconds = if fraction == 0 {
        whole_seconds.to_string()
    } else {
        let digits = format!("{fraction:03}");
        format!("{whole_seconds}.{}", digits.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

proptest::proptest! {
    #[test]
    fn reset_matches_the_format_reference(secs in proptest::prop_oneof![0u64..4000, 0u64..=u64::MAX], nanos in 0u32..1_000_000_000) {
        let duration = Duration::new(secs, nanos);
        proptest::prop_assert_eq!(format_reset(duration), reference_reset(duration));
    }
}

#[test]
fn longest_reset_fits() {
    assert_eq!(format_reset(Duration::MAX), reference_reset(Duration::MAX));
}

/// Rounding up to the millisecond carries into seconds, minutes and hours.
#[test]
fn a_rounded_up_reset_carries() {
    for (secs, nanos, expected) in [
        (0, 999_000_001, "1s"),
        (59, 999_999_999, "1m0s"),
        (3599, 999_500_000, "1h0m0s"),
        (7199, 999_000_001, "2h0m0s"),
        (0, 1, "1ms"),
    ] {
        let duration = Duration::new(secs, nanos);
        assert_eq!(format_reset(duration), expected, "{duration:?}");
        assert_eq!(reference_reset(duration), expected, "{duration:?}");
    }
}

#[test]
fn retry_after_secs_rounds_up_to_at_least_one() {
    let rejection = |retry_after| Rejection {
        dimension: "tokens",
        retry_after,
        info: RateInfo::default(),
    };
    assert_eq!(rejection(Duration::ZERO).retry_after_secs(), 1);
    assert_eq!(rejection(Duration::from_millis(100)).retry_after_secs(), 1);
    assert_eq!(rejection(Duration::from_secs(2)).retry_after_secs(), 2);
    assert_eq!(rejection(Duration::from_millis(2001)).retry_after_secs(), 3);
}

#[test]
fn evict_idle_forgets_users_whose_buckets_are_full_again() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let spec = rpm(60);
    for user in 0..1000 {
        admitted(limiter.reserve(&format!("user-{user}"), &spec, 0, now));
    }
    let holder = admitted(limiter.reserve("holder", &spec, 0, now));
    assert_eq!(limiter.users(), 1001);

    // One request refills in a second; until then nobody is idle.
    assert_eq!(limiter.evict_idle(now + Duration::from_millis(999)), 0);
    let later = now + Duration::from_secs(1);
    assert_eq!(limiter.evict_idle(later), 1000);
    // A user holding a reservation stays, so its settle is not lost.
    assert_eq!(limiter.users(), 1);
    holder.settle(0, later);
    assert_eq!(limiter.evict_idle(later), 1);
    assert_eq!(limiter.users(), 0);
}

#[test]
fn eviction_racing_admission_never_admits_twice() {
    // A user whose bucket is full again may be evicted while requests for
    // them are being admitted; none of them may land in a forgotten copy.
    let start = Instant::now();
    let later = start + Duration::from_secs(60);
    for _ in 0..200 {
        let limiter = Limiter::new();
        drop(admitted(limiter.reserve(USER, &rpm(1), 0, start)));
        let go = std::sync::Barrier::new(5);
        let admitted_count = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    go.wait();
                    if limiter.reserve(USER, &rpm(1), 0, later).is_ok() {
                        admitted_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
            scope.spawn(|| {
                go.wait();
                for _ in 0..50 {
                    limiter.evict_idle(later);
                }
            });
        });
        assert_eq!(admitted_count.into_inner(), 1);
    }
}

#[test]
fn an_older_now_refills_nothing_and_is_not_counted_twice() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let later = now + Duration::from_secs(1);
    for _ in 0..60 {
        admitted(limiter.reserve(USER, &rpm(60), 0, later));
    }
    // A caller that read the clock before the others got the lock.
    rejected(limiter.reserve(USER, &rpm(60), 0, now));
    let refusal = rejected(limiter.reserve(USER, &rpm(60), 0, later));
    assert_eq!(refusal.retry_after, Duration::from_secs(1));
}

#[test]
fn a_reload_keeps_what_was_used() {
    let limiter = Limiter::new();
    let now = Instant::now();
    for _ in 0..5 {
        admitted(limiter.reserve(USER, &rpm(10), 0, now));
    }
    let raised = admitted(limiter.reserve(USER, &rpm(20), 0, now));
    assert_eq!(raised.info().remaining_requests, Some(14));
    // Lowered below what is used: the excess is debt.
    let refusal = rejected(limiter.reserve(USER, &rpm(3), 0, now));
    assert_eq!(refusal.info.remaining_requests, Some(0));
    // Used 6 of 3: 4 requests to refill at 3 per minute.
    assert_eq!(refusal.retry_after, Duration::from_secs(80));
}

#[test]
fn a_zero_limit_refuses_everything() {
    let limiter = Limiter::new();
    let now = Instant::now();
    let refusal = rejected(limiter.reserve(USER, &rpm(0), 0, now));
    assert_eq!(refusal.dimension, "requests");
    assert_eq!(refusal.retry_after, Duration::from_secs(60));
    rejected(limiter.reserve(USER, &tpm(0), 0, now + Duration::from_secs(3600)));
}

#[test]
fn estimate_is_a_quarter_of_the_body_plus_the_answer() {
    assert_eq!(estimate_tokens(b"", None), 1 + DEFAULT_MAX_TOKENS_ESTIMATE);
    assert_eq!(estimate_tokens(b"0123456789", Some(100)), 3 + 100);
    assert_eq!(estimate_tokens(&[b'x'; 4000], Some(0)), 1000);
    assert_eq!(estimate_tokens(b"x", Some(u64::MAX)), u64::MAX);
}

#[test]
fn a_reservation_can_move_to_another_task() {
    fn is_send_static<T: Send + 'static>() {}
    is_send_static::<Reservation>();
    is_send_static::<Rejection>();
    fn is_sync<T: Send + Sync>() {}
    is_sync::<Limiter>();
}

/// Limit values are kept between requests: users with different limits,
/// one after another, each still get their own numbers.
#[test]
fn kept_limit_values_follow_each_user() {
    for (requests, tokens) in [(60, 1000), (60, 1000), (7, 1000), (60, 99), (u64::MAX, 0)] {
        let info = RateInfo {
            limit_requests: Some(requests),
            limit_tokens: Some(tokens),
            ..RateInfo::default()
        };
        let mut headers = HeaderMap::new();
        info.write_headers(&mut headers);
        assert_eq!(
            headers["x-ratelimit-limit-requests"],
            requests.to_string().as_str()
        );
        assert_eq!(
            headers["x-ratelimit-limit-tokens"],
            tokens.to_string().as_str()
        );
    }
}
