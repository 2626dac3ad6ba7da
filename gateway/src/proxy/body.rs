//! Request bodies on their way upstream: streamed frame by frame, never buffered,
//! and cut off with [`BodyError::TooLarge`] once they pass the route's limit.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::server::Busy;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than the route allows.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading from the client failed (it went away or broke framing).
    #[error("reading the request body failed: {0}")]
    Client(#[source] hyper::Error),
}

pin_project! {
    /// A client's body with a byte limit. Whoever polls it learns that it has ended
    /// (sent in full, failed or cut off) from the frame that ends it.
    pub struct LimitedBody {
        #[pin]
        inner: Incoming,
        remaining: u64,
        limit: u64,
        // Keeps the client connection busy while the body is still arriving.
        busy: Option<Busy>,
    }
}

impl LimitedBody {
    /// Wraps `inner`, allowing at most `limit` bytes.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            busy: None,
        }
    }

    /// Keeps the client connection counted busy until the body has all arrived, so
    /// its idle timeout cannot cut an upload whose response came early.
    pub(crate) fn hold(mut self, busy: Busy) -> Self {
        self.busy = Some(busy);
        self
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        let frame = match ready!(this.inner.poll_frame(cx)) {
            None => {
                this.busy.take();
                return Poll::Ready(None);
            }
            Some(Err(e)) => {
                this.busy.take();
                return Poll::Ready(Some(Err(BodyError::Client(e))));
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > *this.remaining {
                *this.remaining = 0;
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *this.limit })));
            }
            *this.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
