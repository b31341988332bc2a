//! An engine that answers with anything: well-formed answers and streams,
//! wrong lengths, broken chunked framing, bad JSON, cut events, bytes
//! replaced at random, written in pieces. Whatever it sends, the client
//! (of the OpenAI API, or of Anthropic's, whose answers are translated)
//! gets a complete answer from the gateway, its errors in the client's
//! API's shape; nothing hangs, and the gateway neither panics nor stops
//! serving, and shows the provider's key in no answer and no log line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{check_answer, check_log, exchange, CASES, PROVIDER_KEY};
use crate::support::*;

const STATUS_LINES: [&[&str]; 2] = [
    &[
        "HTTP/1.1 200 OK\r\n",
        "HTTP/1.1 200 OK\r\n",
        "HTTP/1.1 200 OK\r\n",
        "HTTP/1.0 200 OK\r\n",
        "HTTP/1.1 429 Too Many Requests\r\n",
        "HTTP/1.1 500 Internal Server Error\r\n",
        "HTTP/1.1 503 Service Unavailable\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
    ],
    &[
        "HTTP/1.1 999 What\r\n",
        "HTTP/1.1 20 OK\r\n",
        "HTTP/1.1 204 No Content\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n",
        "HTTP/1.1 302 Found\r\nlocation: http://a/\r\n",
        "garbage\r\n",
        "",
    ],
];
const CONTENT_TYPES: [&[&str]; 2] = [
    &[
        "content-type: application/json\r\n",
        "content-type: text/event-stream\r\n",
    ],
    &[
        "",
        "content-type: text/plain\r\n",
        "content-type: text/event-stream; charset=utf-8\r\n",
        "content-type: \u{7f}\r\n",
    ],
];
const OTHER_HEADERS: [&[&str]; 2] = [
    &["", "retry-after: 1\r\n", "x-request-id: engine\r\n"],
    &[
        "retry-after: soon\r\n",
        "connection: close\r\n",
        "bad header\r\n",
        " folded\r\n",
        "content-length: 3\r\ncontent-length: 4\r\n",
    ],
];
/// Whole answers (JSON) and stream events.
const BODY_PIECES: [&[&str]; 2] = [
    &[
        r#"{"id":"x","object":"chat.completion","model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        r#"{"error":{"message":"boom","type":"server_error"}}"#,
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
        ": keep-alive\n\n",
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"x","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#,
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"x\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ],
    &[
        "{",
        "[]",
        "null",
        r#"{"usage":{"prompt_tokens":-1,"completion_tokens":1e400}}"#,
        r#"{"usage":"many"}"#,
        "\u{0}\u{fffd}",
        "event: error\ndata: {\"error\":{}}\n\n",
        "data: {\"usage\":{\"prompt_tokens\":18446744073709551616}}\n\n",
        "data: {not json\n\n",
        "data: x\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"cut",
        "\n\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":7,\"delta\":{}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-5}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n",
        r#"{"type":"message","content":[{"type":"thinking"},{"type":"tool_use","input":"x"}]}"#,
    ],
];

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length,
    WrongLength(i8),
    Chunked,
    BadChunked,
    ToClose,
}

/// A valid choice nine times in ten, else an invalid one.
fn one_of([valid, invalid]: [&'static [&'static str]; 2]) -> impl Strategy<Value = String> {
    prop_oneof![
        9 => proptest::sample::select(valid),
        1 => proptest::sample::select(invalid),
    ]
    .prop_map(str::to_owned)
}

/// One engine answer, as the bytes it writes and the sizes of its writes.
fn answer() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let framing = prop_oneof![
        3 => Just(Framing::Length),
        1 => any::<i8>().prop_map(Framing::WrongLength),
        3 => Just(Framing::Chunked),
        1 => Just(Framing::BadChunked),
        1 => Just(Framing::ToClose),
    ];
    (
        one_of(STATUS_LINES),
        one_of(CONTENT_TYPES),
        one_of(OTHER_HEADERS),
        proptest::collection::vec(one_of(BODY_PIECES), 0..5),
        framing,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..2),
        proptest::collection::vec(1usize..200, 1..6),
    )
        .prop_map(|(status, kind, other, pieces, framing, flips, writes)| {
            let body = pieces.concat();
            let mut head = format!("{status}{kind}{other}");
            let body = match framing {
                Framing::Length => {
                    head += &format!("content-length: {}\r\n", body.len());
                    body.into_bytes()
                }
                Framing::WrongLength(by) => {
                    let length = body.len().saturating_add_signed(by.into());
                    head += &format!("content-length: {length}\r\n");
                    body.into_bytes()
                }
                Framing::Chunked | Framing::BadChunked => {
                    head += "transfer-encoding: chunked\r\n";
                    let mut out = Vec::new();
                    for piece in &pieces {
                        let size = match framing {
                            Framing::BadChunked => piece.len() + 1,
                            _ => piece.len(),
                        };
                        if size > 0 {
                            out.extend_from_slice(format!("{size:x}\r\n{piece}\r\n").as_bytes());
                        }
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                    out
                }
                Framing::ToClose => body.into_bytes(),
            };
            let mut bytes = [head.into_bytes(), b"\r\n".to_vec(), body].concat();
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            (bytes, writes)
        })
}

type Answers = Arc<Mutex<VecDeque<(Vec<u8>, Vec<usize>)>>>;

/// An engine on a free port: each request to the chat endpoint is
/// answered with the next of `answers` (a plain 200 once they run out),
/// anything else (a health check) with `{}`; then the connection closes.
async fn engine(answers: Answers) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(answer_one(tcp, Arc::clone(&answers)));
        }
    });
    url
}

async fn answer_one(mut tcp: TcpStream, answers: Answers) {
    let Some(target) = read_request(&mut tcp).await else {
        return;
    };
    let (bytes, writes) = if target.starts_with("/v1/chat/completions") || target == "/v1/messages"
    {
        let next = answers.lock().expect("answers").pop_front();
        next.unwrap_or_else(|| (plain(), vec![usize::MAX]))
    } else {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            vec![usize::MAX],
        )
    };
    let mut rest = &bytes[..];
    for &size in writes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        if tcp.write_all(now).await.is_err() {
            return;
        }
        rest = later;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let _ = tcp.shutdown().await;
}

fn plain() -> Vec<u8> {
    let body = BODY_PIECES[0][0];
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one request head and its `content-length` body; its target.
async fn read_request(tcp: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = tcp.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buffer.len() - end;
    while body < length {
        let mut chunk = [0u8; 4096];
        let read = tcp.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body += read;
    }
    head.split(' ').nth(1).map(str::to_owned)
}

#[tokio::test]
async fn whatever_an_engine_answers_the_client_gets_a_complete_answer_and_the_gateway_lives_on() {
    let mut runner = TestRunner::new(Config::default());
    // The answer, whether the client streams, whether it speaks
    // Anthropic's Messages API, and the model, which picks the backend: an
    // OpenAI-compatible engine (the request path's own client), the
    // Anthropic provider (hyper's client; answers translated for OpenAI
    // clients) or llama-server (Messages passed through natively).
    let strategy = (
        answer(),
        any::<bool>(),
        any::<bool>(),
        proptest::sample::select(&["m1", "m2", "m3"][..]),
    );
    let cases: Vec<_> = (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).expect("case").current())
        .collect();
    let answers = Answers::default();
    let url = engine(Arc::clone(&answers)).await;
    let gw = gateway(&format!(
        "retry:\n  max_retries: 0\nrate_limit:\n  enabled: false\n\
         circuit_breaker:\n  failure_threshold: 1000000\n\
         backends:\n  engine:\n    url: {url}\n    timeout: 5\n    models: [{{name: m1}}]\n\
         \x20 claude:\n    type: anthropic\n    url: {url}\n    api_key: {PROVIDER_KEY}\n    timeout: 5\n    models: [{{name: m2}}]\n\
         \x20 local:\n    type: llamacpp\n    url: {url}\n    timeout: 5\n    models: [{{name: m3}}]\n"
    ));
    let chat = chat_url(&gw);
    let messages = format!("{}/v1/messages", gw.url);
    let client = client();
    for ((bytes, writes), stream, anthropic, model) in cases {
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        answers.lock().expect("answers").push_back((bytes, writes));
        let (url, request) = if anthropic {
            let request = json!({
                "model": model, "max_tokens": 16, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]
            });
            (&messages, request)
        } else {
            let request = json!({"model": model, "messages": [], "stream": stream});
            (&chat, request)
        };
        let shown = format!("{model} at {url} (stream: {stream}); the engine sent {shown:?}");
        let (status, body) = exchange(client.post(url).json(&request), &shown).await;
        // A status that is neither a success nor an error is not passed on.
        assert!(
            (200..300).contains(&status) || (400..600).contains(&status),
            "{status}: {shown}"
        );
        check_answer(status, &body, anthropic, &shown);
    }
    let health = client
        .get(format!("{}/health", gw.url))
        .send()
        .await
        .expect("the gateway still serves");
    assert_eq!(health.status(), 200);
    check_log(&gw);
}
