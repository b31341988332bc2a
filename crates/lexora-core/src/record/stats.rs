//! `/stats`: totals, sliding windows and per-model / per-user breakdowns.
//!
//! Updated once per finished request with atomics only; the windows are
//! rings of time-tagged buckets, so there is no lock and no background task.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::Serialize;
use tokio::time::Instant;

use crate::parse::Priority;

/// Most distinct users and models tracked; later ones are counted under
/// `(other)`, so a client inventing user ids or model names cannot grow
/// memory without bound.
const MAX_USERS: usize = 10_000;
const MAX_MODELS: usize = 1024;
use super::OTHER;

/// Counters of one model or one user.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    latency_us: AtomicU64,
}

/// A snapshot of the counters for JSON.
#[derive(Debug, Serialize)]
pub struct CountersView {
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub avg_latency_ms: f64,
}

impl Counters {
    fn add(&self, sample: &Sample) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if sample.error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.prompt_tokens
            .fetch_add(sample.prompt_tokens, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(sample.completion_tokens, Ordering::Relaxed);
        self.latency_us
            .fetch_add(sample.latency_us, Ordering::Relaxed);
    }

    fn view(&self) -> CountersView {
        let requests = self.requests.load(Ordering::Relaxed);
        let prompt_tokens = self.prompt_tokens.load(Ordering::Relaxed);
        let completion_tokens = self.completion_tokens.load(Ordering::Relaxed);
        let latency_us = self.latency_us.load(Ordering::Relaxed);
        CountersView {
            requests,
            errors: self.errors.load(Ordering::Relaxed),
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            avg_latency_ms: if requests == 0 {
                0.0
            } else {
                latency_us as f64 / requests as f64 / 1000.0
            },
        }
    }
}

/// Counts events per time bucket over a sliding window. Each bucket packs
/// its bucket number (high 32 bits) and count (low 32 bits) into one atomic,
/// so a stale bucket is recognised and reset without a lock.
#[derive(Debug)]
struct Window<const N: usize> {
    bucket_secs: u64,
    buckets: [AtomicU64; N],
}

impl<const N: usize> Window<N> {
    fn new(bucket_secs: u64) -> Self {
        Self {
            bucket_secs,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn bucket_of(&self, elapsed_secs: u64) -> u64 {
        // +1 so that bucket number 0 means "never used".
        elapsed_secs / self.bucket_secs + 1
    }

    fn add(&self, elapsed_secs: u64) {
        let number = self.bucket_of(elapsed_secs);
        let slot = &self.buckets[(number % N as u64) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 == number {
                current + 1
            } else {
                (number << 32) | 1
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Events in the last `N` buckets, the current one included.
    fn sum(&self, elapsed_secs: u64) -> u64 {
        let newest = self.bucket_of(elapsed_secs);
        let oldest = newest.saturating_sub(N as u64 - 1);
        self.buckets
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|packed| {
                let number = packed >> 32;
                number >= oldest && number <= newest
            })
            .map(|packed| packed & 0xffff_ffff)
            .sum()
    }
}

/// One finished request, as the stats see it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub error: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_us: u64,
}

/// Gateway-wide statistics.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    total: Counters,
    /// Requests per second bucket, over a minute.
    minute: Window<60>,
    /// Errors per minute bucket, over an hour.
    hour_errors: Window<60>,
    models: DashMap<String, Counters>,
    users: DashMap<String, Counters>,
    /// By priority (high, normal, low, none): a fixed set, so an array
    /// indexed without hashing.
    priorities: [Counters; PRIORITIES.len()],
    retries: AtomicU64,
    rate_limited: AtomicU64,
    /// Requests that waited for a backend slot, and their total wait.
    queued: AtomicU64,
    queue_wait_us: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            total: Counters::default(),
            minute: Window::new(1),
            hour_errors: Window::new(60),
            models: DashMap::new(),
            users: DashMap::new(),
            priorities: Default::default(),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queue_wait_us: AtomicU64::new(0),
        }
    }
}

/// The `/stats` document.
#[derive(Debug, Serialize)]
pub struct StatsView {
    pub total_requests: u64,
    pub total_errors: u64,
    pub total_tokens: u64,
    pub total_prompt_tokens: u64,
    pub total_completion_tokens: u64,
    pub avg_latency_ms: f64,
    pub requests_per_minute: u64,
    pub errors_last_hour: u64,
    pub retries: u64,
    pub rate_limited: u64,
    /// Requests that had to wait for a backend slot.
    pub queued_requests: u64,
    pub avg_queue_wait_ms: f64,
    pub models: std::collections::BTreeMap<String, CountersView>,
    pub users: std::collections::BTreeMap<String, CountersView>,
    pub priorities: std::collections::BTreeMap<String, CountersView>,
}

impl Stats {
    fn elapsed_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts a retry.
    pub fn note_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that waited `wait` for a backend slot.
    pub fn note_queue_wait(&self, wait: std::time::Duration) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.queue_wait_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a request refused by a rate limit.
    pub fn note_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one finished request.
    pub fn record(&self, model: &str, user: &str, priority: Option<Priority>, sample: Sample) {
        let now = self.elapsed_secs();
        self.total.add(&sample);
        self.minute.add(now);
        if sample.error {
            self.hour_errors.add(now);
        }
        add_to(&self.models, model, &sample, MAX_MODELS);
        add_to(&self.users, user, &sample, MAX_USERS);
        self.priorities[priority_slot(priority)].add(&sample);
    }

    /// A consistent-enough snapshot for `/stats`.
    pub fn view(&self) -> StatsView {
        let now = self.elapsed_secs();
        let total = self.total.view();
        let collect = |map: &DashMap<String, Counters>| {
            map.iter()
                .map(|entry| (entry.key().clone(), entry.value().view()))
                .collect()
        };
        StatsView {
            total_requests: total.requests,
            total_errors: total.errors,
            total_tokens: total.total_tokens,
            total_prompt_tokens: total.prompt_tokens,
            total_completion_tokens: total.completion_tokens,
            avg_latency_ms: total.avg_latency_ms,
            requests_per_minute: self.minute.sum(now),
            errors_last_hour: self.hour_errors.sum(now),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            queued_requests: self.queued.load(Ordering::Relaxed),
            avg_queue_wait_ms: match self.queued.load(Ordering::Relaxed) {
                0 => 0.0,
                n => self.queue_wait_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0,
            },
            models: collect(&self.models),
            users: collect(&self.users),
            // As the map listed them: only priorities seen at least once.
            priorities: PRIORITIES
                .iter()
                .zip(&self.priorities)
                .map(|(name, counters)| (name.to_string(), counters.view()))
                .filter(|(_, view)| view.requests > 0)
                .collect(),
        }
    }
}

/// The `/stats` names of the priority slots, in slot order.
const PRIORITIES: [&str; 4] = ["high", "normal", "low", "none"];

fn priority_slot(priority: Option<Priority>) -> usize {
    match priority {
        Some(Priority::High) => 0,
        Some(Priority::Normal) => 1,
        Some(Priority::Low) => 2,
        None => 3,
    }
}

fn add_to(map: &DashMap<String, Counters>, key: &str, sample: &Sample, limit: usize) {
    if let Some(counters) = map.get(key) {
        counters.add(sample);
        return;
    }
    let key = if map.len() >= limit { OTHER } else { key };
    map.entry(key.to_owned()).or_default().add(sample);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(error: bool) -> Sample {
        Sample {
            error,
            prompt_tokens: 3,
            completion_tokens: 5,
            latency_us: 2_000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn totals_and_breakdowns_add_up() {
        let stats = Stats::default();
        stats.record("m1", "alice", Some(Priority::Normal), sample(false));
        stats.record("m1", "bob", Some(Priority::High), sample(true));
        stats.record("m2", "alice", Some(Priority::Normal), sample(false));
        let view = stats.view();
        assert_eq!(view.total_requests, 3);
        assert_eq!(view.total_errors, 1);
        assert_eq!(view.total_tokens, 24);
        assert_eq!(view.avg_latency_ms, 2.0);
        assert_eq!(view.requests_per_minute, 3);
        assert_eq!(view.errors_last_hour, 1);
        assert_eq!(view.models["m1"].requests, 2);
        assert_eq!(view.users["alice"].total_tokens, 16);
        assert_eq!(view.users["bob"].errors, 1);
        assert_eq!(view.priorities["normal"].requests, 2);
        assert_eq!(view.priorities["high"].errors, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn windows_forget_old_events() {
        let stats = Stats::default();
        stats.record("m", "u", Some(Priority::Low), sample(true));
        tokio::time::advance(Duration::from_secs(30)).await;
        stats.record("m", "u", Some(Priority::Low), sample(false));
        assert_eq!(stats.view().requests_per_minute, 2);
        tokio::time::advance(Duration::from_secs(45)).await;
        let view = stats.view();
        assert_eq!(
            view.requests_per_minute, 1,
            "the first request left the minute window"
        );
        assert_eq!(view.errors_last_hour, 1);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let view = stats.view();
        assert_eq!(view.requests_per_minute, 0);
        assert_eq!(view.errors_last_hour, 0);
        assert_eq!(view.total_requests, 2, "totals never expire");
    }

    #[test]
    fn users_are_bounded() {
        let stats = Stats::default();
        for i in 0..MAX_USERS + 5 {
            stats.record(
                "m",
                &format!("user-{i}"),
                Some(Priority::Normal),
                sample(false),
            );
        }
        let view = stats.view();
        assert_eq!(view.users.len(), MAX_USERS + 1);
        assert_eq!(view.users[OTHER].requests, 5);
    }

    #[test]
    fn models_are_bounded() {
        let stats = Stats::default();
        for i in 0..MAX_MODELS + 3 {
            stats.record(&format!("model-{i}"), "u", None, sample(false));
        }
        let view = stats.view();
        assert_eq!(view.models.len(), MAX_MODELS + 1);
        assert_eq!(view.models[OTHER].requests, 3);
        assert_eq!(view.models["model-0"].requests, 1);
    }
}
