use super::*;

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
    assert!((summary.achieved_rps - 1.0).abs() < 1e-9);
}
