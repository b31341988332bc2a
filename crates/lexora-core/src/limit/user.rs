//! The buckets of one user and the all-or-nothing admission across them.

use std::time::Duration;

use tokio::time::Instant;

use super::bucket::{Bucket, Shape};
use super::{LimitSpec, RateInfo, Rejection};

/// Everything the limiter remembers about one user. Always used under the
/// user's mutex, so each method sees and leaves a consistent state.
#[derive(Debug, Default)]
pub(super) struct UserState {
    /// Requests per minute.
    requests: Option<Bucket>,
    /// Tokens per minute.
    tokens: Option<Bucket>,
    /// Requests per second with a burst (seed 000).
    rate: Option<Bucket>,
    /// Reservations not yet settled, cancelled or dropped. While any is
    /// out, the state must stay in the map, or a late settle would land in
    /// a forgotten copy and its refund or extra charge would be lost.
    in_flight: u64,
}

impl UserState {
    /// Takes one request and `tokens` from every configured bucket, or from
    /// none of them.
    #[allow(clippy::result_large_err)] // see `Limiter::reserve`
    pub(super) fn reserve(
        &mut self,
        spec: &LimitSpec,
        tokens: u64,
        now: Instant,
    ) -> Result<RateInfo, Rejection> {
        self.sync(spec, now);
        let costs = [
            ("requests", &self.requests, 1),
            ("tokens", &self.tokens, tokens),
            ("rate", &self.rate, 1),
        ];
        // The client has to wait for the slowest dimension, so that is the
        // one named; on a tie the first in the list above.
        let mut refusal: Option<(&'static str, Duration)> = None;
        for (dimension, bucket, cost) in costs {
            let Some(Err(wait)) = bucket.as_ref().map(|b| b.check(cost)) else {
                continue;
            };
            match refusal {
                Some((_, longest)) if longest >= wait => {}
                _ => refusal = Some((dimension, wait)),
            }
        }
        if let Some((dimension, retry_after)) = refusal {
            return Err(Rejection {
                dimension,
                retry_after,
                info: self.info(),
            });
        }
        for (bucket, cost) in [
            (&mut self.requests, 1),
            (&mut self.tokens, tokens),
            (&mut self.rate, 1),
        ] {
            if let Some(bucket) = bucket {
                bucket.take(cost);
            }
        }
        self.in_flight += 1;
        Ok(self.info())
    }

    /// Ends a reservation: corrects the token bucket from `estimate` to
    /// `actual`, giving back the difference or charging the excess (which
    /// may leave the bucket in debt).
    pub(super) fn settle(&mut self, estimate: u64, actual: u64, now: Instant) {
        self.release();
        if let Some(bucket) = &mut self.tokens {
            bucket.advance(now);
            if actual < estimate {
                bucket.give(estimate - actual);
            } else {
                bucket.take(actual - estimate);
            }
        }
    }

    /// Ends a reservation and leaves its charge as it is.
    pub(super) fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Whether forgetting this user changes nothing: no reservation is out
    /// and every bucket is full, i.e. the same as a new user's.
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0
            && [&self.requests, &self.tokens, &self.rate]
                .into_iter()
                .flatten()
                .all(|bucket| bucket.is_full_at(now))
    }

    /// The header values as the buckets stand.
    pub(super) fn info(&self) -> RateInfo {
        let requests = self.requests.as_ref().or(self.rate.as_ref());
        RateInfo {
            limit_requests: requests.map(|b| b.shape().capacity()),
            remaining_requests: requests.map(Bucket::remaining),
            reset_requests: requests.map(Bucket::until_full),
            limit_tokens: self.tokens.as_ref().map(|b| b.shape().capacity()),
            remaining_tokens: self.tokens.as_ref().map(Bucket::remaining),
            reset_tokens: self.tokens.as_ref().map(Bucket::until_full),
        }
    }

    /// Brings the buckets in line with `spec` (a reload may have changed
    /// the limits) and refills them up to `now`.
    fn sync(&mut self, spec: &LimitSpec, now: Instant) {
        let shapes = [
            spec.requests_per_minute
                .map(|n| Shape::per_minute(u64::from(n))),
            spec.tokens_per_minute.map(Shape::per_minute),
            spec.rate
                .map(|(rate, burst)| Shape::per_second(rate, burst)),
        ];
        let buckets = [&mut self.requests, &mut self.tokens, &mut self.rate];
        for (bucket, shape) in buckets.into_iter().zip(shapes) {
            match (bucket.as_mut(), shape) {
                (Some(existing), Some(shape)) => {
                    existing.advance(now);
                    existing.reshape(shape);
                }
                (None, Some(shape)) => *bucket = Some(Bucket::new(shape, now)),
                (_, None) => *bucket = None,
            }
        }
    }
}
