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
mod tests {
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    /// A body that yields `pieces` one frame each, then `end` (an error
    /// when `fail`).
    fn body(pieces: &[&'static str], fail: bool) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> = pieces
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        frames.insert(
            1.min(frames.len()),
            Ok(Frame::trailers(http::HeaderMap::new())),
        );
        if fail {
            frames.push(Err(std::io::Error::other("reset")));
        }
        Body::new(StreamBody::new(stream::iter(frames)))
    }

    #[tokio::test]
    async fn one_piece_comes_back_as_it_is_and_many_are_joined() {
        let piece = Bytes::from_static(b"{\"model\":\"m\"}");
        let whole = read_whole(Body::from(piece.clone()), 1024)
            .await
            .expect("read");
        assert_eq!(whole, piece);
        assert_eq!(whole.as_ptr(), piece.as_ptr(), "the one piece was copied");

        let whole = read_whole(body(&["ab", "", "cd", "e"], false), 5)
            .await
            .expect("read");
        assert_eq!(whole, "abcde");
        let empty = read_whole(body(&[], false), 0).await.expect("read");
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_or_failing_is_not_read_whole() {
        let long = read_whole(body(&["ab", "cd", "e"], false), 4).await;
        assert!(matches!(long, Err(Unread::TooLong)), "{long:?}");
        let one = read_whole(Body::from("abcde"), 4).await;
        assert!(matches!(one, Err(Unread::TooLong)), "{one:?}");
        let failed = read_whole(body(&["ab"], true), 100).await;
        assert!(matches!(failed, Err(Unread::Failed(_))), "{failed:?}");
    }
}
