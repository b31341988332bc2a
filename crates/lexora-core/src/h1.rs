//! HTTP/1.1 on the wire, shared by the upstream pool (a client) and the
//! ingress (a server): heads parsed by httparse with header values sharing
//! the head's bytes, and the three ways a body can end (`content-length`,
//! chunked transfer-coding, the close of the connection).
//!
//! The pool sends only `POST` and `GET` requests without `Expect` or
//! upgrades, so interim (1xx) answers are skipped and `101` is an error.

use std::io;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

/// The longest answer head accepted (hyper's default limit is larger; no
/// engine sends heads anywhere near this).
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers per answer head, as in hyper.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) or trailer section.
const MAX_LINE: usize = 4 * 1024;

/// A protocol error: what the peer sent is not HTTP/1.1 Lexora can read.
pub fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Writes a request head: `method`, the target (the pieces of `target`
/// one after the other, in origin-form), `headers` in their order but for
/// the framing ones, and the `content-length` of a body of `body_len`
/// bytes. The caller vouches for the target: it is written as it is.
pub fn encode_request<'a>(
    method: &Method,
    target: &[&str],
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    body_len: usize,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    for piece in target {
        out.extend_from_slice(piece.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // As hyper does: a bodiless GET says nothing of a body.
    if body_len > 0 || !matches!(*method, Method::GET | Method::HEAD) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether `path` can be written as (part of) a request target as it is:
/// visible ASCII only, so nothing can end the request line early.
pub fn is_target(path: &str) -> bool {
    path.bytes().all(|b| b.is_ascii_graphic())
}

/// An answer head, and how its body is framed.
pub struct Head {
    pub response: Response<()>,
    pub body: Framing,
    /// Whether the connection can carry another request after this body.
    pub keep_alive: bool,
}

/// Which headers of an answer [`parse_head`] puts into its response's map.
/// The framing ones are read whatever is kept.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// All of them.
    All,
    /// Only these: a caller that reads two headers of an answer need not
    /// pay for a map of all of them (under callgrind, building it took
    /// more instructions than httparse's parse of the head).
    Only(&'static [HeaderName]),
}

/// Parses the answer head at the start of `buffer` and removes it (with
/// any interim 1xx answers before it), with the headers `keep` asks for in
/// the response's map. `Ok(None)`: the head is not complete yet.
pub fn parse_head(buffer: &mut BytesMut, keep: Keep) -> io::Result<Option<Head>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let length = match parsed.parse(buffer) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
                return Err(invalid(format!("answer head longer than {MAX_HEAD} bytes")))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(format!("invalid answer head: {e}"))),
        };
        // Both are set once the head is complete.
        let (Some(code), Some(minor)) = (parsed.code, parsed.version) else {
            return Err(invalid("invalid answer head"));
        };
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(invalid("the engine switched protocols unasked"));
            }
            buffer.advance(length);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|e| invalid(e.to_string()))?;
        let mut framed = Framed::default();
        // Where each kept header sits in the head, so that values can share
        // its bytes instead of being copied one by one.
        let mut kept = Vec::new();
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            framed.read(name, h.value)?;
            let name = match keep {
                Keep::All => Name::At(span(buffer, name)?),
                Keep::Only(names) => match names
                    .iter()
                    .find(|known| known.as_str().as_bytes().eq_ignore_ascii_case(name))
                {
                    Some(known) => Name::Known(known),
                    None => continue,
                },
            };
            kept.push((name, span(buffer, h.value)?));
        }
        let head = buffer.split_to(length).freeze();
        let mut map = HeaderMap::with_capacity(kept.len());
        for (name, value) in kept {
            let name = match name {
                Name::Known(known) => known.clone(),
                Name::At(name) => HeaderName::from_bytes(&head[name])
                    .map_err(|_| invalid("invalid header name in the answer"))?,
            };
            let value = HeaderValue::from_maybe_shared(head.slice(value))
                .map_err(|_| invalid(format!("invalid value of header `{name}` in the answer")))?;
            map.append(name, value);
        }
        return Ok(Some(framed.head(status, minor, map)));
    }
}

/// A kept header's name: one of [`Keep::Only`]'s, or where it sits in the
/// head.
enum Name {
    Known(&'static HeaderName),
    At(Range<usize>),
}

/// Where `part` (a slice httparse took from `buffer`) sits in `buffer`.
pub(crate) fn span(buffer: &[u8], part: &[u8]) -> io::Result<Range<usize>> {
    if part.is_empty() {
        return Ok(0..0);
    }
    (part.as_ptr() as usize)
        .checked_sub(buffer.as_ptr() as usize)
        .map(|start| start..start + part.len())
        .filter(|range| range.end <= buffer.len())
        .ok_or_else(|| invalid("invalid answer head"))
}

/// What an answer's framing headers said.
#[derive(Default)]
struct Framed {
    content_length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    close: bool,
    keep_alive: bool,
}

impl Framed {
    /// Takes in one header, if it is one of the framing ones.
    fn read(&mut self, name: &[u8], value: &[u8]) -> io::Result<()> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(value)?;
            if self.content_length.is_some_and(|known| known != length) {
                return Err(invalid("conflicting content-length headers in the answer"));
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding decides the framing.
            let last = tokens(value).last().unwrap_or_default();
            self.chunked = last.eq_ignore_ascii_case(b"chunked");
            self.other_coding = !self.chunked;
        } else if name.eq_ignore_ascii_case(b"connection") {
            let (close, keep_alive) = connection_says(value);
            self.close |= close;
            self.keep_alive |= keep_alive;
        }
        Ok(())
    }

    fn head(self, status: StatusCode, minor: u8, headers: HeaderMap) -> Head {
        let version = if minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        // RFC 9112 §6.3: transfer-encoding wins over content-length; a coding
        // other than chunked last means the body runs to the close.
        let body = if bodiless {
            Framing::Length(0)
        } else if self.chunked {
            Framing::Chunked(Chunked::default())
        } else if self.other_coding {
            Framing::Close
        } else {
            self.content_length.map_or(Framing::Close, Framing::Length)
        };
        let keep_alive = !matches!(body, Framing::Close)
            && if version == Version::HTTP_11 {
                !self.close
            } else {
                self.keep_alive && !self.close
            };
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        Head {
            response,
            body,
            keep_alive,
        }
    }
}

/// Whether `connection` header values say `close`, and `keep-alive`.
pub(crate) fn connection_options<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> (bool, bool) {
    values
        .into_iter()
        .fold((false, false), |(close, keep_alive), value| {
            let (says_close, says_keep_alive) = connection_says(value.as_bytes());
            (close || says_close, keep_alive || says_keep_alive)
        })
}

/// Whether one `connection` header value says `close`, and `keep-alive`.
fn connection_says(value: &[u8]) -> (bool, bool) {
    tokens(value).fold((false, false), |(close, keep_alive), token| {
        (
            close || token.eq_ignore_ascii_case(b"close"),
            keep_alive || token.eq_ignore_ascii_case(b"keep-alive"),
        )
    })
}

/// The comma-separated tokens of a header value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

pub(crate) fn parse_length(value: &[u8]) -> io::Result<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid("invalid content-length in the answer"));
    }
    value.iter().try_fold(0u64, |total, digit| {
        total
            .checked_mul(10)
            .and_then(|t| t.checked_add(u64::from(digit - b'0')))
            .ok_or_else(|| invalid("content-length too large"))
    })
}

/// How an answer's body ends, and how much of it is left.
#[derive(Debug)]
pub enum Framing {
    /// This many bytes more.
    Length(u64),
    /// Chunked transfer-coding.
    Chunked(Chunked),
    /// Everything until the peer closes the connection.
    Close,
}

/// The next piece of a body taken out of the read buffer.
#[derive(Debug, PartialEq)]
pub enum Piece {
    Data(Bytes),
    /// The buffer holds no more of the body; read more.
    More,
    /// The body is complete.
    End,
}

impl Framing {
    /// Takes the next piece of the body from the front of `buffer`.
    pub fn next(&mut self, buffer: &mut BytesMut) -> io::Result<Piece> {
        match self {
            Self::Length(0) => Ok(Piece::End),
            Self::Length(left) => {
                if buffer.is_empty() {
                    return Ok(Piece::More);
                }
                let take = usize::try_from(*left).map_or(buffer.len(), |l| l.min(buffer.len()));
                *left -= take as u64;
                Ok(Piece::Data(buffer.split_to(take).freeze()))
            }
            Self::Chunked(chunked) => chunked.next(buffer),
            Self::Close if buffer.is_empty() => Ok(Piece::More),
            Self::Close => Ok(Piece::Data(buffer.split().freeze())),
        }
    }

    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        match self {
            Self::Length(left) => *left == 0,
            Self::Chunked(chunked) => chunked.state == State::Done,
            Self::Close => false,
        }
    }

    /// The peer closed the connection: the end of a [`Self::Close`] body,
    /// an error for the others.
    pub fn at_close(&self) -> io::Result<Piece> {
        match self {
            Self::Close => Ok(Piece::End),
            _ if self.is_done() => Ok(Piece::End),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the engine closed the connection before the answer's end",
            )),
        }
    }

    /// The exact length left, when known.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Self::Length(left) => Some(*left),
            _ => None,
        }
    }
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// Bytes of the current chunk's data still to come.
    left: u64,
    /// Trailer lines read so far.
    trailers: usize,
    /// Lines must end in CRLF, with no other CR or LF in them.
    strict: bool,
}

#[derive(Debug, Default, PartialEq, Clone, Copy)]
enum State {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data.
    Data,
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    Done,
}

impl Chunked {
    /// The decoding of a client's request body. Engines' answers are read
    /// leniently (a bare LF ends a line, as many servers accept), but a
    /// request body is framed exactly as RFC 9112 says: a front proxy that
    /// forwards chunked bodies as they are and ends their lines
    /// differently from Lexora is how requests are smuggled past it.
    pub fn strict() -> Self {
        Self {
            strict: true,
            ..Self::default()
        }
    }

    fn next(&mut self, buffer: &mut BytesMut) -> io::Result<Piece> {
        let strict = self.strict;
        loop {
            match self.state {
                State::Size => {
                    let Some(size) = take_line(buffer, strict, chunk_size)? else {
                        return Ok(Piece::More);
                    };
                    self.left = size?;
                    self.state = if self.left == 0 {
                        State::Trailers
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    if buffer.is_empty() {
                        return Ok(Piece::More);
                    }
                    let take = usize::try_from(self.left)
                        .map_or(buffer.len(), |left| left.min(buffer.len()));
                    self.left -= take as u64;
                    if self.left == 0 {
                        self.state = State::DataEnd;
                    }
                    return Ok(Piece::Data(buffer.split_to(take).freeze()));
                }
                State::DataEnd => {
                    let Some(empty) = take_line(buffer, strict, <[u8]>::is_empty)? else {
                        return Ok(Piece::More);
                    };
                    if !empty {
                        return Err(invalid("chunk data longer than its size"));
                    }
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(empty) = take_line(buffer, strict, <[u8]>::is_empty)? else {
                        return Ok(Piece::More);
                    };
                    if empty {
                        self.state = State::Done;
                    } else {
                        self.trailers += 1;
                        if self.trailers > MAX_HEADERS {
                            return Err(invalid("too many trailer lines"));
                        }
                    }
                }
                State::Done => return Ok(Piece::End),
            }
        }
    }
}

/// Looks at one line (without its CRLF, or a bare LF) at the front of
/// `buffer` with `read`, then drops it from the buffer; `None` until the
/// line is complete. The line is read in place: a stream event brings two
/// lines (its chunk size, and the CRLF after its data), and splitting each
/// off as its own `Bytes` cost more than the rest of the decoding.
/// `strict`: the line must end in CRLF and hold no other CR.
fn take_line<T>(
    buffer: &mut BytesMut,
    strict: bool,
    read: impl FnOnce(&[u8]) -> T,
) -> io::Result<Option<T>> {
    let Some(end) = memchr::memchr(b'\n', buffer) else {
        if buffer.len() > MAX_LINE {
            return Err(invalid("chunk-size or trailer line too long"));
        }
        return Ok(None);
    };
    let line = &buffer[..end];
    let line = match line.strip_suffix(b"\r") {
        Some(line) if !strict || memchr::memchr(b'\r', line).is_none() => line,
        None if !strict => line,
        _ => return Err(invalid("a chunked body's line does not end in CRLF")),
    };
    let value = read(line);
    buffer.advance(end + 1);
    Ok(Some(value))
}

/// The size in a chunk-size line (hex digits, then optional extensions).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(invalid("invalid chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |size, &digit| {
        let value = char::from(digit).to_digit(16).unwrap_or_default();
        size.checked_mul(16)
            .map(|s| s + u64::from(value))
            .ok_or_else(|| invalid("chunk size too large"))
    })
}

#[cfg(test)]
mod tests;
