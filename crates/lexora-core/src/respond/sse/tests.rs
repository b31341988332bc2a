use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use super::*;
use crate::parse::Endpoint;
use crate::record::Recorder;

const ROLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

/// A relay over `upstream` (after `first`) with a fresh recorder.
fn relay_over<S>(
    upstream: S,
    first: Bytes,
    strip_usage: bool,
    within: Duration,
) -> (SseRelay, Arc<Recorder>)
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let recorder = Arc::new(Recorder::default());
    let record = recorder.start(
        Endpoint::ChatCompletions,
        http::HeaderValue::from_static("t"),
    );
    let relay = SseRelay::new(
        Body::from_stream(upstream),
        first,
        record,
        strip_usage,
        Instant::now() + within,
    );
    (relay, recorder)
}

/// Everything the client receives from `relay`.
async fn body_of(relay: SseRelay) -> Bytes {
    relay
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

const MINUTE: Duration = Duration::from_secs(60);

/// Relays `parts` (as separate upstream frames) and returns the frames the
/// client saw and the recorder that counted the request.
async fn relay(parts: Vec<&'static str>, strip_usage: bool) -> (Vec<String>, Arc<Recorder>) {
    let frames = futures_util::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes()))),
    );
    let (mut relay, recorder) = relay_over(frames, Bytes::new(), strip_usage, MINUTE);
    let mut seen = Vec::new();
    while let Some(frame) = relay.frame().await {
        let Ok(frame) = frame;
        if let Ok(data) = frame.into_data() {
            seen.push(String::from_utf8(data.to_vec()).expect("utf8"));
        }
    }
    drop(relay);
    (seen, recorder)
}

#[tokio::test]
async fn events_pass_through_in_order_and_usage_is_counted() {
    let (seen, recorder) = relay(vec![ROLE, TOKEN, USAGE, DONE], false).await;
    assert_eq!(seen.concat(), [ROLE, TOKEN, USAGE, DONE].concat());
    assert_eq!(
        seen.len(),
        4,
        "each complete event is sent as soon as it arrives"
    );
    let stats = recorder.stats.view();
    assert_eq!(stats.total_prompt_tokens, 7);
    assert_eq!(stats.total_completion_tokens, 2);
    assert_eq!(stats.total_errors, 0);
}

#[tokio::test]
async fn usage_chunk_is_hidden_when_only_lexora_asked() {
    let (seen, recorder) = relay(vec![ROLE, TOKEN, USAGE, DONE], true).await;
    assert_eq!(seen.concat(), [ROLE, TOKEN, DONE].concat());
    assert_eq!(recorder.stats.view().total_tokens, 9);
}

#[tokio::test]
async fn events_split_across_frames_are_reassembled() {
    let (seen, _) = relay(
        vec![
            "data: {\"choices\":[{\"del",
            "ta\":{}}]}\n",
            "\ndata: [DO",
            "NE]\n\n",
        ],
        false,
    )
    .await;
    assert_eq!(
        seen,
        [
            "data: {\"choices\":[{\"delta\":{}}]}\n\n",
            "data: [DONE]\n\n"
        ]
    );
}

#[tokio::test]
async fn crlf_events_and_a_missing_final_blank_line_work() {
    let (seen, recorder) = relay(vec!["data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\n\r\n", "data: [DONE]"], true).await;
    assert_eq!(seen, ["data: [DONE]"]);
    assert_eq!(recorder.stats.view().total_tokens, 2);
}

/// An upstream that sends `event` and then fails (connection reset).
fn reset_after(
    event: &'static str,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::iter(vec![
        Ok(Bytes::from_static(event.as_bytes())),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )),
    ])
}

#[tokio::test]
async fn upstream_failure_becomes_an_error_event() {
    let (relay, recorder) = relay_over(reset_after(TOKEN), Bytes::new(), false, MINUTE);
    let text = text(&body_of(relay).await);
    assert!(text.starts_with(TOKEN), "{text}");
    assert!(text.contains("\"code\":\"upstream_reset\""), "{text}");
    assert!(text.ends_with("\n\n"));
    assert_eq!(recorder.stats.view().total_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_a_stalled_stream() {
    let stalled = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
    let (relay, _) = relay_over(stalled, Bytes::new(), false, Duration::from_secs(5));
    let text = text(&body_of(relay).await);
    assert!(text.contains("upstream_timeout"), "{text}");
}

#[test]
fn event_boundaries() {
    assert_eq!(last_event_end(b"data: a\n\ndata: b"), Some(9));
    assert_eq!(last_event_end(b"data: a\r\n\r\n"), Some(11));
    assert_eq!(last_event_end(b"data: a\n"), None);
    // Mixed line ends: an LF line, then an empty CRLF line, and the reverse.
    assert_eq!(last_event_end(b"data: a\n\r\n"), Some(10));
    assert_eq!(first_event_end(b"data: a\n\r\ndata: b\r\n\n"), Some(10));
    assert_eq!(last_event_end(b"data: a\n\r\ndata: b\r\n\n"), Some(20));
    assert_eq!(
        event_data(b"event: x\ndata: {\"a\":\ndata: 1}\n\n").as_deref(),
        Some(&b"{\"a\":\n1}"[..])
    );
}

#[tokio::test]
async fn the_first_chunk_read_ahead_is_sent_first() {
    let rest = futures_util::stream::iter(vec![Ok(Bytes::from_static(DONE.as_bytes()))]);
    let first = Bytes::from(format!("{ROLE}{TOKEN}"));
    let (relay, _) = relay_over(rest, first, false, MINUTE);
    let bytes = body_of(relay).await;
    assert_eq!(bytes, [ROLE, TOKEN, DONE].concat().as_bytes());
}

#[tokio::test]
async fn an_event_that_never_ends_is_cut_off() {
    let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
    let frames = futures_util::stream::iter((0..20).map(move |_| Ok(chunk.clone())));
    let (relay, _) = relay_over(frames, Bytes::new(), false, MINUTE);
    let text = text(&body_of(relay).await);
    assert!(text.contains("event_too_large"), "{text}");
    assert!(text.len() < 1024, "nothing of the oversized event was sent");
}

#[tokio::test]
async fn boundaries_split_across_frames_are_found() {
    let (seen, _) = relay(
        vec!["data: {\"a\":1}\n", "\n", "data: {\"b\":2}\r\n\r", "\n"],
        false,
    )
    .await;
    assert_eq!(seen, ["data: {\"a\":1}\n\n", "data: {\"b\":2}\r\n\r\n"]);
    // Mixed line ends, split too: relayed as events, not held to the end.
    let (seen, _) = relay(
        vec!["data: {\"c\":3}\n", "\r\n", "data: [DONE]\r\n\n"],
        false,
    )
    .await;
    assert_eq!(seen, ["data: {\"c\":3}\n\r\n", "data: [DONE]\r\n\n"]);
}

/// Two searches, one per blank-line form (the formulation
/// `first_event_end` had before it became one pass): both must find the
/// same boundary.
fn reference_first_event_end(buf: &[u8]) -> Option<usize> {
    let find = |needle: &[u8]| buf.windows(needle.len()).position(|w| w == needle);
    let lf = find(b"\n\n").map(|i| i + 2);
    let crlf = find(b"\n\r\n").map(|i| i + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

proptest::proptest! {
    #[test]
    fn first_event_end_matches_the_reference(
        bytes in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(b'a'),
                proptest::strategy::Just(b'\r'),
                proptest::strategy::Just(b'\n'),
            ],
            0..48,
        )
    ) {
        proptest::prop_assert_eq!(first_event_end(&bytes), reference_first_event_end(&bytes));
        proptest::prop_assert_eq!(
            ends_an_event(&bytes),
            last_event_end(&bytes) == Some(bytes.len()) && !bytes.is_empty()
        );
    }
}

#[tokio::test]
async fn whole_event_frames_and_split_frames_relay_the_same() {
    let (seen, whole) = relay(vec![ROLE, TOKEN, USAGE, DONE], true).await;
    let events = Bytes::from([ROLE, TOKEN, USAGE, DONE].concat());
    let pieces: Vec<Result<Bytes, std::io::Error>> = events
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (split_relay, split) = relay_over(
        futures_util::stream::iter(pieces),
        Bytes::new(),
        true,
        MINUTE,
    );
    let body = body_of(split_relay).await;
    assert_eq!(text(&body), seen.concat());
    assert_eq!(text(&body), [ROLE, TOKEN, DONE].concat());
    assert_eq!(
        whole.stats.view().total_tokens,
        split.stats.view().total_tokens
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_a_stream_that_keeps_sending() {
    // A token every second, forever: the deadline (checked between events
    // without polling the timer) must still end it.
    let trickle = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from_static(TOKEN.as_bytes())),
            (),
        ))
    });
    let started = Instant::now();
    let (relay, _) = relay_over(trickle, Bytes::new(), false, Duration::from_millis(5_500));
    let text = text(&body_of(relay).await);
    assert!(text.contains("upstream_timeout"), "{text}");
    assert_eq!(text.matches(TOKEN).count(), 5, "{text}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

const ANTHROPIC_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"tiny\",\"content\":[],\"usage\":{\"input_tokens\":4,\"output_tokens\":0}}}\n\n";
const ANTHROPIC_BLOCK: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const ANTHROPIC_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// Relays `parts` as an Anthropic passthrough stream (request id `lx-1`,
/// model `tiny`) and returns what the client received.
async fn anthropic_relay(parts: Vec<&'static str>) -> String {
    let frames = futures_util::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p.as_bytes()))),
    );
    let (relay, _) = relay_over(frames, Bytes::new(), false, MINUTE);
    text(&body_of(relay.anthropic_passthrough("lx-1", "tiny")).await)
}

#[tokio::test]
async fn an_anthropic_stream_without_message_start_gets_one() {
    let out = anthropic_relay(vec![": ping\n\n", ANTHROPIC_BLOCK, ANTHROPIC_STOP]).await;
    let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 4, "{out}");
    assert_eq!(
        events[0], ": ping",
        "comments before the first event stay first"
    );
    let start = events[1]
        .strip_prefix("event: message_start\ndata: ")
        .expect("a message_start event");
    let start: serde_json::Value = serde_json::from_str(start).expect("json");
    assert_eq!(start["message"]["id"], "msg_lx-1");
    assert_eq!(start["message"]["model"], "tiny");
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["content"], serde_json::json!([]));
    assert_eq!(
        out.matches("message_start").count(),
        2,
        "one event: name and type"
    );
    assert!(out.ends_with(&[ANTHROPIC_BLOCK, ANTHROPIC_STOP].concat()));
}

#[tokio::test]
async fn an_anthropic_stream_with_message_start_is_left_alone() {
    let parts = vec![ANTHROPIC_START, ANTHROPIC_BLOCK, ANTHROPIC_STOP];
    assert_eq!(anthropic_relay(parts.clone()).await, parts.concat());
    // Only the first event counts: a later message_start is not a reason.
    let late = anthropic_relay(vec![ANTHROPIC_BLOCK, ANTHROPIC_START]).await;
    assert_eq!(late.matches("event: message_start").count(), 2);
    assert!(late.starts_with(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_lx-1\""
    ));
}

#[tokio::test]
async fn an_anthropic_passthrough_failure_is_an_anthropic_error_event() {
    let (relay, _) = relay_over(reset_after(ANTHROPIC_START), Bytes::new(), false, MINUTE);
    let out = text(&body_of(relay.anthropic_passthrough("lx-1", "tiny")).await);
    let error = out
        .strip_prefix(ANTHROPIC_START)
        .and_then(|rest| rest.strip_prefix("event: error\ndata: "))
        .unwrap_or_else(|| panic!("an Anthropic error event after the start: {out}"));
    let error: serde_json::Value = serde_json::from_str(error.trim_end()).expect("json");
    assert_eq!(error["type"], "error", "{error}");
}
