//! Retry timing: exponential backoff with jitter, honouring the engine's
//! `Retry-After`, never past the request's deadline.

use std::time::Duration;

use http::HeaderValue;

use crate::config::RetryConfig;

/// The pause before retry number `retry` (1 for the first retry).
/// Full jitter over the exponential step keeps many clients that failed
/// together from coming back together.
pub fn backoff(config: &RetryConfig, retry: u32, jitter: f64) -> Duration {
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let step = config.base_delay.as_secs_f64() * config.exponential_base.powi(exponent);
    let capped = step.min(config.max_delay.as_secs_f64()).max(0.0);
    // Half fixed, half random: never zero, never above the cap.
    Duration::from_secs_f64(capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
}

/// `Retry-After` in seconds (HTTP dates are rare from engines and ignored).
pub fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            exponential_base: 2.0,
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let c = config();
        assert_eq!(backoff(&c, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&c, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&c, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&c, 4, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&c, 30, 1.0), Duration::from_secs(5));
        assert_eq!(
            backoff(&c, 2, 0.0),
            Duration::from_secs(1),
            "jitter keeps at least half"
        );
    }

    #[test]
    fn parses_retry_after_seconds() {
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("3"))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("0.5"))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            None
        );
        assert_eq!(retry_after(None), None);
    }
}
