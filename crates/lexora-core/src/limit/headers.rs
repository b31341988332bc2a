//! OpenAI's `x-ratelimit-*` response headers.
//!
//! Clients and SDKs written for OpenAI read these to pace themselves, so the
//! names and the reset format follow OpenAI's exactly.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Header values after an admission or rejection: `None` where the user has
/// no limit in that dimension (the header is then left out).
///
/// The `requests` values describe the requests-per-minute bucket, or the
/// requests-per-second bucket (limit = burst) when no per-minute limit is
/// set. `reset_*` is the time until the bucket is full again, as in OpenAI.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateInfo {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub reset_requests: Option<Duration>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens: Option<Duration>,
}

impl RateInfo {
    /// Whether no header would be written.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Writes those of the six `x-ratelimit-*` headers that have a value,
    /// replacing any already there (an engine's own limits must not leak
    /// to the client as if they were the gateway's).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let counts = [
            (LIMIT_REQUESTS, self.limit_requests),
            (REMAINING_REQUESTS, self.remaining_requests),
            (LIMIT_TOKENS, self.limit_tokens),
            (REMAINING_TOKENS, self.remaining_tokens),
        ];
        for (name, value) in counts {
            if let Some(value) = value {
                headers.insert(name, HeaderValue::from(value));
            }
        }
        let resets = [
            (RESET_REQUESTS, self.reset_requests),
            (RESET_TOKENS, self.reset_tokens),
        ];
        for (name, value) in resets {
            // Always ASCII, so the conversion cannot fail; skipping keeps
            // this free of a panic path all the same.
            if let Some(Ok(value)) = value.map(|d| HeaderValue::try_from(format_reset(d))) {
                headers.insert(name, value);
            }
        }
    }
}

/// Formats a reset duration the way OpenAI does (Go's duration style):
/// `"250ms"` below a second, else `"1s"`, `"1.5s"`, `"6m0s"`, `"1h0m0s"`.
/// Rounded up to the millisecond, so a client that waits that long finds
/// the bucket full.
pub fn format_reset(duration: Duration) -> String {
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
