//! Request heads in, answer heads out: parsing and framing rules of the
//! server connection (RFC 9112), and the OpenAI-shaped refusals of heads
//! it cannot serve.

use std::cell::RefCell;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::error::error_json;
use crate::h1::{self, Framing};
use crate::respond::Stamp;

/// The longest request head accepted (as the pool's for answers).
pub(super) const MAX_HEAD: usize = h1::MAX_HEAD;
/// Headers per request head, as in hyper.
const MAX_HEADERS: usize = 100;

/// What a head asked for that is not a request to answer.
pub(super) enum Refusal {
    /// The HTTP/2 preface: the connection is hyper's.
    Http2,
    /// Answer this status and close.
    Bad(StatusCode, String),
}

/// A parsed request head.
pub(super) struct Head {
    pub(super) request: Request<()>,
    pub(super) body: Framing,
    pub(super) expects_continue: bool,
}

/// How the answer goes out.
#[derive(Clone, Copy)]
pub(super) struct Answer {
    /// A `HEAD` request: the head only.
    pub(super) head_only: bool,
    /// The client speaks HTTP/1.1 (chunked answers are allowed).
    pub(super) http11: bool,
    /// The connection carries another request after this one.
    pub(super) keep_alive: bool,
}

impl Answer {
    /// How a refused head is answered: then the connection closes.
    pub(super) fn refusal() -> Self {
        Self {
            head_only: false,
            http11: true,
            keep_alive: false,
        }
    }
}

/// How an answer's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Out {
    /// No body (`HEAD`, 1xx, 204, 304 without a length).
    Nothing,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// Parses the request head at the start of `buffer` and removes it.
/// `Ok(None)`: the head is not complete yet.
pub(super) fn parse_head(buffer: &mut BytesMut) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
            return Err(head_too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(head_too_large()),
        Err(e) => return Err(bad(format!("invalid request head: {e}"))),
    };
    // All three are set once the head is complete.
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad("invalid request head".into()));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad("invalid method".into()))?;
    let path_span = h1::span(buffer, path.as_bytes()).map_err(|_| bad("invalid target".into()))?;
    let spans = parsed
        .headers
        .iter()
        .map(|h| {
            Ok((
                h1::span(buffer, h.name.as_bytes())?,
                h1::span(buffer, h.value)?,
            ))
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(|_| bad("invalid request head".into()))?;
    let head = buffer.split_to(length).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_span))
        .map_err(|_| bad("invalid request target".into()))?;

    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut expects_continue = false;
    let mut hosts = 0usize;
    for (name, value) in spans {
        let name =
            HeaderName::from_bytes(&head[name]).map_err(|_| bad("invalid header name".into()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| bad(format!("invalid value of header `{name}`")))?;
        if name == header::CONTENT_LENGTH {
            let length = h1::parse_length(value.as_bytes())
                .map_err(|_| bad("invalid content-length".into()))?;
            if content_length.is_some_and(|known| known != length) {
                return Err(bad("conflicting content-length headers".into()));
            }
            content_length = Some(length);
        } else if name == header::TRANSFER_ENCODING {
            // Only `chunked` on its own: Lexora decodes no other coding.
            chunked = !transfer_encoding
                && value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked");
            transfer_encoding = true;
        } else if name == header::EXPECT {
            expects_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::HOST {
            hosts += 1;
        }
        headers.append(name, value);
    }
    // RFC 9112 §6.1 and §6.3: a request body whose last coding is not
    // chunked has no knowable end, and one with both framings is how
    // requests are smuggled past proxies that pick the other one.
    let body = match (transfer_encoding, content_length) {
        (true, Some(_)) => {
            return Err(bad(
                "both transfer-encoding and content-length are set".into()
            ))
        }
        (true, None) if chunked && minor == 1 => Framing::Chunked(h1::Chunked::strict()),
        (true, None) => {
            return Err(Refusal::Bad(
                StatusCode::NOT_IMPLEMENTED,
                "only `transfer-encoding: chunked` (HTTP/1.1) is supported".into(),
            ))
        }
        (false, length) => Framing::Length(length.unwrap_or(0)),
    };
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, and no
    // request has two (which one a proxy behind would use is anyone's guess).
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Err(bad(
            "an HTTP/1.1 request needs exactly one `host` header".into()
        ));
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        body,
        expects_continue: expects_continue && minor == 1,
    }))
}

fn bad(message: String) -> Refusal {
    Refusal::Bad(StatusCode::BAD_REQUEST, message)
}

fn head_too_large() -> Refusal {
    Refusal::Bad(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("the request head is longer than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers"),
    )
}

/// The OpenAI-shaped answer to a head that cannot be served.
pub(super) fn refusal(status: StatusCode, message: &str) -> Response {
    let body = error_json(message, "invalid_request_error", None, None);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Whether the handler's answer says `connection: close`.
pub(super) fn asks_to_close(headers: &HeaderMap) -> bool {
    h1::connection_options(headers.get_all(header::CONNECTION)).0
}

/// Whether the client lets the connection carry more requests:
/// HTTP/1.1 unless it says `close`; HTTP/1.0 only if it says `keep-alive`.
pub(super) fn request_keeps_alive(request: &Request<Body>) -> bool {
    let (close, keep_alive) = h1::connection_options(request.headers().get_all(header::CONNECTION));
    !close && (request.version() == Version::HTTP_11 || keep_alive)
}

/// Writes the answer's head: the status line, the handler's headers (its
/// framing and connection headers replaced by the connection's own, and
/// those of the same names as the `stamp`'s by the stamp's), a `date`
/// unless it set one.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    stamp: Option<&Stamp>,
    framing: Out,
    answer: &Answer,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || stamp.is_some_and(|stamp| stamp.writes(name))
        {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(stamp) = stamp {
        stamp.encode(out);
    }
    match framing {
        Out::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::Nothing | Out::Close => {}
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !answer.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !answer.http11 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the current time as an HTTP date, formatted once a second per
/// thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *cached_second = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Appends a chunk-size line (hexadecimal, no extensions).
pub(super) fn chunk_size(out: &mut Vec<u8>, size: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = size;
    loop {
        at -= 1;
        digits[at] = b"0123456789ABCDEF"[rest & 0xF];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}
