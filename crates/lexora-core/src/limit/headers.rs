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
        // One growth of the engine's header map instead of one per header.
        headers.reserve(6);
        self.each(|name, value| {
            // Always ASCII digits and units, so the conversion cannot
            // fail; skipping keeps this free of a panic path all the same.
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(name, value);
            }
        });
    }

    /// Calls `write` with the name and value of each of the six headers
    /// that has a value, in a fixed order. The HTTP/1.1 server writes them
    /// this way straight into an answer's head (see
    /// [`Stamp`](crate::respond::Stamp)).
    pub fn each(&self, mut write: impl FnMut(HeaderName, &[u8])) {
        let numbers = [
            (LIMIT_REQUESTS, self.limit_requests),
            (REMAINING_REQUESTS, self.remaining_requests),
            (LIMIT_TOKENS, self.limit_tokens),
            (REMAINING_TOKENS, self.remaining_tokens),
        ];
        let mut number = itoa::Buffer::new();
        for (name, value) in numbers {
            let Some(value) = value else { continue };
            write(name, number.format(value).as_bytes());
        }
        let resets = [
            (RESET_REQUESTS, self.reset_requests),
            (RESET_TOKENS, self.reset_tokens),
        ];
        for (name, value) in resets {
            let Some(value) = value else { continue };
            let mut text = Text::default();
            write_reset(value, &mut text);
            write(name, text.as_bytes());
        }
    }

    /// Whether [`each`](Self::each) gives a header named `name`.
    pub fn writes(&self, name: &HeaderName) -> bool {
        [
            (LIMIT_REQUESTS, self.limit_requests.is_some()),
            (REMAINING_REQUESTS, self.remaining_requests.is_some()),
            (RESET_REQUESTS, self.reset_requests.is_some()),
            (LIMIT_TOKENS, self.limit_tokens.is_some()),
            (REMAINING_TOKENS, self.remaining_tokens.is_some()),
            (RESET_TOKENS, self.reset_tokens.is_some()),
        ]
        .iter()
        .any(|(known, set)| *set && known == name)
    }
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
/// request, so they are written without `format!` and its allocations,
/// and in 64-bit arithmetic (128-bit divisions are calls, not
/// instructions: they made these headers a tenth of an answer's cost).
fn write_reset(duration: Duration, out: &mut Text) {
    let mut millis = u64::from(duration.subsec_nanos().div_ceil(1_000_000));
    // Rounding up may carry a whole second; it is added to the seconds
    // left over from whole hours, which cannot overflow.
    let carry = millis / 1000;
    millis %= 1000;
    let secs = duration.as_secs();
    let mut hours = secs / 3600;
    let mut rest = secs % 3600 + carry;
    if rest == 3600 {
        hours += 1;
        rest = 0;
    }
    if hours == 0 && rest == 0 {
        if millis == 0 {
            out.push(b"0s");
        } else {
            out.number(millis);
            out.push(b"ms");
        }
        return;
    }
    let minutes = rest / 60;
    if hours > 0 {
        out.number(hours);
        out.push(b"h");
    }
    if hours > 0 || minutes > 0 {
        out.number(minutes);
        out.push(b"m");
    }
    out.number(rest % 60);
    if millis != 0 {
        let digits = [millis / 100, millis / 10 % 10, millis % 10].map(digit);
        let kept = digits.iter().rposition(|d| *d != b'0').map_or(0, |i| i + 1);
        out.push(b".");
        out.push(&digits[..kept]);
    }
    out.push(b"s");
}

fn digit(n: u64) -> u8 {
    // `n` is below 10, so this is an ASCII digit.
    b'0' + (n % 10) as u8
}

/// A header value's text on the stack. Long enough for any reset (the
/// longest is 16 digits of hours and 12 more characters).
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
    fn number(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
