//! Which protocol a client connection speaks: HTTP/2 with prior knowledge (h2c) when
//! it opens with the HTTP/2 preface, HTTP/1.1 otherwise; then hyper's connection for
//! that protocol serves it.
//!
//! The first bytes are peeked at, not read, so hyper's connection reads them itself,
//! into a read buffer sized once. hyper-util's `auto` connection read them first and
//! handed them over ahead of the socket, so hyper's first read held only those bytes
//! and its second grew the buffer to twice its size: with 1,000 idle HTTP/1
//! connections open that was about 4 MB more resident memory (26.2 against 22.3 MB
//! with one worker).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::client_conn::{Graceful, WatchedIo};

/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type Io = TokioIo<WatchedIo<TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// hyper's two server connection builders, set up once per listener.
#[derive(Debug)]
pub(crate) struct Protocols {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The protocol of a connection whose first bytes are `seen`, or `None` while they
/// are a strict beginning of the HTTP/2 preface (or nothing yet).
fn protocol(seen: &[u8]) -> Option<Protocol> {
    let n = seen.len().min(H2_PREFACE.len());
    if seen[..n] != H2_PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Why serving a client connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// hyper's connection failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The socket failed before the protocol was known.
    #[error("reading the first bytes: {0}")]
    Io(#[from] io::Error),
}

pin_project! {
    /// One client connection: its protocol told from its first bytes, then served by
    /// hyper's HTTP/1 or HTTP/2 connection.
    #[project = ServeProj]
    pub(crate) enum Serve<S>
    where
        S: HttpService<Incoming>,
    {
        Detecting {
            io: Option<WatchedIo<TcpStream>>,
            service: Option<S>,
            protocols: Arc<Protocols>,
            // Bytes read off the socket while they were a beginning of the preface
            // (only when the preface comes in pieces; a peek decides otherwise).
            seen: Vec<u8>,
        },
        Http1 {
            #[pin]
            conn: http1::Connection<Io, S>,
        },
        // Boxed: hyper's HTTP/2 connection is 1.5 KB inline, its HTTP/1 one 0.7 KB, and
        // every connection's task is as large as the larger.
        Http2 {
            conn: Pin<Box<http2::Connection<Io, S, TokioExecutor>>>,
        },
        // Closed before the protocol was known (at end of stream, or on a drain).
        Done,
    }
}

impl<S: HttpService<Incoming>> Serve<S> {
    /// A connection that starts by looking at its first bytes.
    pub(crate) fn new(io: WatchedIo<TcpStream>, service: S, protocols: Arc<Protocols>) -> Self {
        Serve::Detecting {
            io: Some(io),
            service: Some(service),
            protocols,
            seen: Vec::new(),
        }
    }
}

/// Waits until the first bytes tell the protocol: one peek, unless they are a
/// beginning of the preface, which is then read off until it is whole or is not one.
/// `Ok(None)`: the client closed the connection first.
fn poll_detect(
    io: &mut WatchedIo<TcpStream>,
    seen: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Protocol>>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    if seen.is_empty() {
        let mut peeked = ReadBuf::new(&mut buf);
        let n = ready!(io.poll_peek(cx, &mut peeked))?;
        if n == 0 {
            return Poll::Ready(Ok(None));
        }
        if let Some(p) = protocol(peeked.filled()) {
            return Poll::Ready(Ok(Some(p)));
        }
    }
    // A peek cannot wait for more data than it saw, so what came is taken.
    loop {
        let mut read = ReadBuf::new(&mut buf[..H2_PREFACE.len() - seen.len()]);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Ok(None));
        }
        seen.extend_from_slice(read.filled());
        if let Some(p) = protocol(seen) {
            return Poll::Ready(Ok(Some(p)));
        }
    }
}

impl<S, B> Future for Serve<S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    type Output = Result<(), ServeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let next = match self.as_mut().project() {
            ServeProj::Http1 { conn } => return conn.poll(cx).map_err(ServeError::from),
            ServeProj::Http2 { conn } => return conn.as_mut().poll(cx).map_err(ServeError::from),
            ServeProj::Done => return Poll::Ready(Ok(())),
            ServeProj::Detecting {
                io,
                service,
                protocols,
                seen,
            } => {
                let Some(stream) = io.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                let detected = ready!(poll_detect(stream, seen, cx));
                match (detected, io.take(), service.take()) {
                    (Ok(Some(protocol)), Some(mut stream), Some(service)) => {
                        if !seen.is_empty() {
                            stream.replay(Bytes::from(std::mem::take(seen)));
                        }
                        match protocol {
                            Protocol::Http1 => Serve::Http1 {
                                conn: protocols
                                    .http1
                                    .serve_connection(TokioIo::new(stream), service),
                            },
                            Protocol::Http2 => {
                                stream.set_http2();
                                Serve::Http2 {
                                    conn: Box::pin(
                                        protocols
                                            .http2
                                            .serve_connection(TokioIo::new(stream), service),
                                    ),
                                }
                            }
                        }
                    }
                    (Err(e), ..) => {
                        self.set(Serve::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    _ => Serve::Done,
                }
            }
        };
        self.set(next);
        self.poll(cx)
    }
}

impl<S, B> Graceful for Serve<S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(mut self: Pin<&mut Self>) {
        match self.as_mut().project() {
            ServeProj::Http1 { conn } => conn.graceful_shutdown(),
            ServeProj::Http2 { conn } => conn.as_mut().graceful_shutdown(),
            // Nothing asked yet: nothing to finish.
            ServeProj::Detecting { .. } => self.set(Serve::Done),
            ServeProj::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http2_preface_is_told_from_its_first_bytes_and_nothing_else_is() {
        assert_eq!(protocol(H2_PREFACE), Some(Protocol::Http2));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(protocol(&more), Some(Protocol::Http2));
        // A beginning of the preface leaves it open; a byte off settles it.
        assert_eq!(protocol(b""), None);
        assert_eq!(protocol(&H2_PREFACE[..1]), None);
        assert_eq!(protocol(&H2_PREFACE[..23]), None);
        assert_eq!(protocol(b"G"), Some(Protocol::Http1));
        assert_eq!(protocol(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol(b"PRI * HTTP/1.1\r\n\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol(b"POST"), Some(Protocol::Http1));
    }
}
