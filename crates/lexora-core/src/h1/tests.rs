//! The wire format against hand-written answers, fed whole and one byte
//! at a time.

use http::Request;
use proptest::prelude::*;

use super::*;

/// Parses `wire` fed in pieces of `step` bytes: the head, then every body
/// piece until the end. Returns the head's response and the body.
fn read_all(wire: &[u8], step: usize) -> io::Result<(Response<()>, bool, Vec<u8>)> {
    let mut buffer = BytesMut::new();
    let mut rest = wire;
    let mut feed = |buffer: &mut BytesMut| -> bool {
        if rest.is_empty() {
            return false;
        }
        let take = step.min(rest.len());
        buffer.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        true
    };
    let head = loop {
        if let Some(head) = parse_head(&mut buffer, Keep::All)? {
            break head;
        }
        assert!(feed(&mut buffer), "the head never completed");
    };
    let mut framing = head.body;
    let mut body = Vec::new();
    loop {
        match framing.next(&mut buffer)? {
            Piece::Data(data) => {
                assert!(!data.is_empty(), "empty data pieces are never returned");
                body.extend_from_slice(&data);
            }
            Piece::End => break,
            Piece::More => {
                if !feed(&mut buffer) {
                    match framing.at_close()? {
                        Piece::End => break,
                        other => panic!("at close: {other:?}"),
                    }
                }
            }
        }
    }
    assert!(
        buffer.is_empty() && rest.is_empty(),
        "bytes left past the body"
    );
    Ok((head.response, head.keep_alive, body))
}

/// Every way of splitting `wire` reads the same.
fn read_every_way(wire: &[u8]) -> (Response<()>, bool, Vec<u8>) {
    let whole = read_all(wire, wire.len()).expect("whole");
    for step in 1..8 {
        let pieces = read_all(wire, step).expect("in pieces");
        assert_eq!(pieces.0.status(), whole.0.status());
        assert_eq!(pieces.0.headers(), whole.0.headers());
        assert_eq!((pieces.1, &pieces.2), (whole.1, &whole.2), "step {step}");
    }
    whole
}

#[test]
fn a_content_length_answer() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 11\r\nx-empty:\r\nx-ratelimit-remaining-requests: 7\r\n\r\n{\"ok\":true}";
    let (response, keep_alive, body) = read_every_way(wire);
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "7");
    assert_eq!(response.headers()["x-empty"], "");
    assert!(keep_alive);
    assert_eq!(body, b"{\"ok\":true}");
}

#[test]
fn a_chunked_stream_with_extensions_and_trailers() {
    let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        6\r\ndata: \r\nA;name=value\r\n0123456789\r\n1\n!\n\
        0\r\nx-trailer: yes\r\n\r\n";
    let (response, keep_alive, body) = read_every_way(wire);
    assert_eq!(response.status(), 200);
    assert!(keep_alive);
    assert_eq!(body, b"data: 0123456789!");
}

#[test]
fn chunk_data_comes_out_as_it_arrives() {
    let mut buffer =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nabc"[..]);
    let mut framing = parse_head(&mut buffer, Keep::All)
        .expect("ok")
        .expect("head")
        .body;
    assert_eq!(
        framing.next(&mut buffer).expect("ok"),
        Piece::Data(Bytes::from_static(b"abc"))
    );
    assert_eq!(framing.next(&mut buffer).expect("ok"), Piece::More);
    assert!(!framing.is_done());
    assert!(
        framing.at_close().is_err(),
        "a cut chunked body is an error"
    );
}

#[test]
fn a_body_that_runs_to_the_close() {
    let (response, keep_alive, body) = read_every_way(b"HTTP/1.0 200 OK\r\n\r\nall of it");
    assert_eq!(response.version(), Version::HTTP_10);
    assert!(!keep_alive, "the close ends the body");
    assert_eq!(body, b"all of it");
}

#[test]
fn keep_alive_follows_the_version_and_connection_header() {
    let cases: [(&[u8], bool); 5] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
    ];
    for (wire, expected) in cases {
        let mut buffer = BytesMut::from(wire);
        let head = parse_head(&mut buffer, Keep::All)
            .expect("ok")
            .expect("head");
        assert_eq!(
            head.keep_alive,
            expected,
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

/// What the pool keeps of an engine's answer, but for `retry-after`.
const KEEP_TYPE: Keep = Keep::Only(&[header::CONTENT_TYPE]);

#[test]
fn only_the_kept_headers_enter_the_map_and_framing_is_read_regardless() {
    let wire = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nx-engine: a\r\n\
        Connection: close\r\ncontent-type: text/plain\r\nContent-Length: 2\r\nDate: now\r\n\r\nokXX";
    let mut buffer = BytesMut::from(&wire[..]);
    let head = parse_head(&mut buffer, KEEP_TYPE)
        .expect("ok")
        .expect("head");
    let headers = head.response.headers();
    // Both values, whatever the case of the name, in their order.
    let types: Vec<_> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    assert_eq!(types, ["application/json", "text/plain"]);
    assert_eq!(headers.len(), 2, "{headers:?}");
    // Neither kept nor lost: the length and the close still frame the body.
    assert!(!head.keep_alive);
    assert!(matches!(head.body, Framing::Length(2)));
    assert_eq!(&buffer[..], b"okXX", "the head is removed, the body left");

    let mut buffer = BytesMut::from(&wire[..]);
    let all = parse_head(&mut buffer, Keep::All)
        .expect("ok")
        .expect("head");
    assert_eq!(all.response.headers().len(), 6);
    assert_eq!(all.response.headers()["x-engine"], "a");
}

#[test]
fn interim_answers_are_skipped_and_bodiless_statuses_have_no_body() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n";
    let (response, keep_alive, body) = read_every_way(wire);
    assert_eq!(response.status(), 204);
    assert!(keep_alive);
    assert!(body.is_empty());
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    assert_eq!(read_every_way(wire).2, b"ok");
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    let heads: [&[u8]; 6] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ];
    for wire in heads {
        for keep in [Keep::All, KEEP_TYPE] {
            let mut buffer = BytesMut::from(wire);
            assert!(
                parse_head(&mut buffer, keep).is_err(),
                "{keep:?}: {}",
                String::from_utf8_lossy(wire)
            );
        }
    }
    let bodies: [&[u8]; 4] = [
        b"zz\r\n",
        b"11111111111111111\r\n",
        b"2\r\nokX\r\n",
        b"; no size\r\n",
    ];
    for wire in bodies {
        let mut framing = Framing::Chunked(Chunked::default());
        let mut buffer = BytesMut::from(wire);
        let result = (0..4).try_for_each(|_| framing.next(&mut buffer).map(drop));
        assert!(result.is_err(), "{}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn endless_heads_and_size_lines_are_refused() {
    let mut head = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
    while head.len() <= MAX_HEAD {
        head.extend_from_slice(b"x-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert!(parse_head(&mut head, Keep::All).is_err());

    let mut framing = Framing::Chunked(Chunked::default());
    let mut line = BytesMut::from(&vec![b'1'; MAX_LINE + 1][..]);
    assert!(framing.next(&mut line).is_err());
}

/// The head of `request` with a body of `body_len` bytes.
fn encode_head(request: &http::request::Parts, body_len: usize, out: &mut Vec<u8>) {
    let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
    encode_request(&request.method, &[target], &request.headers, body_len, out);
}

#[test]
fn request_heads_carry_lexoras_own_framing() {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions?x=1")
        .header(header::HOST, "127.0.0.1:8000")
        .header(header::CONTENT_LENGTH, "999")
        .header("x-request-id", "abc")
        .body(())
        .expect("request");
    let (parts, ()) = request.into_parts();
    let mut out = Vec::new();
    encode_head(&parts, 42, &mut out);
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nx-request-id: abc\r\ncontent-length: 42\r\n\r\n"
    );

    let (parts, ()) = Request::get("/v1/models")
        .body(())
        .expect("request")
        .into_parts();
    let mut out = Vec::new();
    encode_head(&parts, 0, &mut out);
    assert_eq!(out, b"GET /v1/models HTTP/1.1\r\n\r\n");
}

proptest! {
    /// Any chunked encoding of any data, cut anywhere, decodes to that
    /// data, and the connection is left exactly at the body's end.
    #[test]
    fn chunked_bodies_decode_whatever_the_cuts(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..8),
        extension in any::<bool>(),
        upper in any::<bool>(),
        step in 1usize..50,
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for chunk in &chunks {
            let size = if upper { format!("{:X}", chunk.len()) } else { format!("{:x}", chunk.len()) };
            wire.extend_from_slice(size.as_bytes());
            if extension {
                wire.extend_from_slice(b";ext=\"v\"");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let (_, keep_alive, body) = read_all(&wire, step).expect("decodes");
        prop_assert!(keep_alive);
        prop_assert_eq!(body, chunks.concat());
    }
}

#[test]
fn only_visible_ascii_is_written_as_a_target() {
    assert!(is_target("/v1/chat/completions?api-version=2024-10-21"));
    assert!(is_target(""));
    for bad in ["/a b", "/a\r\nx: y", "/caf\u{e9}", "/\t", "/\u{7f}"] {
        assert!(!is_target(bad), "{bad:?}");
    }
}
