//! Per-user rate limits: requests and tokens per minute (seed 001) and a
//! requests-per-second bucket with a burst (seed 000).
//!
//! Every dimension is a token bucket that starts full and refills
//! continuously (a per-minute limit `C` gains `C/60` per second). A request
//! passes only if every configured bucket has room, and then takes from all
//! of them at once; a refusal takes nothing and says how long to wait.
//!
//! Tokens are not known until the engine has answered, so a request
//! [reserves](Limiter::reserve) an [estimate](estimate_tokens) up front and
//! the [`Reservation`] is [settled](Reservation::settle) to the real usage
//! afterwards: the difference is refunded, or charged if the request used
//! more. A charge may push the token bucket below zero; that debt is paid
//! back by refill before the user's next request passes, so a user cannot
//! run ahead of the limit by under-declaring `max_tokens`.
//!
//! The arithmetic is exact (integers, see `bucket.rs`), so refunds are
//! exact and the decisions are reproducible; time is passed in as `now`
//! (a [`tokio::time::Instant`]) so tests drive the clock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

mod bucket;
mod headers;
mod user;

pub use headers::{format_reset, RateInfo};
use user::UserState;

#[cfg(test)]
mod tests;

/// Output tokens assumed by [`estimate_tokens`] when the request sets no
/// `max_tokens`.
pub const DEFAULT_MAX_TOKENS_ESTIMATE: u64 = 256;

/// Limits of one user (`None` = unlimited in that dimension).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitSpec {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// (requests per second, burst). The rate counts to 0.001/s and is at
    /// least that.
    pub rate: Option<(f64, u32)>,
}

impl LimitSpec {
    /// Whether no dimension is limited, so the limiter can be skipped.
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.rate.is_none()
    }
}

/// A request refused by the limiter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rate limit reached ({dimension}); retry in {retry_after:?}")]
pub struct Rejection {
    /// Which dimension refused: `"requests"`, `"tokens"` or `"rate"`; when
    /// several did, the one with the longest wait.
    pub dimension: &'static str,
    /// How long until this same request would pass, if nothing else is
    /// taken meanwhile.
    pub retry_after: Duration,
    /// The user's buckets as they stand (nothing was taken).
    pub info: RateInfo,
}

impl Rejection {
    /// `retry_after` in whole seconds for a `Retry-After` header: rounded
    /// up, and at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let rounded = secs.saturating_add(u64::from(self.retry_after.subsec_nanos() > 0));
        rounded.max(1)
    }
}

/// The per-user buckets, shared by all requests.
///
/// One mutex per user, found through a sharded map: requests of different
/// users do not contend, and those of one user are serialized, which is
/// what makes admission exact (200 simultaneous requests against a limit of
/// 60 admit exactly 60).
#[derive(Debug, Default)]
pub struct Limiter {
    users: DashMap<String, Arc<Mutex<UserState>>>,
}

impl Limiter {
    /// A limiter that knows no user yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves one request and `estimated_tokens` for `user` under `spec`
    /// at `now`.
    ///
    /// A token estimate above the whole per-minute capacity is admitted
    /// once the bucket is full (it leaves the bucket in debt); refusing it
    /// instead would refuse it forever. An unlimited `spec` is admitted
    /// without touching any state.
    // A rejection is the cold path, and callers take it apart into the
    // gateway's error anyway; boxing it would only make the API clumsier.
    #[allow(clippy::result_large_err)]
    pub fn reserve(
        &self,
        user: &str,
        spec: &LimitSpec,
        estimated_tokens: u64,
        now: Instant,
    ) -> Result<Reservation, Rejection> {
        if spec.is_unlimited() {
            return Ok(Reservation {
                hold: None,
                info: RateInfo::default(),
            });
        }
        // The map entry stays borrowed while the user's state is locked, so
        // `evict_idle` (which needs the shard for writing) cannot drop the
        // state between the look-up and the admission.
        match self.users.get(user) {
            Some(entry) => admit(entry.value(), spec, estimated_tokens, now),
            None => {
                let entry = self.users.entry(user.to_owned()).or_default();
                admit(entry.value(), spec, estimated_tokens, now)
            }
        }
    }

    /// Forgets the users whose buckets are all full again at `now` and who
    /// hold no reservation; returns how many were forgotten.
    ///
    /// Such a user is the same as a new one, so forgetting them changes no
    /// future decision. Call it periodically (say once a minute) so that
    /// memory follows the number of recently active users, not of all users
    /// ever seen.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let before = self.users.len();
        self.users.retain(|_, state| !lock(state).is_idle(now));
        before.saturating_sub(self.users.len())
    }

    /// Users currently remembered.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

#[allow(clippy::result_large_err)] // see `Limiter::reserve`
fn admit(
    state: &Arc<Mutex<UserState>>,
    spec: &LimitSpec,
    estimated_tokens: u64,
    now: Instant,
) -> Result<Reservation, Rejection> {
    let info = lock(state).reserve(spec, estimated_tokens, now)?;
    Ok(Reservation {
        hold: Some(Hold {
            state: Arc::clone(state),
            estimate: estimated_tokens,
        }),
        info,
    })
}

/// A poisoned lock only means another thread panicked while holding it;
/// every update leaves the state consistent, so carry on with it.
fn lock(state: &Mutex<UserState>) -> MutexGuard<'_, UserState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An admitted request's hold on the limiter.
///
/// End it with [`settle`](Self::settle) once the real usage is known, or
/// [`cancel`](Self::cancel) if the request never reached an engine. If it is
/// dropped instead (say the request failed before the engine reported
/// usage), the whole estimate stays charged: without a usage report the
/// engine may still have done the work, and overcharging is the safe side.
/// The request itself counts in every case.
#[derive(Debug)]
pub struct Reservation {
    /// `None` when the user is unlimited.
    hold: Option<Hold>,
    info: RateInfo,
}

#[derive(Debug)]
struct Hold {
    state: Arc<Mutex<UserState>>,
    estimate: u64,
}

impl Reservation {
    /// The header values right after admission.
    pub fn info(&self) -> &RateInfo {
        &self.info
    }

    /// The tokens reserved (zero for an unlimited user).
    pub fn estimate(&self) -> u64 {
        self.hold.as_ref().map_or(0, |hold| hold.estimate)
    }

    /// Corrects the token bucket from the estimate to `actual_tokens` at
    /// `now`: refunds the difference, or charges the excess (possibly into
    /// debt, which delays the user's next requests).
    pub fn settle(mut self, actual_tokens: u64, now: Instant) {
        if let Some(hold) = self.hold.take() {
            lock(&hold.state).settle(hold.estimate, actual_tokens, now);
        }
    }

    /// Refunds the whole token estimate, for a request that never reached
    /// an engine. The request itself stays counted.
    pub fn cancel(self, now: Instant) {
        self.settle(0, now);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            lock(&hold.state).release();
        }
    }
}

/// Estimates a request's tokens cheaply, before the engine has counted
/// them: the raw body's bytes / 4 (rounded up, at least 1) for the prompt,
/// plus `max_tokens` (or [`DEFAULT_MAX_TOKENS_ESTIMATE`]) for the answer.
///
/// Only an estimate: the JSON around the messages inflates it and
/// tokenizers differ, but [`Reservation::settle`] corrects it to the real
/// usage, so it only has to be cheap and in the right range.
pub fn estimate_tokens(body: &[u8], max_tokens: Option<u64>) -> u64 {
    let prompt = u64::try_from(body.len().div_ceil(4))
        .unwrap_or(u64::MAX)
        .max(1);
    prompt.saturating_add(max_tokens.unwrap_or(DEFAULT_MAX_TOKENS_ESTIMATE))
}
