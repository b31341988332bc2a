//! Whole bodies read into one buffer: a client's request, an engine's
//! complete answer.
//!
//! Most bodies come as one piece (a request that arrived with its head, an
//! answer the engine wrote at once), and that piece is handed back as it
//! is. http-body-util's `collect`, used before, queued every piece in a
//! `VecDeque` and copied them out again: some 700 instructions a request,
//! for two bodies that were one piece each.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body was not read whole.
#[derive(Debug)]
pub enum Unread {
    /// It is longer than the limit (nothing past the limit is read).
    TooLong,
    /// The body failed: the peer went away, or broke its framing.
    Failed(axum::Error),
}

/// Reads `body` to its end: at most `limit` bytes, trailers ignored.
pub async fn read_whole(mut body: Body, limit: usize) -> Result<Bytes, Unread> {
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Unread::Failed)?.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(Unread::TooLong);
        }
        if data.is_empty() {
            continue;
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                // What is still to come, if the body says: one allocation
                // for a body that states its length.
                let rest = usize::try_from(http_body::Body::size_hint(&body).lower())
                    .unwrap_or(usize::MAX);
                let capacity = total.saturating_add(rest).min(limit);
                let mut buffer = BytesMut::with_capacity(capacity);
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

#[cfg(test)]
mod tests;
