//! A circuit breaker per backend (seed 003): after `failure_threshold`
//! consecutive failures the backend is skipped for `open_for`; then one
//! probe request is let through (half-open) and its outcome closes or
//! reopens the breaker.
//!
//! The state is a few words behind a mutex held for nanoseconds, twice per
//! request; a disabled breaker never locks.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else is refused until it reports.
    HalfOpen,
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send.
    Allowed,
    /// The request is the half-open probe; report its outcome.
    Probe,
    /// Open: skip this backend for now.
    Refused { retry_after: Duration },
}

/// One backend's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: Mutex<BreakerConfig>,
    state: Mutex<State>,
    opened_total: std::sync::atomic::AtomicU64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: Mutex::new(config),
            state: Mutex::new(State::Closed { failures: 0 }),
            opened_total: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn config(&self) -> BreakerConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New thresholds on reload; the current state is kept.
    pub fn reconfigure(&self, config: BreakerConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// May a request go to this backend now?
    pub fn admit(&self, now: Instant) -> Admission {
        if !self.config().enabled {
            return Admission::Allowed;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { until } => Admission::Refused {
                retry_after: until - now,
            },
            State::HalfOpen => Admission::Refused {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// The backend answered (any non-retryable outcome counts as alive).
    pub fn record_success(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != (State::Closed { failures: 0 }) {
            if *state == State::HalfOpen {
                tracing::info!("circuit breaker closed: the probe succeeded");
            }
            *state = State::Closed { failures: 0 };
        }
    }

    /// The backend failed (connect error, reset, timeout, 500/502/503/504;
    /// a 429 is the backend protecting itself, not a failure).
    pub fn record_failure(&self, now: Instant) {
        let config = self.config();
        if !config.enabled {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let open = match *state {
            State::Closed { failures } if failures + 1 >= config.failure_threshold => true,
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen => true,
            // Late failures of requests sent before it opened change nothing.
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open {
                until: now + config.open_for,
            };
            self.opened_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A probe that never reached the backend (e.g. cancelled) must not
    /// leave the breaker half-open forever.
    pub fn abandon_probe(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == State::HalfOpen {
            *state = State::Open { until: now };
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn state_name(&self) -> &'static str {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// Consecutive failures while closed.
    pub fn failures(&self) -> u32 {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { failures } => failures,
            _ => self.config().failure_threshold,
        }
    }

    /// How often it has opened since start.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            enabled: true,
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let b = breaker();
        let now = Instant::now();
        b.record_failure(now);
        b.record_failure(now);
        b.record_success();
        b.record_failure(now);
        b.record_failure(now);
        assert_eq!(
            b.admit(now),
            Admission::Allowed,
            "a success resets the count"
        );
        b.record_failure(now);
        assert_eq!(b.state_name(), "open");
        assert_eq!(
            b.admit(now + Duration::from_secs(4)),
            Admission::Refused {
                retry_after: Duration::from_secs(6)
            }
        );
        assert_eq!(b.opened_total(), 1);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert!(
            matches!(b.admit(t1), Admission::Refused { .. }),
            "one probe at a time"
        );
        b.record_failure(t1);
        assert_eq!(b.state_name(), "open");
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit(t2), Admission::Probe);
        b.record_success();
        assert_eq!(b.state_name(), "closed");
        assert_eq!(b.admit(t2), Admission::Allowed);
    }

    #[test]
    fn abandoned_probe_lets_the_next_request_probe() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(t1), Admission::Probe);
        b.abandon_probe(t1);
        assert_eq!(b.admit(t1), Admission::Probe);
    }

    #[test]
    fn disabled_breaker_always_allows() {
        let b = Breaker::new(BreakerConfig {
            enabled: false,
            failure_threshold: 1,
            open_for: Duration::from_secs(1),
        });
        let now = Instant::now();
        b.record_failure(now);
        assert_eq!(b.admit(now), Admission::Allowed);
    }
}
