//! The answer's side of an HTTP/1.1 connection: its head and body
//! written to the client, event by event for a stream, and the lingering
//! close.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::head::{chunk_size, encode_head, Answer, Out};
use super::Connection;
use crate::h1;
use crate::probe;
use crate::respond::Stamp;

/// Written out before more ready events are added, however many there are.
const WRITE_HIGH: usize = 64 * 1024;
/// Data frames longer than this are written from their own buffer instead
/// of being copied behind the head.
const COPY_MAX: usize = 16 * 1024;
/// How long a closing connection reads what the client still sends, at
/// most and without anything arriving.
const LINGER: Duration = Duration::from_secs(5);
const LINGER_QUIET: Duration = Duration::from_secs(1);

impl Connection {
    /// Writes `response`. `Ok(true)`: the connection can carry another
    /// request. `Err`: the client is gone or the answer's body failed; the
    /// connection cannot be used any more.
    pub(super) async fn respond(
        &mut self,
        response: Response,
        stamp: Option<&Stamp>,
        mut answer: Answer,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = answer.head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| h1::parse_length(v.as_bytes()).ok());
        // A `HEAD` answer's body is empty, but its length is the one a
        // `GET` would have (axum sets the header so).
        let exact = http_body::Body::size_hint(&body).exact();
        let length = if bodiless {
            declared.or(exact.filter(|length| *length > 0))
        } else {
            exact.or(declared)
        };
        let framing = match length {
            _ if status.is_informational() || status == StatusCode::NO_CONTENT => Out::Nothing,
            Some(length) => Out::Length(length),
            None if answer.head_only || status == StatusCode::NOT_MODIFIED => Out::Nothing,
            None if answer.http11 => Out::Chunked,
            None => {
                answer.keep_alive = false;
                Out::Close
            }
        };
        encode_head(
            &mut self.write,
            status,
            &parts.headers,
            stamp,
            framing,
            &answer,
        );
        if bodiless {
            drop(body);
            self.flush().await?;
            return Ok(answer.keep_alive);
        }
        let mut left = match framing {
            Out::Length(length) => Some(length),
            _ => None,
        };
        loop {
            let step = poll_fn(|cx| self.poll_step(cx, Pin::new(&mut body))).await;
            match step {
                Step::Data(data) => {
                    if let Some(left) = &mut left {
                        let length = data.len() as u64;
                        if length > *left {
                            return Err(h1::invalid("the answer is longer than its length"));
                        }
                        *left -= length;
                    }
                    self.push_data(data, framing).await?;
                }
                Step::Flush => self.flush().await?,
                Step::End => break,
                Step::Failed(e) => {
                    tracing::debug!(error = %e, "the answer's body failed; closing the connection");
                    return Err(io::Error::other(e));
                }
                Step::Gone => return Err(io::ErrorKind::ConnectionAborted.into()),
            }
        }
        if left.is_some_and(|left| left > 0) {
            return Err(h1::invalid("the answer is shorter than its length"));
        }
        if framing == Out::Chunked {
            self.write.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        Ok(answer.keep_alive)
    }

    /// The next thing to do for the answer's body. A frame that is ready
    /// is taken at once, so events that arrived together leave together;
    /// when none is, what is buffered is written now (most often in full,
    /// without waiting), and then the body and the client are awaited.
    fn poll_step(&mut self, cx: &mut Context<'_>, body: Pin<&mut Body>) -> Poll<Step> {
        if self.write.len() >= WRITE_HIGH {
            return Poll::Ready(Step::Flush);
        }
        match http_body::Body::poll_frame(body, cx) {
            Poll::Ready(Some(Ok(frame))) => {
                return Poll::Ready(match frame.into_data() {
                    Ok(data) => Step::Data(data),
                    // Trailers: HTTP/1.1 answers here carry none.
                    Err(_) => Step::Flush,
                });
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Step::Failed(e)),
            Poll::Ready(None) => return Poll::Ready(Step::End),
            Poll::Pending => {}
        }
        match self.try_flush() {
            Ok(true) => {}
            Ok(false) => return Poll::Ready(Step::Flush),
            Err(_) => return Poll::Ready(Step::Gone),
        }
        self.poll_client(cx).map(|()| Step::Gone)
    }

    /// Adds a data frame to what is to be written, framed as `framing`
    /// says; a long one is written from its own buffer.
    async fn push_data(&mut self, data: Bytes, framing: Out) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if framing == Out::Chunked {
            chunk_size(&mut self.write, data.len());
        }
        if data.len() > COPY_MAX {
            self.write_with(&data).await?;
        } else {
            self.write.extend_from_slice(&data);
        }
        if framing == Out::Chunked {
            self.write.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// Writes as much of the write buffer as the socket takes now.
    /// `Ok(true)`: all of it.
    fn try_flush(&mut self) -> io::Result<bool> {
        while self.written < self.write.len() {
            match self.tcp.try_write(&self.write[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.write.clear();
        self.written = 0;
        probe::written();
        Ok(true)
    }

    /// [`Self::flush`] as a poll.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.try_flush()? {
            ready!(self.tcp.poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the whole write buffer.
    async fn flush(&mut self) -> io::Result<()> {
        while !self.try_flush()? {
            self.writable().await?;
        }
        Ok(())
    }

    /// Waits until the socket takes more, for [`Limits::send`](super::Limits::send) at most.
    async fn writable(&self) -> io::Result<()> {
        let Some(limit) = self.send_timeout else {
            return self.tcp.writable().await;
        };
        match tokio::time::timeout(limit, self.tcp.writable()).await {
            Ok(writable) => writable,
            Err(_) => {
                tracing::debug!(
                    "dropping a client that left its answer unread past server.send_timeout"
                );
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }

    /// Writes the write buffer, then `data`, without copying `data`.
    async fn write_with(&mut self, mut data: &[u8]) -> io::Result<()> {
        loop {
            let buffered = &self.write[self.written..];
            if buffered.is_empty() && data.is_empty() {
                self.write.clear();
                self.written = 0;
                return Ok(());
            }
            let parts = [IoSlice::new(buffered), IoSlice::new(data)];
            match self.tcp.try_write_vectored(&parts) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let from_buffer = n.min(buffered.len());
                    self.written += from_buffer;
                    data = &data[n - from_buffer..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the connection: the client reads everything sent, then the end
    /// of the stream. What it still sends (the rest of a body the answer
    /// did not wait for) is read and dropped until it closes too, for
    /// [`LINGER`] at most: closing a socket with unread bytes resets the
    /// connection, and a reset can destroy the answer in the client's
    /// buffers before it is read.
    pub(super) async fn close(mut self) {
        if self.tcp.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        loop {
            self.read.clear();
            let wait = deadline.min(Instant::now() + LINGER_QUIET);
            match tokio::time::timeout_at(wait, self.fill()).await {
                Ok(Ok(read)) if read > 0 => {}
                _ => return,
            }
        }
    }
}

/// What the answer's body loop does next.
enum Step {
    Data(Bytes),
    /// Write out the buffer before going on.
    Flush,
    End,
    Failed(axum::Error),
    /// The client went away.
    Gone,
}
