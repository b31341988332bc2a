//! One token bucket in exact integer arithmetic.
//!
//! Integers, not floats, because reserve-then-settle must give back exactly
//! what it took, and because an admit/reject decision at the boundary must
//! not flip with rounding noise after millions of small refills.
//!
//! The level is kept in *units*: one token is [`Shape::unit`] units and the
//! bucket gains [`Shape::refill`] units per nanosecond. For a limit of `C`
//! tokens per minute one token is 60e9 units (the nanoseconds in a minute)
//! and the refill is `C` units per nanosecond, so exactly `C` tokens come
//! back per minute with no rounding at all. For a per-second rate one token
//! is 1e12 units and the refill is the rate in thousandths of a request per
//! second, so a rate is exact to 0.001 request per second.
//!
//! The level may go below zero: that is debt, left by a request whose real
//! usage exceeded what the bucket held, and it is paid back by refill before
//! anything else is admitted.

use std::time::Duration;

use tokio::time::Instant;

/// Units per token of a per-minute bucket: nanoseconds per minute.
const MINUTE_UNIT: i128 = 60_000_000_000;
/// Units per token of a per-second bucket: nanoseconds per second × 1000.
const RATE_UNIT: i128 = 1_000_000_000_000;
/// What a zero limit answers as Retry-After: such a bucket never frees up,
/// so this is only a hint to back off (config validation refuses zero
/// limits; this keeps the limiter total anyway).
pub(super) const ZERO_LIMIT_RETRY: Duration = Duration::from_secs(60);

/// Capacity and refill speed of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// Tokens the bucket holds when full.
    capacity: u64,
    /// Units per token.
    unit: i128,
    /// Units gained per nanosecond.
    refill: i128,
}

impl Shape {
    /// `capacity` tokens, refilled continuously at `capacity` per minute.
    pub(super) fn per_minute(capacity: u64) -> Self {
        Self {
            capacity,
            unit: MINUTE_UNIT,
            refill: i128::from(capacity),
        }
    }

    /// `burst` tokens, refilled at `rate` per second. The rate is rounded
    /// to 0.001/s and kept at least that, so a rate of zero (or NaN) slows a
    /// user down instead of locking them out for good.
    pub(super) fn per_second(rate: f64, burst: u32) -> Self {
        // `as` saturates and maps NaN to 0; the clamp bounds both ends.
        let milli = (rate * 1000.0).round() as i128;
        let full = i128::from(burst) * RATE_UNIT;
        Self {
            capacity: u64::from(burst),
            unit: RATE_UNIT,
            refill: milli.clamp(1, full.max(1)),
        }
    }

    /// Tokens when full.
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    fn full(&self) -> i128 {
        self.units(self.capacity)
    }

    fn units(&self, tokens: u64) -> i128 {
        // At most 2^64 × 1e12 < 2^104: no overflow.
        i128::from(tokens) * self.unit
    }
}

/// A token bucket: [`Shape`] plus how full it is at `last`.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    shape: Shape,
    /// Units held at `last`; negative = debt.
    level: i128,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(super) fn new(shape: Shape, now: Instant) -> Self {
        Self {
            shape,
            level: shape.full(),
            last: now,
        }
    }

    pub(super) fn shape(&self) -> Shape {
        self.shape
    }

    /// Switches to a new shape (after a config reload), keeping what was
    /// used: the level sits as far below the new capacity as it sat below
    /// the old one, so debt carries over and a reload does not hand out a
    /// fresh allowance.
    pub(super) fn reshape(&mut self, shape: Shape) {
        if shape == self.shape {
            return;
        }
        // Shapes of one dimension share their unit; the scaling is only
        // there so that the conversion stays right if they ever do not.
        let used = self.shape.full().saturating_sub(self.level);
        let used = used.saturating_mul(shape.unit) / self.shape.unit;
        self.level = shape.full().saturating_sub(used).min(shape.full());
        self.shape = shape;
    }

    /// Refills up to `now`. A `now` older than the last update (another
    /// caller got the lock first with a later clock reading) refills
    /// nothing, so time never runs backwards.
    pub(super) fn advance(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last) else {
            return;
        };
        let nanos = i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX);
        let gained = nanos.saturating_mul(self.shape.refill);
        self.level = self.level.saturating_add(gained).min(self.shape.full());
        self.last = now;
    }

    /// Whether `tokens` may be taken now, else how long until they may.
    ///
    /// A cost above the capacity is admitted once the bucket is full (and
    /// leaves it in debt): otherwise a large request could never pass.
    /// A level in debt admits nothing, not even a cost of zero.
    pub(super) fn check(&self, tokens: u64) -> Result<(), Duration> {
        if self.shape.capacity == 0 {
            return Err(ZERO_LIMIT_RETRY);
        }
        let need = self.shape.units(tokens).min(self.shape.full());
        if self.level >= need {
            Ok(())
        } else {
            Err(self.time_to(need))
        }
    }

    /// Takes `tokens` (possibly into debt).
    pub(super) fn take(&mut self, tokens: u64) {
        self.level = self.level.saturating_sub(self.shape.units(tokens));
    }

    /// Gives back `tokens`, never above the capacity.
    pub(super) fn give(&mut self, tokens: u64) {
        self.level = self
            .level
            .saturating_add(self.shape.units(tokens))
            .min(self.shape.full());
    }

    /// Whole tokens available now (zero while in debt).
    pub(super) fn remaining(&self) -> u64 {
        u64::try_from(self.level.max(0) / self.shape.unit).unwrap_or(u64::MAX)
    }

    /// Time until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub(super) fn until_full(&self) -> Duration {
        self.time_to(self.shape.full())
    }

    /// Whether the bucket is full at `now`, so it is indistinguishable from
    /// a new one and may be forgotten.
    pub(super) fn is_full_at(&self, now: Instant) -> bool {
        let mut probe = self.clone();
        probe.advance(now);
        probe.level >= self.shape.full()
    }

    /// Time until the level reaches `target`, rounded up to the nanosecond
    /// so that waiting that long is always enough.
    fn time_to(&self, target: i128) -> Duration {
        let missing = target.saturating_sub(self.level);
        if missing <= 0 {
            return Duration::ZERO;
        }
        if self.shape.refill <= 0 {
            return ZERO_LIMIT_RETRY;
        }
        let refill = self.shape.refill;
        let nanos = missing / refill + i128::from(missing % refill != 0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}
