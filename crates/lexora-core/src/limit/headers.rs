//! OpenAI's `x-ratelimit-*` response headers.
//!
//! Clients and SDKs written for OpenAI read these to pace themselves, so the
//! names and the reset format follow OpenAI's exactly.

use std::cell::RefCell;
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
        // One growth of the engine's header map instead of one per header.
        headers.reserve(6);
        if let Some(value) = self.limit_requests {
            headers.insert(LIMIT_REQUESTS, limit_value(0, value));
        }
        if let Some(value) = self.remaining_requests {
            headers.insert(REMAINING_REQUESTS, HeaderValue::from(value));
        }
        if let Some(value) = self.limit_tokens {
            headers.insert(LIMIT_TOKENS, limit_value(1, value));
        }
        if let Some(value) = self.remaining_tokens {
            headers.insert(REMAINING_TOKENS, HeaderValue::from(value));
        }
        let resets = [
            (RESET_REQUESTS, self.reset_requests),
            (RESET_TOKENS, self.reset_tokens),
        ];
        for (name, value) in resets {
            let Some(value) = value else { continue };
            let mut text = Text::default();
            write_reset(value, &mut text);
            // Always ASCII, so the conversion cannot fail; skipping keeps
            // this free of a panic path all the same.
            if let Ok(value) = HeaderValue::from_bytes(text.as_bytes()) {
                headers.insert(name, value);
            }
        }
    }
}

/// The header value of a limit (`slot` 0: requests, 1: tokens). A user's
/// limits are the same number on every request, so the last value of each
/// is kept (per thread, no lock) and shared instead of formatted into a new
/// allocation each time.
fn limit_value(slot: usize, value: u64) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<[Option<(u64, HeaderValue)>; 2]> = const { RefCell::new([None, None]) };
    }
    LAST.with_borrow_mut(|last| match &last[slot] {
        Some((number, header)) if *number == value => header.clone(),
        _ => {
            let header = HeaderValue::from(value);
            last[slot] = Some((value, header.clone()));
            header
        }
    })
}

/// Formats a reset duration the way OpenAI does (Go's duration style):
/// `"250ms"` below a second, else `"1s"`, `"1.5s"`, `"6m0s"`, `"1h0m0s"`.
/// Rounded up to the millisecond, so a client that waits that long finds
/// the bucket full.
pub fn format_reset(duration: Duration) -> String {
    let mut text = Text::default();
    write_reset(duration, &mut text);
    String::from_utf8_lossy(text.as_bytes()).into_owned()
}

/// [`format_reset`] into `out`: these headers go with every limited
/// request, so they are written without `format!` and its allocations.
fn write_reset(duration: Duration, out: &mut Text) {
    let nanos = duration.as_nanos();
    let millis = nanos / 1_000_000 + u128::from(!nanos.is_multiple_of(1_000_000));
    if millis == 0 {
        out.push(b"0s");
        return;
    }
    if millis < 1000 {
        out.number(millis);
        out.push(b"ms");
        return;
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    if hours > 0 {
        out.number(hours);
        out.push(b"h");
    }
    if hours > 0 || minutes > 0 {
        out.number(minutes);
        out.push(b"m");
    }
    out.number(millis / 1000 % 60);
    let fraction = millis % 1000;
    if fraction != 0 {
        let digits = [fraction / 100, fraction / 10 % 10, fraction % 10].map(digit);
        let kept = digits.iter().rposition(|d| *d != b'0').map_or(0, |i| i + 1);
        out.push(b".");
        out.push(&digits[..kept]);
    }
    out.push(b"s");
}

fn digit(n: u128) -> u8 {
    // `n` is below 10, so this is an ASCII digit.
    b'0' + (n % 10) as u8
}

/// A header value's text on the stack. Long enough for any reset (the
/// longest Duration is 16 digits of hours and 12 more characters).
struct Text {
    bytes: [u8; 48],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl Text {
    /// Appends `more`, dropping what does not fit (nothing ever does not).
    fn push(&mut self, more: &[u8]) {
        let room = self.bytes.len() - self.len;
        let taken = more.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&more[..taken]);
        self.len += taken;
    }

    /// Appends `n` in decimal.
    fn number(&mut self, mut n: u128) {
        let mut digits = [0u8; 39];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = digit(n);
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
