//! The headers Lexora adds to every answer of a proxied request.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::identify;
use crate::limit::RateInfo;

/// How long the request waited for a backend slot, in milliseconds.
const QUEUE_WAIT: HeaderName = HeaderName::from_static("x-lexora-queue-wait-ms");

/// The gateway's own headers of one answer: its request id, the client's
/// rate limits and the time it waited in a queue.
///
/// They are kept apart from the answer's header map until the answer is
/// written, because the HTTP/1.1 server writes them straight into the
/// answer's head ([`encode`](Self::encode)): put into the map, each was
/// hashed, allocated and later dropped, about 3,300 instructions per
/// answer. Every other way out (HTTP/2, the router) takes them through
/// [`write_headers`](Self::write_headers).
#[derive(Debug, Clone)]
pub struct Stamp {
    pub request_id: HeaderValue,
    /// `None` for an unlimited user, or when the request never reached
    /// the limiter.
    pub rate: Option<RateInfo>,
    /// `None` when the request did not wait.
    pub queue_wait: Option<Duration>,
}

impl Stamp {
    /// A stamp with only the request id.
    pub fn new(request_id: HeaderValue) -> Self {
        Self {
            request_id,
            rate: None,
            queue_wait: None,
        }
    }

    /// Puts the headers into `headers`, replacing any of the same names.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(rate) = &self.rate {
            rate.write_headers(headers);
        }
        if let Some(wait) = self.queue_wait {
            headers.insert(QUEUE_WAIT, HeaderValue::from(millis(wait)));
        }
        headers.insert(identify::REQUEST_ID, self.request_id.clone());
    }

    /// Appends the headers to an HTTP/1.1 head, as `name: value` lines.
    /// Headers of the same names in the answer's map must be left out of
    /// the head ([`writes`](Self::writes)), as `write_headers` replaces them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(rate) = &self.rate {
            rate.each(|name, value| line(out, &name, value));
        }
        if let Some(wait) = self.queue_wait {
            line(
                out,
                &QUEUE_WAIT,
                itoa::Buffer::new().format(millis(wait)).as_bytes(),
            );
        }
        line(out, &identify::REQUEST_ID, self.request_id.as_bytes());
    }

    /// Whether [`encode`](Self::encode) writes a header named `name`.
    pub fn writes(&self, name: &HeaderName) -> bool {
        *name == identify::REQUEST_ID
            || (self.queue_wait.is_some() && *name == QUEUE_WAIT)
            || self.rate.as_ref().is_some_and(|rate| rate.writes(name))
    }
}

fn millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}

fn line(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
