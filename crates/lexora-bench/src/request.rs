//! One chat-completion request over a pooled keep-alive HTTP/1.1 client,
//! timed: when the answer ended and, for streams, when the first token
//! arrived, the gaps between server-sent events and, when the mock engine
//! stamps its events (`lexora mock --stamp-events`), each event's delay
//! from the engine's write to its arrival here and the first token's
//! transit: its time to first token less the engine's own.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The HTTP client shared by every request of a run.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Builds a keep-alive client with `TCP_NODELAY` and an unbounded idle pool,
/// so connections are reused rather than re-established under load.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(None)
        .build(connector)
}

/// Everything needed to send the same request many times cheaply.
#[derive(Clone)]
pub struct Template {
    /// Target URL, e.g. `http://127.0.0.1:8001/v1/chat/completions`.
    pub uri: Uri,
    /// The JSON body; cloning [`Bytes`] is a reference-count increment.
    pub body: Bytes,
    /// Extra headers (e.g. `Authorization`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the answer is an SSE stream to be timed event by event.
    pub stream: bool,
    /// Deadline for the whole request, body included.
    pub timeout: Duration,
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// The server answered with a non-2xx status.
    Status(u16),
    /// Connecting, sending or reading failed.
    Io,
    /// The request did not finish within [`Template::timeout`].
    Timeout,
}

impl Failure {
    /// A short stable name for reports (`status_429`, `io`, `timeout`).
    pub fn label(&self) -> String {
        match self {
            Failure::Status(code) => format!("status_{code}"),
            Failure::Io => "io".to_owned(),
            Failure::Timeout => "timeout".to_owned(),
        }
    }
}

/// Timings of one successful request.
#[derive(Debug, Default)]
pub struct Timings {
    /// When the last byte of the answer arrived.
    pub done: Option<Instant>,
    /// Streams: when the first event carrying non-empty content arrived.
    pub first_token: Option<Instant>,
    /// Streams: gaps between consecutive events from the first token on.
    pub gaps: Vec<Duration>,
    /// Streams: for each event the engine stamped, how long it took from
    /// the engine's write to its arrival here. Unlike a gap, this does not
    /// carry the engine's own pacing jitter, so what a proxy adds to each
    /// event shows on its own.
    pub delays: Vec<Duration>,
    /// Streams: for each pair of consecutive stamped events after the
    /// first token's frame, how much longer their gap was here than at the
    /// engine (0 when shorter, as for events that came coalesced). What a
    /// proxy adds to an inter-chunk gap, gap by gap, without the engine's
    /// pacing jitter that the spread of `gaps` carries.
    pub stretches: Vec<Duration>,
    /// Streams the engine stamped: the time to first token less the
    /// engine's part of it (from the request's arrival to the first token's
    /// write), i.e. the request's way to the engine plus the token's way
    /// back. Through a proxy, what the proxy adds to the time to first
    /// token is this less direct access's; the engine's own jitter and the
    /// load generator's lateness are not in it.
    pub first_token_transit: Option<Transit>,
}

/// A stream's first-token transit in its two legs, measured on the wall
/// clock that the load generator and the engine share: a proxy's work on
/// the request (reading it, its policies) shows in `there`, its work on
/// the answer's first event in `back`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transit {
    /// From the request's send to its arrival at the engine.
    pub there: Duration,
    /// From the engine's write of the first token to its arrival here.
    pub back: Duration,
}

impl Transit {
    /// Both legs: the time to first token less the engine's part of it.
    pub fn total(&self) -> Duration {
        self.there + self.back
    }
}

/// Sends one request built from `template` and reads the whole answer.
pub async fn send(client: &HttpClient, template: &Template) -> Result<Timings, Failure> {
    match tokio::time::timeout(template.timeout, exchange(client, template)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn exchange(client: &HttpClient, template: &Template) -> Result<Timings, Failure> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(template.uri.clone())
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in &template.headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(template.body.clone()))
        .map_err(|_| Failure::Io)?;
    let sent_unix_us = unix_micros();
    let response = client.request(request).await.map_err(|_| Failure::Io)?;
    let status = response.status();
    let mut body = response.into_body();
    let mut timings = Timings::default();
    let mut events = EventClock {
        sent_unix_us,
        ..EventClock::default()
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Io)?;
        if template.stream {
            if let Some(data) = frame.data_ref() {
                events.observe(data, Instant::now(), unix_micros(), &mut timings);
            }
        }
    }
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    timings.done = Some(Instant::now());
    Ok(timings)
}

/// Finds SSE event boundaries (`\n\n`) in body frames and times them.
/// An event's bytes are only inspected within the frame that ends it, which
/// holds for paced streams (one event per write) — good enough for timing.
#[derive(Default)]
struct EventClock {
    /// When the request was sent, on the wall clock.
    sent_unix_us: u64,
    last_event: Option<Instant>,
    /// The previous frame ended with `\n` (a boundary may straddle frames).
    pending_newline: bool,
    /// The last stamped event's delay, µs.
    last_delay: Option<u64>,
}

impl EventClock {
    /// `now` and `now_unix_us` are the same moment on the monotonic and
    /// on the wall clock (which the engine's stamps use).
    fn observe(&mut self, data: &Bytes, now: Instant, now_unix_us: u64, timings: &mut Timings) {
        let after_first_token = timings.first_token.is_some();
        for sent in stamps(data) {
            let delay = now_unix_us.saturating_sub(sent);
            timings.delays.push(Duration::from_micros(delay));
            // The gap here less the gap at the engine is the difference of
            // the two events' delays.
            if let Some(last) = self.last_delay.filter(|_| after_first_token) {
                timings
                    .stretches
                    .push(Duration::from_micros(delay.saturating_sub(last)));
            }
            self.last_delay = Some(delay);
        }
        let mut ended = 0usize;
        let mut previous_newline = self.pending_newline;
        for &byte in data.iter() {
            let newline = byte == b'\n';
            if newline && previous_newline {
                ended += 1;
                previous_newline = false;
            } else {
                previous_newline = newline;
            }
        }
        self.pending_newline = previous_newline;
        if ended == 0 {
            return;
        }
        if timings.first_token.is_none() {
            if let Some(event) = first_token_event(data) {
                timings.first_token = Some(now);
                self.last_event = Some(now);
                timings.first_token_transit = self.transit(event, now_unix_us);
            }
            return;
        }
        if let Some(last) = self.last_event {
            timings.gaps.push(now.saturating_duration_since(last));
            // Events that arrived coalesced in one frame had no gap.
            for _ in 1..ended {
                timings.gaps.push(Duration::ZERO);
            }
        }
        self.last_event = Some(now);
    }
}

impl EventClock {
    /// The first token's transit (see [`Timings::first_token_transit`])
    /// from its stamped `event`, which arrived at `now_unix_us`.
    fn transit(&self, event: &[u8], now_unix_us: u64) -> Option<Transit> {
        let received = numbers(event, b"\"mock_received_us\":").next()?;
        let written = numbers(event, b"\"mock_sent_us\":").next()?;
        Some(Transit {
            there: Duration::from_micros(received.saturating_sub(self.sent_unix_us)),
            back: Duration::from_micros(now_unix_us.saturating_sub(written)),
        })
    }
}

/// Now on the wall clock, in microseconds since the Unix epoch.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The engine's write times (`"mock_sent_us":N`) in a frame, in order.
fn stamps(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    numbers(data, b"\"mock_sent_us\":")
}

/// The numbers that follow `needle` in `data`, in order.
fn numbers<'a>(data: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
    let mut rest = data;
    std::iter::from_fn(move || {
        let at = rest.windows(needle.len()).position(|w| w == needle)?;
        rest = &rest[at + needle.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        rest = &rest[digits..];
        value
    })
}

/// The first event in a frame that carries generated text (events end with
/// a blank line; the role chunk, say, may come in the same frame).
fn first_token_event(data: &[u8]) -> Option<&[u8]> {
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |at| at + 2);
        let (event, after) = rest.split_at(end);
        if carries_token(event) {
            return Some(event);
        }
        rest = after;
    }
    None
}

/// Whether an OpenAI chunk carries generated text (`"content":"x…"`),
/// as opposed to the role chunk's empty content.
fn carries_token(data: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"content\":\"";
    data.windows(NEEDLE.len() + 1)
        .any(|w| w.starts_with(NEEDLE) && w[NEEDLE.len()] != b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_chunk_is_not_a_token() {
        assert!(!carries_token(
            br#"data: {"delta":{"role":"assistant","content":""}}"#
        ));
        assert!(carries_token(br#"data: {"delta":{"content":" tok"}}"#));
    }

    #[test]
    fn gaps_start_at_first_token_and_count_coalesced_events() {
        let t0 = Instant::now();
        let mut clock = EventClock::default();
        let mut timings = Timings::default();
        let role = Bytes::from_static(b"data: {\"content\":\"\"}\n\n");
        let token = Bytes::from_static(b"data: {\"content\":\"a\"}\n\n");
        let two = Bytes::from_static(b"data: {\"content\":\"b\"}\n\ndata: [DONE]\n");
        clock.observe(&role, t0, 0, &mut timings);
        assert!(timings.first_token.is_none());
        clock.observe(&token, t0 + Duration::from_millis(1), 0, &mut timings);
        assert_eq!(timings.first_token, Some(t0 + Duration::from_millis(1)));
        clock.observe(&two, t0 + Duration::from_millis(3), 0, &mut timings);
        // The second boundary straddles frames.
        clock.observe(
            &Bytes::from_static(b"\n"),
            t0 + Duration::from_millis(4),
            0,
            &mut timings,
        );
        assert_eq!(
            timings.gaps,
            vec![Duration::from_millis(2), Duration::from_millis(1)]
        );
    }

    #[test]
    fn stamped_events_time_their_delay_coalesced_or_not() {
        let t0 = Instant::now();
        let mut clock = EventClock::default();
        let mut timings = Timings::default();
        let one = Bytes::from_static(b"data: {\"content\":\"a\",\"mock_sent_us\":1000}\n\n");
        let two = Bytes::from_static(
            b"data: {\"mock_sent_us\":1500,\"content\":\"b\"}\n\ndata: {\"content\":\"c\",\"mock_sent_us\":1700}\n\n",
        );
        clock.observe(&one, t0, 1_040, &mut timings);
        clock.observe(&two, t0, 1_900, &mut timings);
        // Unstamped events (a proxy that drops the field) time nothing.
        clock.observe(
            &Bytes::from_static(b"data: [DONE]\n\n"),
            t0,
            2_000,
            &mut timings,
        );
        let micros = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_micros(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(timings.delays, micros(&[40, 400, 200]));
        // The first token's frame starts no pair; then 400 after 40 is a
        // gap 360 µs longer here, and 200 after 400 one that was shorter.
        assert_eq!(timings.stretches, micros(&[360, 0]));
    }

    #[test]
    fn first_token_transit_leaves_out_the_engines_time() {
        // Sent at 1,000; the engine got it at 1,030 and wrote the role chunk
        // at 1,500 and the first token at 1,600; both arrived at 1,650.
        let mut clock = EventClock {
            sent_unix_us: 1_000,
            ..EventClock::default()
        };
        let mut timings = Timings::default();
        let frame = Bytes::from_static(
            b"data: {\"content\":\"\",\"mock_received_us\":1030,\"mock_sent_us\":1500}\n\n\
              data: {\"content\":\"a\",\"mock_received_us\":1030,\"mock_sent_us\":1600}\n\n",
        );
        clock.observe(&frame, Instant::now(), 1_650, &mut timings);
        // 30 µs there, 50 µs back: the token's stamp, not the role chunk's.
        let transit = timings.first_token_transit.expect("stamped");
        assert_eq!(
            (transit.there, transit.back, transit.total()),
            (
                Duration::from_micros(30),
                Duration::from_micros(50),
                Duration::from_micros(80)
            )
        );
        assert!(timings.first_token.is_some());

        // Unstamped (a proxy that drops the fields): no transit.
        let mut timings = Timings::default();
        let plain = Bytes::from_static(b"data: {\"content\":\"a\"}\n\n");
        EventClock::default().observe(&plain, Instant::now(), 1_650, &mut timings);
        assert!(timings.first_token.is_some());
        assert_eq!(timings.first_token_transit, None);
    }
}
