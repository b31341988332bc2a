use futures_util::stream;
use http_body::Frame;
use http_body_util::StreamBody;

use super::*;

/// A body that yields `pieces` one data frame each, a trailers frame after
/// the first (which a whole read skips), and then, when `fail`, an error.
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
