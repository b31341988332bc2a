//! Identify: who is asking, and under which request id.
//!
//! A user is the owner of the request's API key ([`auth`]), else the
//! `x_user_id` extension (or `x-lexora-user` header), else OpenAI's `user`
//! field, else `anonymous`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::ApiKey;
use crate::parse::ParsedRequest;

pub mod auth;

/// The header that carries the request id both ways. A `HeaderName`, not
/// text: text is parsed and copied into a new name at every use.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The user name of requests that name none.
pub const ANONYMOUS: &str = "anonymous";

const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's `x-request-id` when it is sane, else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_LEN
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// A process-unique id: a random prefix chosen at start and a counter, so
/// generating one costs an atomic increment, not a random draw.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `lx-{prefix:08x}-{n:010x}`, written by hand: `format!` costs more
    // than the rest of the id put together, on every request.
    if n >> 40 != 0 {
        // Past 16^10 requests the counter needs more digits.
        let text = format!("lx-{prefix:08x}-{n:010x}");
        return HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("lx-unknown"));
    }
    let mut text = *b"lx-00000000-0000000000";
    hex(u64::from(prefix), &mut text[3..11]);
    hex(n, &mut text[12..]);
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("lx-unknown"))
}

/// Writes the low digits of `n` in lower-case hex, filling `out`.
fn hex(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for place in out.iter_mut().rev() {
        *place = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The user a request is accounted to.
pub fn user<'a>(request: &'a ParsedRequest, key: Option<&'a ApiKey>) -> &'a str {
    key.map(|k| k.user.as_str())
        .or(request.extensions.user_id.as_deref())
        .or(request.user.as_deref().filter(|u| !u.is_empty()))
        .unwrap_or(ANONYMOUS)
}

#[cfg(test)]
mod tests;
