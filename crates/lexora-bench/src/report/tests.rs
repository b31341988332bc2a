use super::*;
use crate::request::Transit;

#[test]
fn counts_errors_by_kind_and_rate() {
    let mut recorder = Recorder::new().expect("histograms");
    let t = Instant::now();
    let timings = Timings {
        done: Some(t + Duration::from_micros(100)),
        ..Timings::default()
    };
    recorder.record(t, t, Ok(timings));
    recorder.record(t, t, Err(Failure::Status(429)));
    recorder.record(t, t, Err(Failure::Status(429)));
    let summary = recorder.summary(Duration::from_secs(1));
    assert_eq!(summary.ok, 1);
    assert_eq!(summary.errors, 2);
    assert_eq!(summary.errors_by_kind.get("status_429"), Some(&2));
    assert_eq!(summary.latency_us.p50, 100);
    assert!(summary.ttft_us.is_none());
    assert!(summary.ttft_transit_us.is_none());
    assert!((summary.achieved_rps - 1.0).abs() < 1e-9);
}

#[test]
fn first_token_transit_is_summarised_when_stamped() {
    let mut recorder = Recorder::new().expect("histograms");
    let t = Instant::now();
    for (transit, ttft) in [(Some((30, 50)), 400), (Some((100, 20)), 900), (None, 500)] {
        let timings = Timings {
            done: Some(t + Duration::from_micros(2_000)),
            first_token: Some(t + Duration::from_micros(ttft)),
            first_token_transit: transit.map(|(there, back)| Transit {
                there: Duration::from_micros(there),
                back: Duration::from_micros(back),
            }),
            ..Timings::default()
        };
        recorder.record(t, t, Ok(timings));
    }
    let summary = recorder.summary(Duration::from_secs(1));
    let transit = summary.ttft_transit_us.expect("stamped streams");
    assert_eq!((transit.count, transit.p50, transit.max), (2, 80, 120));
    let there = summary.ttft_there_us.expect("stamped streams");
    assert_eq!((there.count, there.p50, there.max), (2, 30, 100));
    let back = summary.ttft_back_us.expect("stamped streams");
    assert_eq!((back.count, back.p50, back.max), (2, 20, 50));
    assert_eq!(summary.ttft_us.map(|s| s.count), Some(3));
}

#[test]
fn gap_stretches_are_summarised_with_shrunk_gaps_as_one_microsecond() {
    let mut recorder = Recorder::new().expect("histograms");
    let t = Instant::now();
    let micros = |v: &[u64]| v.iter().map(|&m| Duration::from_micros(m)).collect();
    for stretches in [micros(&[0, 0, 40]), micros(&[300]), Vec::new()] {
        let timings = Timings {
            done: Some(t + Duration::from_micros(2_000)),
            stretches,
            ..Timings::default()
        };
        recorder.record(t, t, Ok(timings));
    }
    let summary = recorder.summary(Duration::from_secs(1));
    let stretch = summary.gap_stretch_us.expect("stamped streams");
    assert_eq!((stretch.count, stretch.p50, stretch.max), (4, 1, 300));
    // Unstamped streams (a proxy that drops the fields) report none.
    let mut recorder = Recorder::new().expect("histograms");
    recorder.record(t, t, Ok(Timings::default()));
    assert!(recorder
        .summary(Duration::from_secs(1))
        .gap_stretch_us
        .is_none());
}

#[test]
fn curve_is_monotonic_and_ends_at_max() {
    let mut recorder = Recorder::new().expect("histograms");
    let t = Instant::now();
    for micros in 1..=1000 {
        let timings = Timings {
            done: Some(t + Duration::from_micros(micros)),
            ..Timings::default()
        };
        recorder.record(t, t, Ok(timings));
    }
    let curve = recorder.summary(Duration::from_secs(1)).latency_us.curve;
    assert_eq!(curve.len(), CURVE.len());
    assert!(curve.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(curve.last().map(|&(p, v)| (p, v)), Some((100.0, 1000)));
    assert_eq!(
        curve.iter().find(|(p, _)| *p == 50.0).map(|c| c.1),
        Some(500)
    );
}

#[test]
fn achieved_rate_counts_answers_that_arrive_after_the_window() {
    let mut recorder = Recorder::new().expect("histograms");
    let t = Instant::now();
    // 10 requests intended over the first second, answered one per second
    // (a target far slower than the offered rate); the fastest took 1 s.
    for i in 0..10u64 {
        let intended = t + Duration::from_millis(100 * i);
        let timings = Timings {
            done: Some(t + Duration::from_secs(i + 1)),
            ..Timings::default()
        };
        recorder.record(intended, intended, Ok(timings));
    }
    let summary = recorder.summary(Duration::from_secs(1));
    assert!(
        (summary.rate_window_s - 9.0).abs() < 1e-3,
        "{}",
        summary.rate_window_s
    );
    assert!((summary.achieved_rps - 10.0 / 9.0).abs() < 1e-3);
}
