//! Recording outcomes into HDR histograms and summarising them as JSON.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::request::{Failure, Timings};

/// Highest value a histogram tracks: 60 s in microseconds (larger values are clamped).
const MAX_US: u64 = 60_000_000;

/// Percentiles of the latency curve in the output (for plots): spaced so
/// each "nine" of the tail gets points, as in HDR percentile plots.
const CURVE: [f64; 17] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.975, 99.99,
    99.999, 100.0,
];

/// The histograms and counters of one measured run.
pub struct Recorder {
    /// Latency from the intended send time (open loop: the scheduled time).
    latency: Histogram<u64>,
    /// Latency from the actual send time (differs from `latency` in open loop
    /// when requests were sent late).
    service: Histogram<u64>,
    ttft: Histogram<u64>,
    /// The first token's transit (see [`Timings::first_token_transit`]).
    ttft_transit: Histogram<u64>,
    /// Its first leg, the request's way to the engine.
    ttft_there: Histogram<u64>,
    /// Its second leg, the first token's way back.
    ttft_back: Histogram<u64>,
    gaps: Histogram<u64>,
    delays: Histogram<u64>,
    stretches: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// Earliest intended send time and latest answer of the successes: a
    /// target slower than the offered rate answers long after the window.
    first_intended: Option<Instant>,
    last_done: Option<Instant>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> anyhow::Result<Self> {
        let histogram = || Histogram::<u64>::new_with_bounds(1, MAX_US, 3);
        Ok(Self {
            latency: histogram()?,
            service: histogram()?,
            ttft: histogram()?,
            ttft_transit: histogram()?,
            ttft_there: histogram()?,
            ttft_back: histogram()?,
            gaps: histogram()?,
            delays: histogram()?,
            stretches: histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
            first_intended: None,
            last_done: None,
        })
    }

    /// Records one request intended at `intended`, actually sent at `sent`.
    pub fn record(&mut self, intended: Instant, sent: Instant, result: Result<Timings, Failure>) {
        match result {
            Ok(timings) => {
                self.ok += 1;
                let done = timings.done.unwrap_or_else(Instant::now);
                self.first_intended =
                    Some(self.first_intended.map_or(intended, |t| t.min(intended)));
                self.last_done = Some(self.last_done.map_or(done, |t| t.max(done)));
                add(&mut self.latency, done.saturating_duration_since(intended));
                add(&mut self.service, done.saturating_duration_since(sent));
                if let Some(first) = timings.first_token {
                    add(&mut self.ttft, first.saturating_duration_since(intended));
                }
                if let Some(transit) = timings.first_token_transit {
                    add(&mut self.ttft_transit, transit.total());
                    add(&mut self.ttft_there, transit.there);
                    add(&mut self.ttft_back, transit.back);
                }
                for gap in timings.gaps {
                    add(&mut self.gaps, gap);
                }
                for delay in timings.delays {
                    add(&mut self.delays, delay);
                }
                for stretch in timings.stretches {
                    add(&mut self.stretches, stretch);
                }
            }
            Err(failure) => *self.errors.entry(failure.label()).or_default() += 1,
        }
    }

    /// Summarises the run; `window` is the measured period. The achieved rate
    /// is over the window or, when answers kept arriving well after it (a
    /// target that could not keep up), over the time they took: from the
    /// first intended send to the last answer, less the fastest answer's
    /// latency (which any request takes, however lightly loaded the target).
    pub fn summary(&self, window: Duration) -> Summary {
        let errors_total = self.errors.values().sum();
        let span = match (self.first_intended, self.last_done) {
            (Some(first), Some(last)) => last
                .saturating_duration_since(first)
                .saturating_sub(Duration::from_micros(self.latency.min())),
            _ => Duration::ZERO,
        };
        let rate_window = window.max(span);
        Summary {
            requests: self.ok + errors_total,
            ok: self.ok,
            errors: errors_total,
            errors_by_kind: self.errors.clone(),
            window_s: window.as_secs_f64(),
            rate_window_s: rate_window.as_secs_f64(),
            achieved_rps: self.ok as f64 / rate_window.as_secs_f64().max(f64::EPSILON),
            latency_us: Stats::of(&self.latency),
            service_us: Stats::of(&self.service),
            ttft_us: stats(&self.ttft),
            ttft_transit_us: stats(&self.ttft_transit),
            ttft_there_us: stats(&self.ttft_there),
            ttft_back_us: stats(&self.ttft_back),
            gap_us: stats(&self.gaps),
            event_delay_us: stats(&self.delays),
            gap_stretch_us: stats(&self.stretches),
        }
    }
}

/// Percentiles of a histogram that has samples (streams, stamped events).
fn stats(histogram: &Histogram<u64>) -> Option<Stats> {
    (!histogram.is_empty()).then(|| Stats::of(histogram))
}

fn add(histogram: &mut Histogram<u64>, value: Duration) {
    let micros = u64::try_from(value.as_micros()).unwrap_or(MAX_US);
    histogram.saturating_record(micros.clamp(1, MAX_US));
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// `[percentile, value]` pairs at [`CURVE`]'s percentiles, for plots.
    pub curve: Vec<(f64, u64)>,
}

impl Stats {
    fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            count: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            curve: CURVE
                .iter()
                .map(|&p| (p, histogram.value_at_quantile(p / 100.0)))
                .collect(),
        }
    }
}

/// The JSON result of one run (merged with the run's settings by `main`).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Requests recorded (ok + errors).
    pub requests: u64,
    /// Requests answered 2xx and read to the end.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Failures by kind (`status_503`, `io`, `timeout`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Seconds `achieved_rps` is computed over (≥ `window_s`).
    pub rate_window_s: f64,
    /// Successful requests per second over `rate_window_s`.
    pub achieved_rps: f64,
    /// Latency from the intended send time (coordinated-omission free in open loop).
    pub latency_us: Stats,
    /// Latency from the actual send time.
    pub service_us: Stats,
    /// Streams: time to first token, from the intended send time.
    pub ttft_us: Option<Stats>,
    /// Streams from an engine that stamps its events: the time to first
    /// token less the engine's part of it (the request's way there and the
    /// token's way back).
    pub ttft_transit_us: Option<Stats>,
    /// The first leg of `ttft_transit_us`: from the request's send to its
    /// arrival at the engine.
    pub ttft_there_us: Option<Stats>,
    /// The second leg: from the engine's write of the first token to its
    /// arrival here.
    pub ttft_back_us: Option<Stats>,
    /// Streams: gaps between events after the first token.
    pub gap_us: Option<Stats>,
    /// Streams from an engine that stamps its events: each event's delay
    /// from the engine's write to its arrival.
    pub event_delay_us: Option<Stats>,
    /// Streams from an engine that stamps its events: how much longer each
    /// gap between two events was here than at the engine (1 µs when it
    /// was not longer: histograms start at 1).
    pub gap_stretch_us: Option<Stats>,
}

#[cfg(test)]
mod tests;
