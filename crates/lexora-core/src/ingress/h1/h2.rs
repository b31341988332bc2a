//! HTTP/2 with prior knowledge: the connection is handed to hyper, with
//! the bytes already read put back in front.

use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http::Request;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Connection, Handler};

/// Serves an HTTP/2 connection (prior knowledge) with hyper, after the
/// bytes already read from it, until the client closes it, `closing`
/// fires, or no request has been open on it for `idle` (both close it
/// gracefully: open streams finish).
pub(super) async fn serve(
    conn: Connection,
    handler: impl Handler,
    closing: CancellationToken,
    idle: Option<Duration>,
) {
    let io = Rewound {
        prefix: conn.read.freeze(),
        tcp: conn.tcp,
    };
    let activity = Arc::new(Mutex::new(Activity {
        open: 0,
        since: Instant::now(),
    }));
    let tracked = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let open = Open::start(&tracked);
        handler.call(request.map(Body::new)).map(move |response| {
            // Open until its answer's body is done with.
            let response = response.map(|body| Body::new(Tracked { body, _open: open }));
            Ok::<_, Infallible>(response)
        })
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let idled = async {
        let Some(limit) = idle else {
            return std::future::pending().await;
        };
        loop {
            let (open, since) = {
                let activity = activity.lock().unwrap_or_else(|e| e.into_inner());
                (activity.open, activity.since)
            };
            if open == 0 && since.elapsed() >= limit {
                tracing::debug!("closing an HTTP/2 connection idle past server.idle_timeout");
                return;
            }
            // With a request open, look again a whole limit later.
            let next = if open == 0 {
                since + limit
            } else {
                Instant::now() + limit
            };
            tokio::time::sleep_until(next).await;
        }
    };
    tokio::select! {
        _ = connection.as_mut() => return,
        () = closing.cancelled() => {}
        () = idled => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// The requests open on a connection, and since when it has had none.
struct Activity {
    open: usize,
    since: Instant,
}

/// One open request: counted from its head until its answer's body is
/// dropped.
struct Open(Arc<Mutex<Activity>>);

impl Open {
    fn start(activity: &Arc<Mutex<Activity>>) -> Self {
        activity.lock().unwrap_or_else(|e| e.into_inner()).open += 1;
        Self(Arc::clone(activity))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut activity = self.0.lock().unwrap_or_else(|e| e.into_inner());
        activity.open -= 1;
        if activity.open == 0 {
            activity.since = Instant::now();
        }
    }
}

/// An answer's body, keeping its request counted as open.
struct Tracked {
    body: Body,
    _open: Open,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket with bytes already read from it put back in front.
struct Rewound {
    prefix: Bytes,
    tcp: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
