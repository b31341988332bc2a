//! Whatever bytes a client sends, in whatever pieces: the connection task
//! ends without a panic once the client has finished sending, and all it
//! wrote back are well-formed HTTP/1.1 answers, every refusal an
//! OpenAI-shaped error.
//!
//! The inputs are requests built from the pieces of real ones (methods,
//! targets, versions, framing headers, chunk lines, the HTTP/2 preface),
//! several to a connection, with a few bytes replaced at random, so the
//! cases reach deep into the parser, the body framing and keep-alive
//! rather than stopping at the request line.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;

/// Valid choices for each part of a request, and invalid ones (tried
/// one time in ten).
const METHODS: [&[&[u8]]; 2] = [
    &[b"GET", b"POST", b"POST", b"HEAD", b"OPTIONS"],
    &[b"get", b"P\x00ST", b""],
];
const TARGETS: [&[&[u8]]; 2] = [
    &[b"/", b"/v1/chat/completions", b"*", b"http://a/x?q=1"],
    &[b"/a b", b"", b"\x7f"],
];
const VERSIONS: [&[&[u8]]; 2] = [
    &[b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"],
    &[b"HTTP/2.0", b"HTTP/1.1 x", b"http/1.1", b"HTTP/1.12"],
];
const HOSTS: [&[&[u8]]; 2] = [
    &[b"host: a\r\n", b"Host: b:80\r\n"],
    &[b"", b"host: a\r\nhost: b\r\n"],
];
/// Other header lines.
const HEADERS: [&[&[u8]]; 2] = [
    &[
        b"content-length: 0\r\n",
        b"content-length: 5\r\n",
        b"Content-Length: 5\r\n",
        b"transfer-encoding: chunked\r\n",
        b"Transfer-Encoding: Chunked\r\n",
        b"expect: 100-continue\r\n",
        b"connection: close\r\n",
        b"connection: keep-alive\r\n",
        b"x-lexora-priority: high\r\n",
        b"x: a\n",
    ],
    &[
        b"Content-Length: 18446744073709551616\r\n",
        b"content-length: -1\r\n",
        b"content-length: 5, 5\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"transfer-encoding: identity\r\n",
        b"expect: 200-ok\r\n",
        b"connection: upgrade\r\nupgrade: h2c\r\n",
        b" folded\r\n",
        b"bad header\r\n",
        b":\r\n",
        b"x: \xff\x00\r\n",
    ],
];
/// Body pieces: data, chunk lines, the end of a chunked body, stray line
/// ends, and the start of an HTTP/2 connection.
const BODIES: [&[&[u8]]; 2] = [
    &[
        b"hello",
        b"{\"model\":\"m\"}",
        b"5\r\nhello\r\n",
        b"5;ext=1\r\nhello\r\n",
        b"0\r\n\r\n",
        b"0\r\nx-trailer: t\r\n\r\n",
    ],
    &[
        b"5\r\nhel",
        b"ffffffffffffffffff\r\n",
        b"0\n\n",
        b"\r\n",
        b"\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
];

/// A valid choice nine times in ten, else an invalid one.
fn one_of([valid, invalid]: [&'static [&'static [u8]]; 2]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => proptest::sample::select(valid),
        1 => proptest::sample::select(invalid),
    ]
    .prop_map(<[u8]>::to_vec)
}

/// One request, well-formed or nearly: its line, some headers, a blank
/// line and some body pieces.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        one_of(METHODS),
        one_of(TARGETS),
        one_of(VERSIONS),
        one_of(HOSTS),
        proptest::collection::vec(one_of(HEADERS), 0..4),
        proptest::option::weighted(0.95, Just(b"\r\n".to_vec())),
        proptest::collection::vec(one_of(BODIES), 0..3),
    )
        .prop_map(|(method, target, version, host, headers, blank, body)| {
            let line = [
                method,
                b" ".to_vec(),
                target,
                b" ".to_vec(),
                version,
                b"\r\n".to_vec(),
            ];
            let head = [
                line.concat(),
                host,
                headers.concat(),
                blank.unwrap_or_default(),
            ];
            [head.concat(), body.concat()].concat()
        })
}

/// One case: a few requests on one connection, a few bytes of them
/// replaced by random ones, or random bytes alone; and the sizes of the
/// writes it is sent in.
fn case() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let requests = (
        proptest::collection::vec(request(), 1..4),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..2),
    )
        .prop_map(|(requests, flips)| {
            let mut bytes = requests.concat();
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            bytes
        });
    let input = prop_oneof![
        9 => requests,
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ];
    (input, proptest::collection::vec(1usize..64, 1..8))
}

#[test]
fn any_bytes_in_any_pieces_end_in_answers_or_a_close_and_never_a_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 1_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |(input, writes)| {
            runtime.block_on(exchange(&input, &writes));
            Ok(())
        })
        .unwrap();
}

/// Sends `input` in writes of the sizes in `writes` (cycled), half-closes,
/// and checks what came back and how the connection task ended.
async fn exchange(input: &[u8], writes: &[usize]) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let limits = Limits {
            idle: Some(Duration::from_secs(5)),
            send: Some(Duration::from_secs(5)),
        };
        serve(tcp, echo(), CancellationToken::new(), limits).await;
    });
    let mut tcp = TcpStream::connect(address).await.unwrap();
    let (mut reading, mut writing) = tcp.split();
    let mut output = Vec::new();
    // Read while writing: a server that answers early and closes must not
    // leave the writes stuck on a full socket.
    let send = async {
        let mut rest = input;
        for &size in writes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.min(rest.len()));
            if writing.write_all(now).await.is_err() {
                return;
            }
            rest = later;
        }
        let _ = writing.shutdown().await;
    };
    let receive = async {
        // A reset after an early answer is an acceptable end.
        let _ = reading.read_to_end(&mut output).await;
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(send, receive);
        serving.await
    })
    .await;
    let shown = String::from_utf8_lossy(input);
    let ended = ended.unwrap_or_else(|_| panic!("the connection did not end: {shown:?}"));
    assert!(
        ended.is_ok(),
        "the connection task panicked on {shown:?}: {ended:?}"
    );
    // An HTTP/2 connection answers in frames; an answer to HEAD carries
    // its length but no body, so the answers cannot be told apart here.
    let head_request = input.windows(5).any(|w| w == b"HEAD ");
    if !input.starts_with(H2_PREFACE) && !head_request {
        check_answers(BytesMut::from(&output[..]), &shown);
    }
}

/// Every answer in `output` parses, with a body framed as its head says
/// (or running to the close); refusals are OpenAI-shaped errors.
fn check_answers(mut output: BytesMut, shown: &str) {
    while !output.is_empty() {
        let parsed = h1::parse_head(&mut output, h1::Keep::All)
            .unwrap_or_else(|e| panic!("a malformed answer ({e}) to {shown:?}"));
        let Some(head) = parsed else {
            // The parser takes interim answers (`100 Continue`) without a
            // head to return: one may be the last thing sent when the
            // client left before its body.
            assert!(
                output.is_empty(),
                "a cut answer head to {shown:?}: {output:?}"
            );
            break;
        };
        let mut framing = head.body;
        let mut body = BytesMut::new();
        loop {
            match framing.next(&mut output).unwrap() {
                Piece::Data(data) => body.extend_from_slice(&data),
                Piece::End => break,
                Piece::More => {
                    // Only a body that runs to the close may end here.
                    assert_eq!(
                        framing.at_close().ok(),
                        Some(Piece::End),
                        "a cut answer body to {shown:?}"
                    );
                    break;
                }
            }
        }
        let status = head.response.status();
        // The echo handler answers 200; anything else is the server's own.
        if status != StatusCode::OK {
            let error: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("a {status} that is not JSON ({e}) to {shown:?}"));
            assert!(
                error["error"]["message"].is_string(),
                "{status} {error} to {shown:?}"
            );
        }
    }
}
