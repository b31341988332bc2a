//! Fuzzing the real binary from both sides.
//!
//! An engine that answers with anything: well-formed answers and streams,
//! wrong lengths, broken chunked framing, bad JSON, cut events, bytes
//! replaced at random, written in pieces. Whatever it sends, the client
//! (of the OpenAI API, or of Anthropic's, whose answers are translated)
//! gets a complete answer from the gateway, its errors in the client's
//! API's shape; nothing hangs, and the gateway neither panics nor stops
//! serving, and shows the provider's key in no answer and no log line.
//! And a client that asks anything (JSON of every shape under
//! the keys Lexora reads, on every endpoint) gets an answer or a 4xx in
//! its API's shape, never a 5xx of the gateway's own making. Clients that
//! leave at any moment (queued, waiting for the head, mid-stream) leave
//! no slot, queue place, in-flight count or engine stream behind.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Cases per test, each a request through the gateway.
const CASES: usize = 300;
/// The Anthropic provider's key: no answer and no log line may show it.
const PROVIDER_KEY: &str = "sk-ant-fuzz-provider-key";

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

fn contains(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
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
        let exchange = async {
            let response = client.post(url).json(&request).send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(15), exchange)
            .await
            .unwrap_or_else(|_| panic!("no answer in time: {shown}"))
            .unwrap_or_else(|e| panic!("a broken answer ({e}): {shown}"));
        // A status that is neither a success nor an error is not passed on.
        assert!(
            (200..300).contains(&status) || (400..600).contains(&status),
            "{status}: {shown}"
        );
        assert!(
            !contains(&body, PROVIDER_KEY),
            "the key in an answer: {shown}"
        );
        if status >= 400 {
            let error: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("a {status} that is not JSON ({e}): {body:?}: {shown}"));
            assert!(
                error["error"]["message"].is_string(),
                "{status} {error}: {shown}"
            );
            if anthropic {
                assert_eq!(error["type"], "error", "{error}: {shown}");
            }
        }
    }
    let health = client
        .get(format!("{}/health", gw.url))
        .send()
        .await
        .expect("the gateway still serves");
    assert_eq!(health.status(), 200);
    let log = gw.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(PROVIDER_KEY), "the key in the log: {log}");
}

/// Keys of the requests Lexora reads, its extensions and some others.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "prompt",
    "input",
    "system",
    "role",
    "content",
    "type",
    "text",
    "tools",
    "x_priority",
    "x_user_id",
    "x_timeout",
    "user",
    "temperature",
    "n",
    "stop",
    "tool_calls",
    "tool_call_id",
    "function",
    "name",
    "arguments",
    "parameters",
    "tool_choice",
    "image_url",
    "url",
    "response_format",
    "logprobs",
    "reasoning_effort",
    "tool_use_id",
    "input",
    "input_schema",
    "source",
    "media_type",
    "data",
    "thinking",
    "budget_tokens",
    "stop_sequences",
    "top_k",
    "metadata",
    "cache_control",
    "id",
];

/// JSON values built from those keys, the model's name, the priorities
/// and numbers at the edges.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Value::from),
        prop_oneof![Just(1e300), Just(-0.5), Just(0.25)].prop_map(Value::from),
        prop_oneof![
            Just("m1"),
            Just("m2"),
            Just("high"),
            Just("low"),
            Just("user"),
            Just("assistant"),
            Just("text"),
            Just("c"),
            Just("system"),
            Just("developer"),
            Just("tool"),
            Just("function"),
            Just("tool_use"),
            Just("tool_result"),
            Just("image"),
            Just("image_url"),
            Just("base64"),
            Just("thinking"),
            Just("auto"),
            Just("any"),
            Just("none"),
            Just("json_object"),
            Just("data:image/png;base64,AAAA"),
            Just("{\"a\":1}"),
            Just(""),
            Just("\u{0}\u{fffd}\u{1F600}"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |members| Value::Object(
                    members
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value))
                        .collect()
                )
            ),
        ]
    })
}

/// A request body: mostly an object that names a model (served by an
/// OpenAI engine or, for `c`, by the Anthropic provider) and has messages,
/// its members otherwise anything.
fn request_body() -> impl Strategy<Value = Value> {
    let members = proptest::collection::vec((proptest::sample::select(KEYS), json_value()), 0..6);
    prop_oneof![
        8 => (
            members,
            proptest::sample::select(&["m1", "c", ""][..]),
            proptest::bool::weighted(0.8),
        )
            .prop_map(|(members, model, with_messages)| {
                let mut object = serde_json::Map::new();
                if !model.is_empty() {
                    object.insert("model".into(), json!(model));
                }
                if with_messages {
                    // What both APIs need: messages, and (for Anthropic's)
                    // a limit on the answer.
                    object.insert(
                        "messages".into(),
                        json!([{"role": "user", "content": "hi"}]),
                    );
                    object.insert("max_tokens".into(), json!(16));
                    object.insert("prompt".into(), json!("hi"));
                    object.insert("input".into(), json!("hi"));
                }
                for (key, value) in members {
                    object.insert(key.to_owned(), value);
                }
                Value::Object(object)
            }),
        1 => json_value(),
    ]
}

#[tokio::test]
async fn whatever_a_client_asks_it_gets_an_answer_or_an_error_in_its_apis_shape() {
    let engine = mock(&["--chunks", "3"]);
    // Model `c` is served by the mock's Anthropic API as a provider would
    // be, so OpenAI requests to it are translated on the way.
    let gw = gateway_for(
        &engine,
        &format!(
            "  claude:\n    type: anthropic\n    url: {}\n    api_key: {PROVIDER_KEY}\n    models: [{{name: c, upstream: m1}}]\n",
            engine.url
        ),
    );
    let paths: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ];
    let mut runner = TestRunner::new(Config::default());
    let strategy = (request_body(), proptest::sample::select(paths));
    let client = client();
    for _ in 0..CASES {
        let (body, path) = strategy.new_tree(&mut runner).expect("case").current();
        let exchange = async {
            let response = client
                .post(format!("{}{path}", gw.url))
                .json(&body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let answer = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, answer))
        };
        let (status, answer) = tokio::time::timeout(Duration::from_secs(15), exchange)
            .await
            .unwrap_or_else(|_| panic!("no answer in time to {path} {body}"))
            .unwrap_or_else(|e| panic!("a broken answer ({e}) to {path} {body}"));
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains(PROVIDER_KEY), "the key in an answer: {text}");
        // The client's mistakes are its own: a 4xx, never a 5xx.
        assert!(status < 500, "{status} {text} to {path} {body}");
        if status >= 400 {
            let error: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
                panic!("a {status} that is not JSON ({e}): {text} to {path} {body}")
            });
            assert!(
                error["error"]["message"].is_string(),
                "{status} {error} to {path} {body}"
            );
            if path.starts_with("/v1/messages") {
                assert_eq!(error["type"], "error", "{error} to {path} {body}");
            }
        }
    }
    let log = gw.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(PROVIDER_KEY), "the key in the log: {log}");
}

/// How a storm client leaves its request.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Reads the whole answer.
    Finish,
    /// Gives up before the answer's head, or after this many µs.
    After(u64),
    /// Streams, and leaves once the first piece of the stream came.
    MidStream,
}

#[tokio::test]
async fn clients_that_leave_at_any_moment_leak_no_slot_stream_or_count() {
    // 2 slots and a queue: many requests wait, and clients leave while
    // queued, while the engine is starting and in the middle of streams.
    // Streams of 200 ms, clients leaving within 300 ms.
    let engine = mock(&["--chunks", "20", "--tokens-per-second", "100"]);
    let gw = gateway_for(&engine, "    max_concurrency: 2\n");
    let mut runner = TestRunner::new(Config::default());
    let strategy = (
        any::<bool>(),
        prop_oneof![
            2 => Just(Leave::Finish),
            5 => (0u64..300_000).prop_map(Leave::After),
            1 => Just(Leave::MidStream),
        ],
    );
    let url = chat_url(&gw);
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..80 {
        let (stream, leave) = strategy.new_tree(&mut runner).expect("case").current();
        let stream = stream || matches!(leave, Leave::MidStream);
        let url = url.clone();
        storm.spawn(async move {
            let request = client()
                .post(&url)
                .json(&json!({"model": "m1", "messages": [], "stream": stream}));
            match leave {
                Leave::Finish => {
                    let response = request.send().await.expect("sent");
                    assert_eq!(response.status(), 200);
                    response.bytes().await.expect("a whole answer");
                }
                Leave::After(micros) => {
                    let exchange = async {
                        if let Ok(response) = request.send().await {
                            let _ = response.bytes().await;
                        }
                    };
                    // Dropping the exchange closes its connection.
                    let _ = tokio::time::timeout(Duration::from_micros(micros), exchange).await;
                }
                Leave::MidStream => {
                    let response = request.send().await.expect("sent");
                    assert_eq!(response.status(), 200);
                    let mut body = response.bytes_stream();
                    body.next().await.expect("a first piece").expect("read");
                }
            }
        });
    }
    while let Some(done) = storm.join_next().await {
        done.expect("a storm client panicked");
    }
    // Everything the storm held is given back: the gateway's slots and
    // queue, its in-flight count, and the engine's streams.
    let settled = eventually(Duration::from_secs(10), || async {
        let stats = get_json(&format!("{}/stats", gw.url)).await;
        let engine_stats = get_json(&format!("{}/mock/stats", engine.url)).await;
        let backend = &stats["backends"]["engine"];
        let waiting: u64 = ["high", "normal", "low"]
            .iter()
            .filter_map(|p| backend["waiting"][p].as_u64())
            .sum();
        backend["in_flight"] == 0
            && waiting == 0
            && engine_stats["active_streams"] == 0
            && engine_stats["active_answers"] == 0
    })
    .await;
    let stats = get_json(&format!("{}/stats", gw.url)).await;
    let engine_stats = get_json(&format!("{}/mock/stats", engine.url)).await;
    assert!(settled, "{stats}\n{engine_stats}");
    // The storm did leave streams in the middle, and finished others.
    let count = |key: &str| engine_stats[key].as_u64().unwrap_or(0);
    assert!(
        count("cancelled_streams") > 0 && count("completed_streams") > 0,
        "{engine_stats}"
    );
    let metrics = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("lexora_requests_in_flight 0"), "{metrics}");
    // And both slots serve again at once.
    let (a, b) = tokio::join!(
        post(&url, json!({"model": "m1", "messages": [], "stream": true})),
        post(&url, json!({"model": "m1", "messages": []})),
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let log = gw.stderr();
    assert!(!log.contains("panicked"), "{log}");
}
