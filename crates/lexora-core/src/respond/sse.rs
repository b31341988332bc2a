//! Relaying an engine's SSE stream to the client as it arrives.
//!
//! Bytes are forwarded event by event the moment an event is complete;
//! nothing waits for more of the stream. On the way the relay reads the
//! usage chunk (for accounting), drops it when only Lexora asked for it,
//! enforces the request's deadline, and turns an upstream failure
//! mid-stream into an OpenAI-style error event instead of a silent cut.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{ready, Context, Poll, Waker};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use memchr::memmem;
use tokio::time::{Instant, Sleep};

use crate::error::error_json;
use crate::record::{RequestRecord, Usage};
use crate::upstream::fields::FieldRules;
use crate::upstream::Wire;

#[cfg(test)]
mod tests;

/// The largest single SSE event relayed. Real events are a few hundred
/// bytes; an upstream that never ends one must not grow memory forever.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The body of a relayed stream.
pub struct SseRelay {
    upstream: Body,
    pending: BytesMut,
    record: RequestRecord,
    strip_usage: bool,
    deadline: Pin<Box<Sleep>>,
    /// The waker `deadline`'s timer was last registered with.
    timer_waker: Option<Waker>,
    /// A last frame to send before ending (an error event or leftovers).
    last: Option<Bytes>,
    /// `pending` holds bytes read before the relay started (the first
    /// chunk) that have not been looked at yet.
    primed: bool,
    transform: Option<Box<dyn StreamTransform>>,
    /// The API the client speaks (shapes the error event).
    client_wire: Wire,
    /// How much of `pending` has been searched for an event boundary.
    scanned: usize,
    done: bool,
    /// The backend's `response_fields`, applied to each event's JSON
    /// before anything else looks at it.
    fields: Option<Arc<FieldRules>>,
    /// A made-up `message_start` event, sent first unless the stream opens
    /// with its own (see [`SseRelay::anthropic_passthrough`]).
    message_start: Option<Bytes>,
}

/// Rewrites a stream event by event (between the OpenAI and Anthropic
/// APIs); implemented by the stateful converters of [`crate::translate`].
pub trait StreamTransform: Send {
    /// One complete SSE event in, zero or more complete events out.
    fn event(&mut self, name: Option<&str>, data: &[u8]) -> Vec<u8>;
    /// Whatever must follow when the upstream ends.
    fn finish(&mut self) -> Vec<u8>;
    /// Usage seen so far: (prompt, completion).
    fn usage(&self) -> Option<(u64, u64)>;
}

impl StreamTransform for crate::translate::AnthropicToOpenAiStream {
    fn event(&mut self, name: Option<&str>, data: &[u8]) -> Vec<u8> {
        self.push(name, data)
    }
    fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn usage(&self) -> Option<(u64, u64)> {
        crate::translate::AnthropicToOpenAiStream::usage(self)
    }
}

impl StreamTransform for crate::translate::OpenAiToAnthropicStream {
    fn event(&mut self, _name: Option<&str>, data: &[u8]) -> Vec<u8> {
        self.push(data)
    }
    fn finish(&mut self) -> Vec<u8> {
        crate::translate::OpenAiToAnthropicStream::finish(self)
    }
    fn usage(&self) -> Option<(u64, u64)> {
        crate::translate::OpenAiToAnthropicStream::usage(self)
    }
}

impl SseRelay {
    /// Relays `upstream`, starting with `first` (bytes already read from
    /// it); `strip_usage` hides the usage-only chunk that Lexora requested
    /// on the client's behalf.
    pub fn new(
        upstream: Body,
        first: Bytes,
        record: RequestRecord,
        strip_usage: bool,
        deadline: Instant,
    ) -> Self {
        Self {
            upstream,
            primed: !first.is_empty(),
            pending: BytesMut::from(&first[..]),
            record,
            strip_usage,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timer_waker: None,
            last: None,
            done: false,
            transform: None,
            client_wire: Wire::OpenAi,
            scanned: 0,
            fields: None,
            message_start: None,
        }
    }

    /// A Messages stream relayed as the engine wrote it (client and engine
    /// both speak Anthropic's API). Errors become Anthropic `error` events,
    /// and a stream that does not open with `message_start` gets one made
    /// up from `id` and `model`: llama-server leaves it out when its first
    /// token is an incomplete UTF-8 sequence (first seen with a tiny model;
    /// CJK and emoji output can start that way), and Anthropic's SDKs cannot
    /// assemble a message without it.
    pub fn anthropic_passthrough(mut self, id: &str, model: &str) -> Self {
        self.client_wire = Wire::Anthropic;
        // Written out rather than through `json!`, whose objects sort their
        // keys: `type` comes first in Anthropic's own events.
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        self.message_start = Some(Bytes::from(format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":{},\
             \"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\
             \"stop_reason\":null,\"stop_sequence\":null,\
             \"usage\":{{\"input_tokens\":0,\"output_tokens\":0}}}}}}\n\n",
            quoted(&format!("msg_{id}")),
            quoted(model),
        )));
        self
    }

    /// `events` preceded by the made-up `message_start` if the stream's
    /// first event is something else. Decided once, at the first event.
    fn open_message(&mut self, events: Bytes) -> Bytes {
        let Some(start) = self.message_start.take() else {
            return events;
        };
        // Comments and keep-alives before the first event decide nothing.
        let Some(first) = split_events(&events).find(|e| event_data(e).is_some()) else {
            self.message_start = Some(start);
            return events;
        };
        let opens = event_name(first) == Some("message_start")
            || memmem::find(first, b"\"message_start\"").is_some();
        if opens {
            return events;
        }
        let mut out = BytesMut::with_capacity(start.len() + events.len());
        out.extend_from_slice(&start);
        out.extend_from_slice(&events);
        out.freeze()
    }

    /// Rewrites every event's JSON with the backend's `response_fields`.
    pub fn with_fields(mut self, rules: Arc<FieldRules>) -> Self {
        self.fields = Some(rules).filter(|r| !r.is_empty());
        self
    }

    /// `events` with `response_fields` applied to each JSON payload; other
    /// events (`[DONE]`, comments) pass unchanged.
    fn rewrite_fields(&self, events: Bytes) -> Bytes {
        let Some(rules) = &self.fields else {
            return events;
        };
        let mut out = BytesMut::with_capacity(events.len() + 64);
        for event in split_events(&events) {
            let rewritten = event_data(event)
                .filter(|data| data.first() == Some(&b'{'))
                .and_then(|data| rules.apply(&data).ok());
            let Some(data) = rewritten else {
                out.extend_from_slice(event);
                continue;
            };
            if let Some(name) = event_name(event) {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\n\n");
        }
        out.freeze()
    }

    /// Converts every event with `transform` for a client speaking `client_wire`.
    pub fn translated(mut self, transform: Box<dyn StreamTransform>, client_wire: Wire) -> Self {
        self.transform = Some(transform);
        self.client_wire = client_wire;
        self
    }

    /// Runs complete events through the transform, counting its usage.
    fn transform_events(&mut self, events: &[u8]) -> Bytes {
        let Some(transform) = self.transform.as_mut() else {
            return Bytes::copy_from_slice(events);
        };
        let mut out = Vec::new();
        for event in split_events(events) {
            if let Some(data) = event_data(event) {
                out.extend(transform.event(event_name(event), &data));
            }
        }
        if let Some((prompt_tokens, completion_tokens)) = transform.usage() {
            self.record.set_usage(Usage {
                prompt_tokens,
                completion_tokens,
            });
        }
        Bytes::from(out)
    }

    /// Takes every complete event out of `pending`, reading usage chunks on
    /// the way; `None` when no event is complete yet.
    fn complete_events(&mut self) -> Option<Bytes> {
        // Only bytes not looked at before (and the 3 before them, which may
        // start a boundary) are scanned: a huge event arriving in many frames
        // costs linear, not quadratic, time.
        let from = self.scanned.min(self.pending.len()).saturating_sub(3);
        let found = last_event_end(&self.pending[from..]).map(|end| from + end);
        self.scanned = self.pending.len();
        let end = found?;
        self.scanned = self.pending.len() - end;
        let events = self.pending.split_to(end).freeze();
        self.process(events)
    }

    /// Complete `events` as the client gets them: fields rewritten,
    /// translated, usage read (and dropped when only Lexora wanted it);
    /// `None` when nothing is left to send.
    fn process(&mut self, events: Bytes) -> Option<Bytes> {
        let events = self.open_message(self.rewrite_fields(events));
        if self.transform.is_some() {
            return Some(self.transform_events(&events)).filter(|out| !out.is_empty());
        }
        if !mentions_usage(&events) {
            return Some(events);
        }
        Some(self.inspect_usage(events)).filter(|kept| !kept.is_empty())
    }

    fn inspect_usage(&mut self, events: Bytes) -> Bytes {
        let mut kept = BytesMut::with_capacity(events.len());
        let mut dropped = false;
        for event in split_events(&events) {
            let mut keep = true;
            if mentions_usage(event) {
                if let Some(data) = event_data(event) {
                    let read = super::usage::of_event(&data);
                    if let Some(usage) = read.nested {
                        self.record.set_usage(usage);
                    }
                    if let Some(usage) = read.usage {
                        self.record.set_usage(usage);
                        keep = !(self.strip_usage && read.no_choices);
                    }
                }
            }
            if keep {
                kept.extend_from_slice(event);
            } else {
                dropped = true;
            }
        }
        if dropped {
            kept.freeze()
        } else {
            events
        }
    }

    fn fail(&mut self, message: &str, kind: &'static str, code: &'static str) -> Bytes {
        self.record.end_stream(Some(kind));
        let body = error_json(message, kind_type(kind), None, Some(code));
        let mut event = BytesMut::with_capacity(body.len() + 32);
        // Whatever partial event was pending is dropped: half an event would
        // corrupt the error event that follows it.
        let body = match self.client_wire {
            Wire::OpenAi => body,
            Wire::Anthropic => {
                event.extend_from_slice(b"event: error\n");
                Bytes::from(crate::translate::openai_error_to_anthropic(502, &body))
            }
        };
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        event.freeze()
    }

    /// Whether the deadline's timer fired. Polling the timer registers a
    /// waker each time, and the relay is polled three times per event
    /// (hyper wakes it once more than it has data): a look at the timer's
    /// state is enough while the waker it holds is still this task's. The
    /// first call polls it, so that it is registered even for an upstream
    /// that is never pending.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer_waker.is_none() {
            return self.poll_deadline(cx);
        }
        self.deadline.is_elapsed()
    }

    /// [`Self::deadline_passed`] before the relay waits: the timer must be
    /// able to wake the task that waits.
    fn wait_for_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        match &self.timer_waker {
            Some(waker) if waker.will_wake(cx.waker()) => self.deadline.is_elapsed(),
            _ => self.poll_deadline(cx),
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let fired = self.deadline.as_mut().poll(cx).is_ready();
        self.timer_waker = Some(cx.waker().clone());
        fired
    }

    fn time_out(&mut self) {
        let event = self.fail(
            "the stream exceeded the request timeout",
            "upstream_timeout",
            "upstream_timeout",
        );
        self.last = Some(event);
    }

    fn emit(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.record.first_byte();
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

fn kind_type(kind: &str) -> &'static str {
    if kind == "upstream_timeout" {
        "timeout_error"
    } else {
        "upstream_error"
    }
}

impl HttpBody for SseRelay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(last) = this.last.take() {
                this.done = true;
                return this.emit(last);
            }
            if this.done {
                return Poll::Ready(None);
            }
            if std::mem::take(&mut this.primed) {
                if let Some(events) = this.complete_events() {
                    return this.emit(events);
                }
            }
            if this.deadline_passed(cx) {
                this.time_out();
                continue;
            }
            let polled = Pin::new(&mut this.upstream).poll_frame(cx);
            if polled.is_pending() {
                if this.wait_for_deadline(cx) {
                    this.time_out();
                    continue;
                }
                return Poll::Pending;
            }
            match ready!(polled) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if this.pending.len() + data.len() > MAX_EVENT_BYTES {
                        tracing::warn!(
                            limit = MAX_EVENT_BYTES,
                            "upstream SSE event too large; ending the stream"
                        );
                        let event = this.fail(
                            "the backend sent an event larger than the gateway accepts",
                            "upstream_error",
                            "event_too_large",
                        );
                        this.last = Some(event);
                        continue;
                    }
                    if this.pending.is_empty() && ends_an_event(&data) {
                        // Whole events, as engines write them: passed on
                        // as they came, not copied through `pending`.
                        if let Some(events) = this.process(data) {
                            return this.emit(events);
                        }
                        continue;
                    }
                    this.pending.extend_from_slice(&data);
                    if let Some(events) = this.complete_events() {
                        return this.emit(events);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::upstream::root_cause(&e), "upstream stream failed");
                    let event = this.fail(
                        "the backend connection failed in the middle of the stream",
                        "upstream_error",
                        "upstream_reset",
                    );
                    this.last = Some(event);
                }
                None => {
                    this.record.end_stream(None);
                    this.done = true;
                    // A final event without its blank line is still sent.
                    let rest = this.pending.split().freeze();
                    let mut rest = this.rewrite_fields(rest);
                    if this.transform.is_some() {
                        let mut out = this.transform_events(&rest).to_vec();
                        if let Some(transform) = this.transform.as_mut() {
                            out.extend(transform.finish());
                        }
                        rest = Bytes::from(out);
                    } else if !rest.is_empty() {
                        rest = this.inspect_usage(rest);
                    }
                    if !rest.is_empty() {
                        return this.emit(rest);
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.last.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

// An event ends with a blank line: a line end (LF or CRLF) followed by an
// empty line, so `\n\n` or `\n\r\n` (which covers `\r\n\r\n` and the
// mixed endings; `\r\n\n` ends in `\n\n`). Lone CRs as line ends, which
// no engine writes, are not recognised.

/// Position just past the last complete event.
fn last_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = buf.len();
    while i >= 2 {
        if buf[i - 1] == b'\n' {
            if buf[i - 2] == b'\n' {
                return Some(i);
            }
            if i >= 3 && &buf[i - 3..i] == b"\n\r\n" {
                return Some(i);
            }
        }
        i -= 1;
    }
    None
}

/// Whether `buf` ends with the blank line that ends an event.
fn ends_an_event(buf: &[u8]) -> bool {
    buf.ends_with(b"\n\n") || buf.ends_with(b"\n\r\n")
}

/// Splits complete events, each with its terminating blank line.
fn split_events(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = first_event_end(rest).unwrap_or(rest.len());
        let (event, tail) = rest.split_at(end);
        rest = tail;
        Some(event)
    })
}

/// Position just past the first complete event.
///
/// One pass over the line ends: searching for each terminator through the
/// whole rest made splitting a burst of events quadratic.
fn first_event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'\n', &buf[from..]) {
        let nl = from + at;
        let next = buf.get(nl + 1);
        if next == Some(&b'\n') {
            return Some(nl + 2);
        }
        if next == Some(&b'\r') && buf.get(nl + 2) == Some(&b'\n') {
            return Some(nl + 3);
        }
        from = nl + 1;
    }
    None
}

/// The `event:` name of one event, if any.
fn event_name(event: &[u8]) -> Option<&str> {
    event.split(|b| *b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name = line.strip_prefix(b"event:")?;
        std::str::from_utf8(name).ok().map(str::trim)
    })
}

/// The `data:` payload of one event (several data lines joined by `\n`).
/// Borrowed from `event` when it has one data line, as engines write them.
fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            match &mut data {
                Some(existing) => {
                    let existing = existing.to_mut();
                    existing.push(b'\n');
                    existing.extend_from_slice(value);
                }
                None => data = Some(Cow::Borrowed(value)),
            }
        }
    }
    data
}

/// Whether `bytes` contain `"usage"`, the key of a usage report. Asked of
/// every relayed event, so the searcher is built once, not per call.
pub(super) fn mentions_usage(bytes: &[u8]) -> bool {
    static USAGE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    USAGE.find(bytes).is_some()
}
