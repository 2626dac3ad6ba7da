//! HTTP/1.1 to an upstream, on a connection the request's own task drives.
//!
//! hyper's client runs every connection as a task of its own, fed through channels:
//! per request the request crossed to that task, the response head and each body
//! chunk came back, and each crossing woke a task. Here the request's task writes the
//! request and reads the response itself, and the response body reads from the socket
//! when the client side asks for the next frame, so back-pressure is the socket's.
//! httparse parses the head, as it does inside hyper; the response's header values
//! are slices of the bytes read, with no copy.
//!
//! What the framing follows (RFC 9112 6.3): no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding: chunked` before `Content-Length` (and then no reuse); several
//! differing `Content-Length`s, any transfer coding but one `chunked` (the gateway
//! decodes no other), `Transfer-Encoding` in an HTTP/1.0 response and bad chunk sizes
//! are errors; otherwise the body runs to the connection's close.
//! Interim 1xx answers are skipped (the gateway never asks for an upgrade, so a 101
//! is an error). A connection goes back to the pool only after an exchange that ended
//! cleanly on both sides, with keep-alive, and nothing left over.

use std::fmt::Write as _;
use std::future::Future as _;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, InvalidHeaderName, CONNECTION, CONTENT_LENGTH,
};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::{together, PoolInner};
use crate::proxy::body::{BodyError, LimitedBody};
use crate::proxy::headers::{self, Added, TransferCodings};

/// Most header fields accepted in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest response head (status line and fields), and largest trailer section.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// First read size; doubled while reads fill it, up to `MAX_READ` (as hyper does).
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Why an exchange with an upstream broke.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading from or writing to the upstream failed.
    #[error("i/o with the upstream failed")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before its response was complete.
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    /// The response broke HTTP/1.1's rules.
    #[error("the upstream sent a malformed response: {0}")]
    Malformed(&'static str),
    /// The response head (or trailer section) passed [`MAX_HEAD`] bytes or
    /// [`MAX_HEADERS`] fields.
    #[error("the upstream's response head is too large")]
    HeadTooLarge,
    /// The client's request body failed or passed the route's limit while it was sent.
    #[error("the request body could not be sent")]
    RequestBody(#[source] BodyError),
    /// The upstream sent nothing of its response body for its `request_timeout`.
    #[error("the upstream stalled for longer than its request timeout")]
    Stalled,
}

/// One TCP connection to an upstream, with its buffers, owned by the pool while idle
/// and by one request at a time. Boxed once, when it opens: a request moves its
/// connection from the pool into the exchange, the response body and back, and a
/// pointer moves for the price of a register where the state itself is ~250 bytes.
#[derive(Debug)]
pub(crate) struct Conn(Box<ConnState>);

impl std::ops::Deref for Conn {
    type Target = ConnState;

    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

/// What a [`Conn`] holds.
#[derive(Debug)]
pub(crate) struct ConnState {
    io: Io,
    /// Bytes read and not yet consumed; response heads and bodies are split off it.
    read: BytesMut,
    /// Where request heads and chunk-size lines are written before they are sent.
    write: BytesMut,
    read_size: usize,
    /// Scratch for one head's field names and value positions, kept between requests.
    fields: Vec<(HeaderName, usize, usize)>,
    /// The field names of the last response head on this connection.
    names: NameCache,
    /// An interim (1xx) head of the exchange under way has been read: the upstream has
    /// answered, so a close now is no silent one (see [`HeadError::Silent`]).
    interim: bool,
    /// The request's header map, emptied, to hold the response's headers: hyper keeps
    /// each response's map for the next request it parses, so one map goes round.
    spare: HeaderMap,
    /// The response-head timer of this connection's exchanges, made with its first
    /// one and reset for each: moving a registered timer's deadline later is one
    /// atomic exchange, where a timer per request is a registration and a removal.
    timer: Option<Pin<Box<Sleep>>>,
    /// While a response body waits for the upstream: when that wait becomes a stall.
    /// Set when a read finds nothing (about when the last bytes came), cleared by data.
    silent_until: Option<Instant>,
    /// The request head, queued to be written together with the turn's others.
    queued: Option<together::Ticket>,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        // Off the queue before the socket closes: its descriptor may be reused.
        if let Some(ticket) = self.queued.take() {
            together::cancel(ticket);
        }
    }
}

/// The socket: whole, or its read half while the write half finishes an upload the
/// upstream answered early (in a task of its own, so that it moves on while the
/// response waits for its client).
#[derive(Debug)]
enum Io {
    Whole(TcpStream),
    Reading(OwnedReadHalf),
    /// Only between the two above.
    Gone,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Self(Box::new(ConnState {
            io: Io::Whole(io),
            read: BytesMut::new(),
            write: BytesMut::new(),
            read_size: MIN_READ,
            fields: Vec::new(),
            names: NameCache::default(),
            interim: false,
            spare: HeaderMap::new(),
            timer: None,
            silent_until: None,
            queued: None,
        }))
    }
}

impl ConnState {
    /// Ready once `deadline` has passed; the exchange on this connection waits for
    /// its response head until then.
    pub(crate) fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        poll_timer(&mut self.timer, cx, deadline)
    }

    /// Called as the connection goes idle: a read buffer grown for a large body is let
    /// go, so an idle connection holds `MIN_READ` at most, not the largest body's reads.
    pub(crate) fn idle(&mut self) {
        // A long head grows the buffer without doubling `read_size`; some slack over
        // `MIN_READ` is kept, so a usual exchange does not cost an allocation.
        if self.read_size > MIN_READ || self.read.capacity() > 2 * MIN_READ {
            self.read = BytesMut::new();
            self.read_size = MIN_READ;
        }
    }

    /// Keeps a request's header map, emptied, for the response's headers.
    pub(crate) fn recycle(&mut self, mut headers: HeaderMap) {
        headers.clear();
        self.spare = headers;
    }

    /// False when the upstream has closed the connection, reset it, or sent something
    /// unasked while it was idle. Costs no system call unless the socket has turned
    /// readable since the last read.
    pub(crate) fn is_usable(&self) -> bool {
        let Io::Whole(io) = &self.io else {
            return false;
        };
        let mut cx = Context::from_waker(Waker::noop());
        match io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the request on the whole socket (see [`Upload::poll_send`]). A request
    /// that is only a head goes out with the turn's others ([`together`]) where the
    /// thread writes them so.
    pub(crate) fn poll_send(
        &mut self,
        upload: &mut Upload,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        let Io::Whole(io) = &mut self.io else {
            return Poll::Ready(Err(ExchangeError::Io(io::Error::other(
                "the connection's write side is busy elsewhere",
            ))));
        };
        if self.queued.is_none() {
            if let Upload::Head { head, sent: 0, .. } = upload {
                // SAFETY: the socket closes only with `self`, whose `Drop` gives the
                // ticket back first; `io` is not replaced while a ticket is out (no
                // upload splits the socket before its head has been written).
                #[allow(unsafe_code)]
                let queued = unsafe { together::queue(io.as_raw_fd(), head, cx) };
                self.queued = queued;
                // Woken by the answer once the head has gone whole (the queue wakes
                // the task only for any other outcome); something there already is
                // no reason to wait for the turn's others.
                if self.queued.is_some() && io.poll_read_ready(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        if self.queued.is_some() {
            match together::poll(&mut self.queued, cx) {
                together::Outcome::All => upload.wrote(usize::MAX),
                together::Outcome::Wrote(n) => upload.wrote(n),
                together::Outcome::Failed(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                together::Outcome::Failed(e) => return Poll::Ready(Err(e.into())),
                together::Outcome::Unknown => upload.assume_sent(),
            }
        }
        upload.poll_send(io, &mut self.write, cx)
    }

    /// True while the request head is in the queue of heads written together (or its
    /// outcome not yet taken): there is no answer to read before it has gone.
    pub(crate) fn is_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// Splits off the write half, for an upload to go on in a task of its own.
    fn split_writer(&mut self) -> Option<OwnedWriteHalf> {
        // Only an upload splits the socket, and only a head-only request is queued.
        debug_assert!(self.queued.is_none(), "split while a head is queued");
        match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Whole(io) => {
                let (read, write) = io.into_split();
                self.io = Io::Reading(read);
                Some(write)
            }
            other => {
                self.io = other;
                None
            }
        }
    }

    /// Puts the write half back after its upload; false when it is not this socket's.
    fn reunite(&mut self, write: OwnedWriteHalf) -> bool {
        match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Reading(read) => match read.reunite(write) {
                Ok(io) => {
                    self.io = Io::Whole(io);
                    true
                }
                Err(_) => false,
            },
            other => {
                self.io = other;
                false
            }
        }
    }

    /// Reads more into `read`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(match &mut self.io {
            Io::Whole(io) => tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.read),
            Io::Reading(io) => tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.read),
            Io::Gone => Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected))),
        })?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Encodes a request head into a shareable buffer.
    fn encode_head(
        &mut self,
        parts: &http::request::Parts,
        added: &Added,
        framing: RequestFraming,
    ) -> Bytes {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let w = &mut self.write;
        // A guess, not a second pass over the headers: a longer head grows the buffer,
        // which keeps its size for the connection's later requests.
        w.reserve(64 + path.len() + 48 * parts.headers.len());
        w.extend_from_slice(parts.method.as_str().as_bytes());
        w.extend_from_slice(b" ");
        w.extend_from_slice(path.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(host) = &added.host {
            put_field(w, b"host", host);
        }
        put_fields(w, &parts.headers);
        added.each(|name, value| put_field(w, name.as_bytes(), value));
        match framing {
            RequestFraming::AsIs => {}
            RequestFraming::Length(n) => {
                // Writing into a `BytesMut` cannot fail.
                let _ = write!(w, "content-length: {n}\r\n");
            }
            RequestFraming::Chunked => w.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        w.extend_from_slice(b"\r\n");
        w.split().freeze()
    }

    /// Reads until a final response head is complete (skipping 1xx heads) and parses it.
    pub(crate) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<Head, HeadError>> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = self.parse_head(method).map_err(HeadError::Broken)? {
                    return Poll::Ready(Ok(head));
                }
                if self.read.len() >= MAX_HEAD {
                    return Poll::Ready(Err(HeadError::Broken(ExchangeError::HeadTooLarge)));
                }
            }
            // `parse_head` may have taken an interim head off `read`.
            let nothing_yet = self.read.is_empty() && !self.interim;
            match ready!(self.poll_fill(cx)) {
                Ok(0) if nothing_yet => return Poll::Ready(Err(HeadError::Silent(None))),
                Ok(0) => return Poll::Ready(Err(HeadError::Broken(ExchangeError::Closed))),
                Ok(_) => {}
                Err(e) if nothing_yet => return Poll::Ready(Err(HeadError::Silent(Some(e)))),
                Err(e) => return Poll::Ready(Err(HeadError::Broken(e.into()))),
            }
        }
    }

    /// A complete final response head off the front of `read`, if there is one.
    fn parse_head(&mut self, method: &Method) -> Result<Option<Head>, ExchangeError> {
        loop {
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut res, &self.read, &mut slots);
            let len = match parsed {
                // A head read whole in one go is held to the limit too: the bound must
                // not depend on how the upstream's bytes were split into reads.
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                    return Err(ExchangeError::HeadTooLarge)
                }
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(ExchangeError::HeadTooLarge),
                Err(_) => return Err(ExchangeError::Malformed("invalid response head")),
            };
            let code = res.code.unwrap_or(0);
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(ExchangeError::Malformed("101 to a request with no upgrade"));
                }
                // Interim (100 Continue, 103 Early Hints): the final head follows.
                self.read.advance(len);
                self.interim = true;
                continue;
            }
            // The final head: the next exchange on this connection starts afresh.
            self.interim = false;
            let status = StatusCode::from_u16(code)
                .map_err(|_| ExchangeError::Malformed("invalid status code"))?;
            let version = match res.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            let base = self.read.as_ptr() as usize;
            let mut meta = HeadMeta::default();
            self.fields.clear();
            for (i, h) in res.headers.iter().enumerate() {
                let name = self
                    .names
                    .name(i, h.name.as_bytes())
                    .map_err(|_| ExchangeError::Malformed("invalid header name"))?;
                meta.note(&name, h.value)?;
                // Hop-by-hop fields end here, their framing and keep-alive facts noted;
                // a `Connection` that names other fields stays for the pass below.
                if is_hop_by_hop(&name) && !(name == CONNECTION && meta.names_fields) {
                    continue;
                }
                let start = h.value.as_ptr() as usize - base;
                self.fields.push((name, start, start + h.value.len()));
            }
            let head = self.read.split_to(len).freeze();
            let mut headers = std::mem::take(&mut self.spare);
            // Room for the `x-request-id` the proxy adds, so the map does not grow.
            headers.reserve(self.fields.len() + 2);
            for (name, start, end) in self.fields.drain(..) {
                let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                    .map_err(|_| ExchangeError::Malformed("invalid header value"))?;
                headers.append(name, value);
            }
            if meta.names_fields {
                headers::remove_hop_by_hop(&mut headers);
            }
            if meta.codings.present && meta.content_length.is_some() {
                // The chunks delimit it; a length forwarded along would contradict them.
                headers.remove(CONTENT_LENGTH);
            } else if let Some(n) = meta.content_length.filter(|_| meta.length_repeated) {
                // RFC 9110 8.6: a recipient may replace the list by one value, and one
                // is all a client downstream can be counted on to accept.
                headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            }
            let mut response = Response::new(());
            *response.status_mut() = status;
            // The response keeps `Response::new`'s HTTP/1.1, not the upstream's version:
            // an intermediary sends its own (RFC 9110 2.5), and hyper answers an
            // HTTP/1.0 client in HTTP/1.0 itself.
            *response.headers_mut() = headers;
            let (framing, keep_alive) = meta.framing(method, status, version)?;
            return Ok(Some(Head {
                response,
                framing,
                keep_alive,
            }));
        }
    }
}

/// The field names of a connection's last response head, as received and as parsed.
/// An upstream sends the same fields in the same order response after response, and
/// comparing the bytes received with those of the last head costs a fraction of
/// parsing a name again (`HeaderName::from_bytes` folds case through a table and
/// matches the standard names). Bounded, so a head of many long names caches only
/// its first ones.
#[derive(Debug, Default)]
struct NameCache {
    /// The names as received, one after another.
    raw: Vec<u8>,
    /// Each name, with where its bytes end in `raw`.
    names: Vec<(usize, HeaderName)>,
}

impl NameCache {
    const MAX_NAMES: usize = 32;
    const MAX_BYTES: usize = 1024;

    /// The name of the head's field number `i` (fields are asked for in order), from
    /// the cache when the last head had the same bytes there.
    fn name(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        // Where field `i`'s bytes start: after field `i - 1`'s, when the cache has it.
        let start = match i.checked_sub(1) {
            None => Some(0),
            Some(prev) => self.names.get(prev).map(|(end, _)| *end),
        };
        if let (Some(start), Some((end, name))) = (start, self.names.get(i)) {
            if self.raw.get(start..*end) == Some(raw) {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw)?;
        // This head differs from the last one here: the rest of the last one goes.
        if let Some(start) = start {
            if i < Self::MAX_NAMES && start + raw.len() <= Self::MAX_BYTES {
                self.names.truncate(i);
                self.raw.truncate(start);
                self.raw.extend_from_slice(raw);
                self.names.push((self.raw.len(), name.clone()));
            }
        }
        Ok(name)
    }
}

/// True for the fields that concern one connection only (RFC 9110 7.6.1), which a
/// proxy does not pass on: `Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`,
/// `Upgrade` and `Proxy-*`. Fields a `Connection` header names are hop-by-hop too;
/// those are removed once the head's map is built.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    use http::header::{TE, TRANSFER_ENCODING, UPGRADE};
    if *name == CONNECTION || *name == TRANSFER_ENCODING || *name == TE || *name == UPGRADE {
        return true;
    }
    let n = name.as_str();
    n == "keep-alive" || n.starts_with("proxy-")
}

/// A final response head without its hop-by-hop fields, and how its body is to be
/// read.
pub(crate) struct Head {
    pub(crate) response: Response<()>,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request once this exchange is over.
    pub(crate) keep_alive: bool,
}

/// What reading a response head ended with, short of a head.
pub(crate) enum HeadError {
    /// The upstream closed or reset the connection without sending a byte (not even an
    /// interim head): on a reused connection, the sign of an idle timeout crossing the
    /// request.
    Silent(Option<io::Error>),
    /// Anything else.
    Broken(ExchangeError),
}

impl HeadError {
    pub(crate) fn into_error(self) -> ExchangeError {
        match self {
            HeadError::Silent(None) => ExchangeError::Closed,
            HeadError::Silent(Some(e)) => ExchangeError::Io(e),
            HeadError::Broken(e) => e,
        }
    }
}

/// The framing facts of a response head, gathered in the pass that builds its map.
#[derive(Default)]
struct HeadMeta {
    content_length: Option<u64>,
    /// The length came as a list (`5, 5`, or the field twice): forwarded as one value.
    length_repeated: bool,
    codings: TransferCodings,
    close: bool,
    keep_alive: bool,
    /// A `Connection` field names other fields, which are hop-by-hop as well.
    names_fields: bool,
}

impl HeadMeta {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), ExchangeError> {
        if *name == CONTENT_LENGTH {
            for part in value.split(|&b| b == b',') {
                let n = parse_u64(part.trim_ascii())
                    .ok_or(ExchangeError::Malformed("invalid Content-Length"))?;
                if let Some(m) = self.content_length {
                    if m != n {
                        return Err(ExchangeError::Malformed("conflicting Content-Length"));
                    }
                    self.length_repeated = true;
                }
                self.content_length = Some(n);
            }
        } else if *name == http::header::TRANSFER_ENCODING {
            // Each field continues the list.
            self.codings.add(value);
        } else if *name == CONNECTION {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                self.names_fields |= !(close || keep_alive || token.is_empty());
            }
        }
        Ok(())
    }

    fn framing(
        &self,
        method: &Method,
        status: StatusCode,
        version: Version,
    ) -> Result<(Framing, bool), ExchangeError> {
        let mut keep_alive = match version {
            Version::HTTP_11 => !self.close,
            _ => self.keep_alive && !self.close,
        };
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((Framing::Done, keep_alive));
        }
        if self.codings.present {
            if version != Version::HTTP_11 {
                return Err(ExchangeError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 response",
                ));
            }
            // Another coding would reach the client undecoded, with nothing to say so
            // (the field is hop-by-hop).
            if !self.codings.is_chunked() {
                return Err(ExchangeError::Malformed("unsupported Transfer-Encoding"));
            }
            // With Content-Length too, the message may have been smuggled: read it by
            // its chunks and do not trust the connection after it.
            keep_alive &= self.content_length.is_none();
            return Ok((Framing::Chunked(Chunk::Size), keep_alive));
        }
        match self.content_length {
            Some(0) => Ok((Framing::Done, keep_alive)),
            Some(n) => Ok((Framing::Length(n), keep_alive)),
            None => Ok((Framing::UntilClose, false)),
        }
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// How a response body is delimited, and how far it has been read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Framing {
    /// Read to its end (or none at all).
    Done,
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes.
    UntilClose,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// How the request body is delimited on the way upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestFraming {
    /// The headers already say (`Content-Length`), or there is no body.
    AsIs,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// Decides from the body's size hint and the headers; removes a `Content-Length`
    /// that a chunked body would contradict.
    pub(crate) fn choose(parts: &mut http::request::Parts, body: &LimitedBody) -> Self {
        if body.is_end_stream() {
            // A request that carries content by its method says it has none.
            let wants_length = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
            if wants_length && !parts.headers.contains_key(CONTENT_LENGTH) {
                return RequestFraming::Length(0);
            }
            return RequestFraming::AsIs;
        }
        match body.size_hint().exact() {
            Some(_) if parts.headers.contains_key(CONTENT_LENGTH) => RequestFraming::AsIs,
            Some(n) => RequestFraming::Length(n),
            None => {
                parts.headers.remove(CONTENT_LENGTH);
                RequestFraming::Chunked
            }
        }
    }
}

/// Room for a request head, one chunk's framing around its data, and the last chunk.
const OUTBOX: usize = 6;

/// The request on its way upstream. Most requests are only a head: that is kept in
/// a few words. A request with a body boxes its queue and body ([`Streaming`]), so
/// every future that carries an upload stays small (hyper moves the request's future
/// into place, and it holds the upload) at the price of one allocation per body.
pub(crate) enum Upload {
    Head {
        head: Bytes,
        /// Bytes of it written so far.
        sent: usize,
        /// Safe to send again from the start (idempotent, not answered yet): a request
        /// the upstream closed under without a byte of answer can go elsewhere.
        replay: bool,
    },
    Body(Box<Streaming>),
}

/// A request with a body: what is queued to write, and the rest of the body.
pub(crate) struct Streaming {
    queue: [Bytes; OUTBOX],
    start: usize,
    end: usize,
    body: Option<LimitedBody>,
    chunked: bool,
    /// Bytes written so far; a request not yet started can go to another connection.
    written: u64,
    /// Bytes of the body taken from the client so far.
    received: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upload::Head { head, sent, replay } => f
                .debug_struct("Upload::Head")
                .field("len", &head.len())
                .field("sent", sent)
                .field("replay", replay)
                .finish(),
            Upload::Body(s) => f
                .debug_struct("Upload::Body")
                .field("queued", &(s.end - s.start))
                .field("body_done", &s.body.is_none())
                .field("written", &s.written)
                .finish(),
        }
    }
}

impl Upload {
    /// Encodes the head on `conn`, ahead of `body` when there is one.
    pub(crate) fn start(
        conn: &mut Conn,
        parts: &http::request::Parts,
        added: &Added,
        framing: RequestFraming,
        body: LimitedBody,
    ) -> Self {
        let head = conn.encode_head(parts, added, framing);
        if body.is_end_stream() {
            return Upload::Head {
                head,
                sent: 0,
                replay: parts.method.is_idempotent(),
            };
        }
        let mut queue: [Bytes; OUTBOX] = Default::default();
        queue[0] = head;
        Upload::Body(Box::new(Streaming {
            queue,
            start: 0,
            end: 1,
            body: Some(body),
            chunked: matches!(framing, RequestFraming::Chunked),
            written: 0,
            received: 0,
        }))
    }

    /// Makes it ready to go again from the start on another connection; false when
    /// part of it has left and cannot be taken back.
    pub(crate) fn rewind(&mut self) -> bool {
        match self {
            Upload::Head { sent, replay, .. } => {
                if *sent > 0 && !*replay {
                    return false;
                }
                *sent = 0;
                true
            }
            Upload::Body(s) => s.written == 0,
        }
    }

    /// Writing to the connection failed: nothing more of it goes up there. The rest
    /// of the body is let go unless none of the request had left (then it can still
    /// go whole to another connection); true when part of it had left.
    pub(crate) fn abandon(&mut self) -> bool {
        match self {
            Upload::Head { sent, .. } => *sent > 0,
            Upload::Body(s) => {
                if s.written == 0 {
                    return false;
                }
                s.body = None;
                true
            }
        }
    }

    /// True once all of it, head and body, has been written.
    pub(crate) fn is_sent(&self) -> bool {
        match self {
            Upload::Head { head, sent, .. } => *sent == head.len(),
            Upload::Body(s) => s.body.is_none() && s.start == s.end,
        }
    }

    /// True once no more of the body is to come from the client: it ended, failed,
    /// or was let go (a request that is only a head has none).
    pub(crate) fn body_ended(&self) -> bool {
        match self {
            Upload::Head { .. } => true,
            Upload::Body(s) => s.body.is_none(),
        }
    }

    /// How far it has got: bytes moved (taken from the client plus written upstream),
    /// which grows with every step forward, and whether some are waiting to be
    /// written. A stalled upload is the upstream's doing when bytes wait for it, the
    /// client's when the gateway waits for more of the body.
    pub(crate) fn progress(&self) -> (u64, bool) {
        match self {
            Upload::Head { head, sent, .. } => (*sent as u64, *sent < head.len()),
            Upload::Body(s) => (s.received + s.written, s.start != s.end),
        }
    }

    /// `n` more bytes of the head have been written (by [`together`]; `usize::MAX`:
    /// all of it).
    fn wrote(&mut self, n: usize) {
        if let Upload::Head { head, sent, .. } = self {
            *sent = sent.saturating_add(n).min(head.len());
        }
    }

    /// Whether the head went out is not known ([`together::Outcome::Unknown`]): it
    /// counts as sent, so it is never sent twice; the response timeout bounds the
    /// wait for an answer that may not come.
    fn assume_sent(&mut self) {
        self.wrote(usize::MAX);
        self.answered();
    }

    /// The head has been answered: it will not be sent again.
    pub(crate) fn answered(&mut self) {
        if let Upload::Head { replay, .. } = self {
            *replay = false;
        }
    }

    /// Writes all of it; a body's chunk-size lines are written into `scratch`.
    fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        scratch: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        match self {
            Upload::Head { head, sent, .. } => {
                while *sent < head.len() {
                    let n = ready!(Pin::new(&mut *io).poll_write(cx, &head[*sent..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(wrote_nothing()));
                    }
                    *sent += n;
                }
                Poll::Ready(Ok(()))
            }
            Upload::Body(s) => s.poll_send(io, scratch, cx),
        }
    }
}

impl Streaming {
    fn push(&mut self, bytes: Bytes) {
        self.queue[self.end] = bytes;
        self.end += 1;
    }

    /// Writes what is queued and what the body has ready, until all of it is sent;
    /// chunk-size lines are written into `scratch`.
    fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        scratch: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        loop {
            self.poll_body(scratch, cx)?;
            if self.start == self.end {
                return if self.body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let mut slices = [IoSlice::new(&[]); OUTBOX];
            let queued = &self.queue[self.start..self.end];
            for (slice, bytes) in slices.iter_mut().zip(queued) {
                *slice = IoSlice::new(bytes);
            }
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..queued.len()]))?;
            if n == 0 {
                return Poll::Ready(Err(wrote_nothing()));
            }
            self.written += n as u64;
            self.consume(n);
        }
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 && self.start < self.end {
            let front = &mut self.queue[self.start];
            let take = n.min(front.len());
            front.advance(take);
            n -= take;
            if front.is_empty() {
                self.queue[self.start] = Bytes::new();
                self.start += 1;
            }
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Queues the body's ready frames while there is room for one more chunk.
    fn poll_body(
        &mut self,
        scratch: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Result<(), ExchangeError> {
        while self.end + 3 <= OUTBOX {
            let Some(body) = self.body.as_mut() else {
                return Ok(());
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => {
                    self.body = None;
                    if self.chunked {
                        self.push(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    return Ok(());
                }
                Poll::Ready(Some(Err(e))) => {
                    self.body = None;
                    return Err(ExchangeError::RequestBody(e));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            if let Some(data) = frame.data_ref() {
                self.received += data.len() as u64;
            }
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) if self.chunked => {
                    let w = &mut *scratch;
                    let _ = write!(w, "{:x}\r\n", data.len());
                    let line = w.split().freeze();
                    self.push(line);
                    self.push(data);
                    self.push(Bytes::from_static(b"\r\n"));
                }
                Ok(data) => self.push(data),
                Err(frame) => {
                    // Trailers end the body; only chunked framing can carry them.
                    self.body = None;
                    if self.chunked {
                        let w = &mut *scratch;
                        w.extend_from_slice(b"0\r\n");
                        if let Ok(trailers) = frame.into_trailers() {
                            put_fields(w, trailers.iter().filter(|(n, _)| trailer_allowed(n)));
                        }
                        w.extend_from_slice(b"\r\n");
                        let last = w.split().freeze();
                        self.push(last);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// A write that took no bytes: the connection cannot take the request.
fn wrote_nothing() -> ExchangeError {
    io::Error::from(io::ErrorKind::WriteZero).into()
}

/// Writes `name: value` lines, for a head or a trailer section.
fn put_fields<'a>(
    w: &mut BytesMut,
    fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    for (name, value) in fields {
        put_field(w, name.as_str().as_bytes(), value);
    }
}

/// Writes one `name: value` line.
fn put_field(w: &mut BytesMut, name: &[u8], value: &HeaderValue) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value.as_bytes());
    w.extend_from_slice(b"\r\n");
}

/// False for fields a trailer section must not carry (RFC 9110 6.5.1), either way:
/// framing, routing and connection fields, which the peer might otherwise act on (and
/// which HTTP/2 forbids: RFC 9113 8.2.2); a hop's own (`Proxy-*`), stripped from the
/// head; and the fields the gateway vouches for in the head (`X-Forwarded-*`,
/// `Forwarded`, `X-Request-Id`), which a peer merging trailers into headers would
/// otherwise take from the other side.
fn trailer_allowed(name: &HeaderName) -> bool {
    use http::header::{FORWARDED, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    let n = name.as_str();
    ![
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        FORWARDED,
    ]
    .contains(name)
        && n != "keep-alive"
        && n != "x-request-id"
        && !n.starts_with("proxy-")
        && !n.starts_with("x-forwarded-")
}

/// An upstream response body, read from the connection as the client side asks for
/// it. Read to its end, its connection goes back to the pool (once any upload still
/// going has finished); dropped before that, the connection is closed, since HTTP/1.1
/// cannot abandon a response midway.
#[derive(Debug)]
pub struct PooledBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    /// Where the connection goes at the end while an upload still runs on its write
    /// half: to the upload's task, which puts it back together and back in the pool.
    upload_task: Option<oneshot::Sender<Conn>>,
    pool: Arc<PoolInner>,
}

impl PooledBody {
    /// The body after a response head; `upload`, when the request is still going up,
    /// goes on in a task of its own on the connection's write half.
    pub(crate) fn new(
        mut conn: Conn,
        framing: Framing,
        mut keep_alive: bool,
        upload: Option<Upload>,
        pool: Arc<PoolInner>,
    ) -> Self {
        let upload_task = match upload {
            None => None,
            Some(upload) => {
                let task = conn
                    .split_writer()
                    .and_then(|write| finish_upload(pool.clone(), write, upload));
                // Without its task the upload stops here, and so does the connection.
                keep_alive &= task.is_some();
                task
            }
        };
        let mut body = Self {
            conn: Some(conn),
            framing,
            keep_alive,
            upload_task,
            pool,
        };
        if matches!(framing, Framing::Done) {
            body.release();
        }
        body
    }

    /// The body has ended: the connection goes back if the exchange was clean.
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.keep_alive || !conn.read.is_empty() {
            // Not reused: an upload still going has no one left to answer it (a close
            // means the upstream closes after its response), so its task stops too.
            self.upload_task = None;
            return;
        }
        match self.upload_task.take() {
            None => self.pool.put(conn),
            // If the upload failed meanwhile, its task is gone and the connection with it.
            Some(task) => {
                let _ = task.send(conn);
            }
        }
    }

    fn fail(&mut self, e: ExchangeError) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        self.conn = None;
        self.upload_task = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(e)))
    }

    fn data(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        if matches!(self.framing, Framing::Done) {
            self.release();
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

/// Sends the rest of an upload the upstream answered before it ended, in a task of its
/// own: the client may send its whole body before it reads the answer, so the upload
/// cannot wait on the response being read. Once both are over, cleanly, the task puts
/// the connection back together and back in the pool. `None` outside a runtime.
fn finish_upload(
    pool: Arc<PoolInner>,
    mut write: OwnedWriteHalf,
    mut upload: Upload,
) -> Option<oneshot::Sender<Conn>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = oneshot::channel::<Conn>();
    let timeout = pool.settings.request_timeout;
    runtime.spawn(async move {
        let mut scratch = BytesMut::new();
        let mut rx = rx;
        let mut conn = None;
        let (mut moved, mut stall_at, mut timer) = (None, Instant::now(), None);
        // The upload goes on while the response is read; a response that fails, is
        // dropped early or ends without keep-alive drops the sender, and the upload
        // stops with it (else the socket stays open for as long as either peer stalls).
        // So does an upload that moves no byte for the upstream's `request_timeout`
        // (an upstream that stopped reading, or a client that stopped sending): the
        // client's body, which holds its connection busy, is let go with it.
        let sent = std::future::poll_fn(|cx| {
            if conn.is_none() {
                match Pin::new(&mut rx).poll(cx) {
                    Poll::Ready(Ok(c)) => conn = Some(c),
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(None)),
                    Poll::Pending => {}
                }
            }
            let polled = upload.poll_send(&mut write, &mut scratch, cx);
            if polled.is_pending() {
                rearm_on_progress(&mut moved, upload.progress().0, &mut stall_at, timeout);
                if poll_timer(&mut timer, cx, stall_at).is_ready() {
                    return Poll::Ready(Err(None));
                }
            }
            polled.map_err(Some)
        })
        .await;
        if sent.is_err() {
            return;
        }
        // The response's end, when it ends cleanly.
        let mut conn = match conn {
            Some(conn) => conn,
            None => match rx.await {
                Ok(conn) => conn,
                Err(_) => return,
            },
        };
        if conn.reunite(write) {
            pool.put(conn);
        }
    });
    Some(tx)
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing {
                Framing::Done => {
                    this.release();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if let Some((frame, left)) = take_up_to(&mut conn.read, left) {
                        this.framing = if left == 0 {
                            Framing::Done
                        } else {
                            Framing::Length(left)
                        };
                        return this.data(frame);
                    }
                }
                Framing::UntilClose => {
                    if !conn.read.is_empty() {
                        let frame = conn.read.split().freeze();
                        return this.data(frame);
                    }
                }
                Framing::Chunked(state) => match step_chunked(&mut conn.read, state) {
                    Ok(Step::Next(state)) => {
                        this.framing = Framing::Chunked(state);
                        continue;
                    }
                    Ok(Step::Data(frame, state)) => {
                        this.framing = Framing::Chunked(state);
                        return this.data(frame);
                    }
                    Ok(Step::End(trailers)) => {
                        this.framing = Framing::Done;
                        this.release();
                        return match trailers {
                            Some(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                            None => Poll::Ready(None),
                        };
                    }
                    Ok(Step::More) => {}
                    Err(e) => return this.fail(e),
                },
            }
            // A response that comes whole with its head (most do) never gets here.
            let filled = match conn.poll_fill(cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    // As nginx's `proxy_read_timeout`: an upstream that stops halfway
                    // through a body (alive, but sending nothing) is given up on, and
                    // the response is cut rather than held open for ever.
                    let timeout = this.pool.settings.request_timeout;
                    let deadline = *conn
                        .silent_until
                        .get_or_insert_with(|| deadline_after(Instant::now(), timeout));
                    ready!(conn.poll_deadline(cx, deadline));
                    return this.fail(ExchangeError::Stalled);
                }
            };
            conn.silent_until = None;
            match filled {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(ExchangeError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// A chunk-size line (RFC 9112 7.1): `1*HEXDIG`, then optional whitespace and
/// extensions, then CRLF; `Ok(Some((length, size)))` once complete, `Ok(None)` while
/// more is needed. A line without digits, a bare CR or LF, or a control byte in an
/// extension is refused (httparse's `parse_chunk_size` reads an empty line as size 0
/// and lets a bare LF through inside an extension).
fn parse_chunk_line(buf: &[u8]) -> Result<Option<(usize, u64)>, ()> {
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(&b) = buf.get(i) {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        // A digit more would overflow a u64 (leading zeros never do: RFC 9112 7.1
        // allows any number of digits, and the line's length is bounded by the caller).
        if size >> 60 != 0 {
            return Err(());
        }
        size = size << 4 | u64::from(digit);
        i += 1;
    }
    if i == buf.len() {
        return Ok(None);
    }
    if i == 0 {
        return Err(());
    }
    let mut in_ext = false;
    while let Some(&b) = buf.get(i) {
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((i + 2, size))),
                    Some(_) => Err(()),
                }
            }
            b' ' | b'\t' | b';' => in_ext |= b == b';',
            0x21..=0x7e | 0x80..=0xff if in_ext => {}
            _ => return Err(()),
        }
        i += 1;
    }
    Ok(None)
}

/// True when an LF in `bytes` has no CR before it.
fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// What one step of the chunked decoder found.
enum Step {
    /// Moved on; look again.
    Next(Chunk),
    Data(Bytes, Chunk),
    /// The last chunk and trailer section are read.
    End(Option<HeaderMap>),
    /// Needs more bytes.
    More,
}

/// Up to `left` bytes off the front of `read`, and how many are left after them;
/// `None` while `read` is empty.
fn take_up_to(read: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if read.is_empty() {
        return None;
    }
    let n = read.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    Some((read.split_to(n).freeze(), left - n as u64))
}

fn step_chunked(read: &mut BytesMut, state: Chunk) -> Result<Step, ExchangeError> {
    match state {
        Chunk::Size => match parse_chunk_line(read) {
            Ok(Some((used, size))) if used <= MAX_CHUNK_LINE => {
                read.advance(used);
                Ok(Step::Next(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                }))
            }
            Ok(None) if read.len() < MAX_CHUNK_LINE => Ok(Step::More),
            _ => Err(ExchangeError::Malformed("invalid chunk size")),
        },
        Chunk::Data(left) => match take_up_to(read, left) {
            None => Ok(Step::More),
            Some((frame, 0)) => Ok(Step::Data(frame, Chunk::DataEnd)),
            Some((frame, left)) => Ok(Step::Data(frame, Chunk::Data(left))),
        },
        Chunk::DataEnd => {
            if read.len() < 2 {
                return Ok(Step::More);
            }
            if &read[..2] != b"\r\n" {
                return Err(ExchangeError::Malformed("missing CRLF after chunk data"));
            }
            read.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailers => {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            match httparse::parse_headers(read, &mut slots) {
                // httparse takes a bare LF for a line end; the chunked framing does not.
                Ok(httparse::Status::Complete((used, _))) if has_bare_lf(&read[..used]) => {
                    Err(ExchangeError::Malformed("invalid trailer section"))
                }
                Ok(httparse::Status::Complete((used, _))) if used > MAX_HEAD => {
                    Err(ExchangeError::HeadTooLarge)
                }
                Ok(httparse::Status::Complete((used, fields))) => {
                    let mut trailers = HeaderMap::new();
                    for f in fields.iter() {
                        // Filtered as a request's are; an h2 client's stream would be
                        // reset over a connection-specific field.
                        let Ok(name) = HeaderName::from_bytes(f.name.as_bytes()) else {
                            continue;
                        };
                        if !trailer_allowed(&name) {
                            continue;
                        }
                        if let Ok(value) = HeaderValue::from_bytes(f.value) {
                            trailers.append(name, value);
                        }
                    }
                    read.advance(used);
                    Ok(Step::End((!trailers.is_empty()).then_some(trailers)))
                }
                Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => Ok(Step::More),
                Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                    Err(ExchangeError::HeadTooLarge)
                }
                Err(_) => Err(ExchangeError::Malformed("invalid trailer section")),
            }
        }
    }
}

/// `timeout` after `from`; one too far away to represent is capped, as `sleep` does.
pub(crate) fn deadline_after(from: Instant, timeout: Duration) -> Instant {
    from.checked_add(timeout)
        .unwrap_or_else(|| from + Duration::from_secs(86_400 * 365 * 30))
}

/// A stall's deadline: moved to `wait` from now whenever `moved` (a count that grows
/// with every step forward) differs from `last`, so only a stretch without progress
/// reaches it.
pub(crate) fn rearm_on_progress(
    last: &mut Option<u64>,
    moved: u64,
    deadline: &mut Instant,
    wait: Duration,
) {
    if *last != Some(moved) {
        *last = Some(moved);
        *deadline = deadline_after(Instant::now(), wait);
    }
}

/// Polls `timer` for `deadline`, making it on first use and moving it otherwise.
pub(crate) fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    deadline: Instant,
) -> Poll<()> {
    match timer {
        Some(t) => {
            if t.deadline() != deadline {
                t.as_mut().reset(deadline);
            }
            t.as_mut().poll(cx)
        }
        None => timer
            .insert(Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut()
            .poll(cx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(fields: &[(&str, &str)], method: Method, status: u16, v: Version) -> String {
        let mut meta = HeadMeta::default();
        for (name, value) in fields {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
            if let Err(e) = meta.note(&name, value.as_bytes()) {
                return format!("error: {e}");
            }
        }
        let status = StatusCode::from_u16(status).expect("status");
        match meta.framing(&method, status, v) {
            Ok((framing, keep_alive)) => format!("{framing:?} keep_alive={keep_alive}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = || Method::GET;
        let v11 = Version::HTTP_11;
        // Header fields, request method, status, version: the framing wanted.
        type Case<'a> = (&'a [(&'a str, &'a str)], Method, u16, Version, &'a str);
        let cases: &[Case<'_>] = &[
            (&[("content-length", "5")], get(), 200, v11, "Length(5) keep_alive=true"),
            (&[("content-length", "5, 5")], get(), 200, v11, "Length(5) keep_alive=true"),
            (&[("content-length", "5, 6")], get(), 200, v11, "error: the upstream sent a malformed response: conflicting Content-Length"),
            (&[("content-length", "-1")], get(), 200, v11, "error: the upstream sent a malformed response: invalid Content-Length"),
            (&[("content-length", "99999999999999999999")], get(), 200, v11, "error: the upstream sent a malformed response: invalid Content-Length"),
            (&[("content-length", "0")], get(), 200, v11, "Done keep_alive=true"),
            (&[("content-length", "5")], Method::HEAD, 200, v11, "Done keep_alive=true"),
            (&[("content-length", "5")], get(), 304, v11, "Done keep_alive=true"),
            (&[], get(), 204, v11, "Done keep_alive=true"),
            (&[], get(), 200, v11, "UntilClose keep_alive=false"),
            (&[("transfer-encoding", "Chunked")], get(), 200, v11, "Chunked(Size) keep_alive=true"),
            (&[("transfer-encoding", " , chunked ,")], get(), 200, v11, "Chunked(Size) keep_alive=true"),
            (&[("transfer-encoding", ""), ("transfer-encoding", "chunked")], get(), 200, v11, "Chunked(Size) keep_alive=true"),
            // The gateway decodes `chunked` only; any other coding would reach the
            // client undecoded, its Transfer-Encoding (hop-by-hop) gone.
            (&[("transfer-encoding", "gzip, chunked")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "gzip"), ("transfer-encoding", "Chunked")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "chunked, gzip")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "chunked, chunked")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "gzip")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            (&[("transfer-encoding", "chunked;x=1")], get(), 200, v11, "error: the upstream sent a malformed response: unsupported Transfer-Encoding"),
            // No body to decode: the codings do not matter.
            (&[("transfer-encoding", "gzip, chunked")], Method::HEAD, 200, v11, "Done keep_alive=true"),
            (&[("transfer-encoding", "chunked"), ("content-length", "3")], get(), 200, v11, "Chunked(Size) keep_alive=false"),
            (&[("transfer-encoding", "chunked")], get(), 200, Version::HTTP_10, "error: the upstream sent a malformed response: Transfer-Encoding in an HTTP/1.0 response"),
            (&[("content-length", "1")], get(), 200, Version::HTTP_10, "Length(1) keep_alive=false"),
            (&[("content-length", "1"), ("connection", "Keep-Alive")], get(), 200, Version::HTTP_10, "Length(1) keep_alive=true"),
            (&[("content-length", "1"), ("connection", "foo, close")], get(), 200, v11, "Length(1) keep_alive=false"),
        ];
        for (fields, method, status, version, want) in cases {
            let got = framing_of(fields, method.clone(), *status, *version);
            assert_eq!(&got, want, "{fields:?} {method} {status}");
        }
    }

    #[test]
    fn chunk_size_lines_follow_rfc_9112() {
        let ok: &[(&[u8], usize, u64)] = &[
            (b"5\r\n", 3, 5),
            (b"0\r\n\r\n", 3, 0),
            (b"aF;name=value\r\nxx", 15, 0xaf),
            (b"1 ; a=\"b c\"\r\n", 13, 1),
            (b"ffffffffffffffff\r\n", 18, u64::MAX),
            (b"0000000000000010\r\n", 18, 16),
        ];
        for (line, used, size) in ok {
            assert_eq!(parse_chunk_line(line), Ok(Some((*used, *size))), "{line:?}");
        }
        for partial in [&b""[..], b"5", b"5\r", b"5;ext", b"5 "] {
            assert_eq!(parse_chunk_line(partial), Ok(None), "{partial:?}");
        }
        for bad in [
            &b"\r\n"[..],
            b" \r\n",
            b";x\r\n",
            b"5\n",
            b"5;a\nb\r\n",
            b"5\rx",
            b"5x\r\n",
            b"5;a\x00\r\n",
            b"10000000000000000\r\n",
            b"-1\r\n",
        ] {
            assert_eq!(parse_chunk_line(bad), Err(()), "{bad:?}");
        }
    }

    /// A `Conn` on a loopback connection, and the socket at its other end.
    async fn connected() -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (Conn::new(client), server)
    }

    /// The head reaches the proxy without its hop-by-hop fields, those `Connection`
    /// names before or after itself among them, while what they say about framing and
    /// keep-alive still counts.
    #[tokio::test]
    async fn a_response_head_comes_without_its_hop_by_hop_fields() {
        let (mut conn, _server) = connected().await;
        conn.read.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nx-early: 1\r\nConnection: X-Early, close\r\n\
              keep-alive: timeout=5\r\nproxy-authenticate: Basic\r\nupgrade: h2c\r\n\
              te: trailers\r\ntransfer-encoding: chunked\r\nconnection: x-late\r\n\
              x-late: 2\r\nx-kept: yes\r\n\r\n",
        );
        let head = conn
            .parse_head(&Method::GET)
            .expect("valid")
            .expect("whole");
        let names: Vec<_> = head.response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        assert!(!head.keep_alive);
        assert!(
            matches!(head.framing, Framing::Chunked(_)),
            "{:?}",
            head.framing
        );

        conn.read.extend_from_slice(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        );
        let head = conn
            .parse_head(&Method::GET)
            .expect("valid")
            .expect("whole");
        let names: Vec<_> = head.response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-length"]);
        assert!(head.keep_alive);
    }

    /// Heads written together on this test's thread, or `None` (the test has nothing
    /// to check) where io_uring is unavailable; `.ci/run` sets
    /// `GATEWAY_REQUIRE_IO_URING`, so that there it must be available.
    fn together_here() -> Option<together::Together> {
        let guard = together::enable();
        if guard.is_none() {
            assert!(
                std::env::var_os("GATEWAY_REQUIRE_IO_URING").is_none(),
                "io_uring is unavailable"
            );
            eprintln!("io_uring is unavailable here: nothing to check");
        }
        guard
    }

    fn only_a_head(text: &str) -> Upload {
        Upload::Head {
            head: Bytes::copy_from_slice(text.as_bytes()),
            sent: 0,
            replay: true,
        }
    }

    async fn send(mut conn: Conn, mut upload: Upload) -> (Conn, Result<(), ExchangeError>) {
        let sent = std::future::poll_fn(|cx| conn.poll_send(&mut upload, cx)).await;
        (conn, sent)
    }

    /// `n` connections from [`connected`].
    async fn connected_many(n: usize) -> (Vec<Conn>, Vec<TcpStream>) {
        let mut pairs = Vec::new();
        for _ in 0..n {
            pairs.push(connected().await);
        }
        pairs.into_iter().unzip()
    }

    /// All the server side reads until the client closes.
    async fn read_all(server: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(server, &mut all);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("read in time")
            .expect("read");
        all
    }

    async fn read_exactly(server: &mut TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut buf))
            .await
            .expect("read in time")
            .expect("read");
        buf
    }

    /// The heads that the tasks of one turn of the run queue send go out in one
    /// system call, each whole to its own connection.
    #[tokio::test]
    async fn heads_sent_in_one_turn_go_out_in_one_system_call() {
        let Some(_together) = together_here() else {
            return;
        };
        let (conns, mut servers) = connected_many(8).await;
        let before = together::submissions();
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let head = only_a_head(&format!("GET /{i} HTTP/1.1\r\nhost: a\r\n\r\n"));
                tokio::spawn(send(conn, head))
            })
            .collect();
        for (i, server) in servers.iter_mut().enumerate() {
            let want = format!("GET /{i} HTTP/1.1\r\nhost: a\r\n\r\n");
            assert_eq!(read_exactly(server, want.len()).await, want.as_bytes());
            // A task whose head went whole is woken by its answer, as in an exchange.
            tokio::io::AsyncWriteExt::write_all(server, b"H")
                .await
                .expect("answer");
        }
        for task in tasks {
            let (_conn, sent) = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("in time")
                .expect("task");
            sent.expect("sent");
        }
        assert_eq!(together::submissions() - before, 1);
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Wakes {
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A connection closed while its head waits in the queue takes the head off it:
    /// nothing reaches that upstream, and the task that was to write the queue (the
    /// first to queue, woken to come back) hands that on to the next in line.
    #[tokio::test]
    async fn a_head_queued_on_a_connection_that_closes_is_never_written() {
        let Some(_together) = together_here() else {
            return;
        };
        let (mut conns, mut servers) = connected_many(3).await;
        let wakes: Vec<Arc<Wakes>> = (0..3).map(|_| Arc::default()).collect();
        let wakers: Vec<Waker> = wakes.iter().map(|w| Waker::from(w.clone())).collect();
        let mut uploads: Vec<Upload> = (0..3)
            .map(|i| only_a_head(&format!("GET /{i} HTTP/1.1\r\nhost: a\r\n\r\n")))
            .collect();
        let before = together::submissions();
        for (i, (conn, upload)) in conns.iter_mut().zip(&mut uploads).enumerate() {
            let mut cx = Context::from_waker(&wakers[i]);
            assert!(conn.poll_send(upload, &mut cx).is_pending());
        }
        assert_eq!(
            wakes.iter().map(|w| w.count()).collect::<Vec<_>>(),
            [1, 0, 0]
        );

        let mut conns = conns.into_iter();
        drop(conns.next());
        assert_eq!(
            wakes[1].count(),
            1,
            "the next in line is woken to write the queue"
        );
        let mut conns: Vec<Conn> = conns.collect();
        let mut cx = Context::from_waker(&wakers[1]);
        let sent = conns[0].poll_send(&mut uploads[1], &mut cx);
        assert!(matches!(sent, Poll::Ready(Ok(()))));
        assert_eq!(together::submissions() - before, 1);
        assert_eq!(
            wakes[2].count(),
            0,
            "a whole write wakes no one: the answer will"
        );
        let mut cx = Context::from_waker(&wakers[2]);
        let sent = conns[1].poll_send(&mut uploads[2], &mut cx);
        assert!(matches!(sent, Poll::Ready(Ok(()))));
        assert_eq!(together::submissions() - before, 1);

        assert_eq!(read_all(&mut servers[0]).await, b"", "nothing reached it");
        for (i, server) in servers.iter_mut().enumerate().skip(1) {
            let want = format!("GET /{i} HTTP/1.1\r\nhost: a\r\n\r\n");
            assert_eq!(read_exactly(server, want.len()).await, want.as_bytes());
        }
    }

    /// A connection dropped on another thread than the one whose queue holds its head
    /// still takes the head off that queue: its descriptor, closed and perhaps reused
    /// by the next connection, never receives it.
    #[tokio::test]
    async fn a_head_queued_on_a_connection_dropped_elsewhere_is_never_written() {
        let Some(_together) = together_here() else {
            return;
        };
        let (mut conn, mut server) = connected().await;
        let mut upload = only_a_head("GET /stale HTTP/1.1\r\nhost: a\r\n\r\n");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(conn.poll_send(&mut upload, &mut cx).is_pending());
        std::thread::spawn(move || drop(conn))
            .join()
            .expect("dropped on another thread");

        let (mut next, mut next_server) = connected().await;
        let sent = std::future::poll_fn(|cx| next.poll_send(&mut upload, cx));
        tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("sent in time")
            .expect("sent");
        drop(next);
        for (server, want) in [
            (&mut server, &b""[..]),
            (&mut next_server, b"GET /stale HTTP/1.1\r\nhost: a\r\n\r\n"),
        ] {
            let all = read_all(server).await;
            assert_eq!(all, want);
        }
    }

    /// A connection that has something to read already (an early answer, a close)
    /// does not wait for the turn's other heads: its head goes at once.
    #[tokio::test]
    async fn a_head_on_a_connection_with_something_to_read_goes_at_once() {
        let Some(_together) = together_here() else {
            return;
        };
        let (mut conn, mut server) = connected().await;
        tokio::io::AsyncWriteExt::write_all(&mut server, b"HTTP/1.1 408")
            .await
            .expect("early");
        let Io::Whole(io) = &conn.io else {
            panic!("a new connection is whole");
        };
        let ready = tokio::time::timeout(Duration::from_secs(10), io.readable()).await;
        ready.expect("readable in time").expect("readable");
        let before = together::submissions();
        let mut upload = only_a_head("GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            conn.poll_send(&mut upload, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(together::submissions() - before, 1);
        let want = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(read_exactly(&mut server, want.len()).await, want);
    }

    /// A head larger than the socket takes at once goes partly in the queue's write
    /// and the rest as usual, in order and whole.
    #[tokio::test]
    async fn a_head_partly_written_together_is_finished_as_usual() {
        let Some(_together) = together_here() else {
            return;
        };
        let (conn, mut server) = connected().await;
        let big: Vec<u8> = (0..32usize << 20).map(|i| (i % 251) as u8).collect();
        let upload = Upload::Head {
            head: Bytes::from(big.clone()),
            sent: 0,
            replay: true,
        };
        let before = together::submissions();
        let task = tokio::spawn(send(conn, upload));
        assert!(read_exactly(&mut server, big.len()).await == big);
        task.await.expect("task").1.expect("sent");
        assert_eq!(together::submissions() - before, 1);
    }

    /// A submission that fails before the kernel took the heads leaves them unsent:
    /// each goes as a plain write, once; the thread writes later heads one by one.
    #[tokio::test]
    async fn a_head_whose_submission_failed_goes_once_as_usual() {
        let Some(_together) = together_here() else {
            return;
        };
        let (mut conn, mut server) = connected().await;
        together::fail_next_submission(false);
        let mut upload = only_a_head("GET /1 HTTP/1.1\r\nhost: a\r\n\r\n");
        let sent = std::future::poll_fn(|cx| conn.poll_send(&mut upload, cx)).await;
        sent.expect("sent");
        assert!(upload.is_sent());
        drop(conn);
        let (mut conn, mut second) = connected().await;
        let mut upload = only_a_head("GET /2 HTTP/1.1\r\nhost: a\r\n\r\n");
        let mut cx = Context::from_waker(Waker::noop());
        let sent = conn.poll_send(&mut upload, &mut cx);
        assert!(
            matches!(sent, Poll::Ready(Ok(()))) && !conn.is_queued(),
            "a head on a thread whose ring failed is written at once"
        );
        drop(conn);
        for (server, path) in [(&mut server, "1"), (&mut second, "2")] {
            let all = read_all(server).await;
            assert_eq!(
                all,
                format!("GET /{path} HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes()
            );
        }
    }

    /// When the ring fails after it took the heads, whether the kernel wrote one is
    /// not known: it counts as sent and never goes again, nor to another connection.
    #[tokio::test]
    async fn a_head_whose_fate_is_unknown_is_never_sent_twice() {
        let Some(_together) = together_here() else {
            return;
        };
        let (mut conn, mut server) = connected().await;
        together::fail_next_submission(true);
        let mut upload = only_a_head("GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        let sent = std::future::poll_fn(|cx| conn.poll_send(&mut upload, cx)).await;
        sent.expect("counted as sent");
        assert!(upload.is_sent());
        assert!(!upload.rewind(), "not to be replayed elsewhere");
        drop(conn);
        let all = read_all(&mut server).await;
        assert_eq!(all, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", "once");
    }

    /// A turn of more heads than one submission takes goes in several; when the ring
    /// fails on the first (after taking its heads), those count as sent and the later
    /// ones, which never reached the ring, are woken to go as plain writes: every
    /// head reaches its upstream once.
    #[tokio::test]
    async fn heads_after_a_failed_submission_go_once_as_plain_writes() {
        let Some(_together) = together_here() else {
            return;
        };
        const N: usize = 130;
        let (mut conns, mut servers) = connected_many(N).await;
        let wakes: Vec<Arc<Wakes>> = (0..N).map(|_| Arc::default()).collect();
        let wakers: Vec<Waker> = wakes.iter().map(|w| Waker::from(w.clone())).collect();
        let head = |i: usize| format!("GET /{i} HTTP/1.1\r\nhost: a\r\n\r\n");
        let mut uploads: Vec<Upload> = (0..N).map(|i| only_a_head(&head(i))).collect();
        for (i, (conn, upload)) in conns.iter_mut().zip(&mut uploads).enumerate() {
            let mut cx = Context::from_waker(&wakers[i]);
            assert!(conn.poll_send(upload, &mut cx).is_pending());
        }
        together::fail_next_submission(true);
        for (i, (conn, upload)) in conns.iter_mut().zip(&mut uploads).enumerate() {
            if i >= 128 {
                assert!(wakes[i].count() > 0, "head {i} is woken to go on");
            }
            let mut cx = Context::from_waker(&wakers[i]);
            assert!(matches!(
                conn.poll_send(upload, &mut cx),
                Poll::Ready(Ok(()))
            ));
        }
        assert!(
            uploads[..128].iter_mut().all(|u| !u.rewind()),
            "never replayed"
        );
        drop(conns);
        for (i, server) in servers.iter_mut().enumerate() {
            assert_eq!(read_all(server).await, head(i).as_bytes(), "head {i} once");
        }
    }

    /// A write the upstream refuses (it reset the connection) fails the exchange as
    /// a plain write would.
    #[tokio::test]
    async fn a_refused_write_in_the_queue_is_an_error() {
        let Some(_together) = together_here() else {
            return;
        };
        let (conn, server) = connected().await;
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(server);
        let before = together::submissions();
        let (_conn, sent) = send(conn, only_a_head("GET / HTTP/1.1\r\nhost: a\r\n\r\n")).await;
        match sent {
            Err(ExchangeError::Io(e)) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{e}"
            ),
            other => panic!("expected a write error, got {other:?}"),
        }
        assert_eq!(together::submissions() - before, 1);
    }

    /// Reads grow while they fill the buffer (as hyper's do), and a connection going
    /// idle lets the grown buffer go.
    #[tokio::test]
    async fn a_read_buffer_grown_for_a_large_body_is_let_go_when_idle() {
        use tokio::io::AsyncWriteExt;
        const LEN: usize = 1 << 20;
        let (mut conn, mut server) = connected().await;
        tokio::spawn(async move { server.write_all(&vec![7u8; LEN]).await });
        let mut total = 0;
        while total < LEN {
            let n = std::future::poll_fn(|cx| conn.poll_fill(cx))
                .await
                .expect("read");
            assert!(n > 0, "ended after {total} bytes");
            total += n;
            conn.read.clear();
        }
        assert!(conn.read_size > MIN_READ, "{}", conn.read_size);
        assert!(conn.read_size <= MAX_READ, "{}", conn.read_size);
        conn.idle();
        assert_eq!((conn.read_size, conn.read.capacity()), (MIN_READ, 0));
    }

    /// A read buffer grown for a long head (reads that never filled it, so no
    /// doubling) is let go too when the connection goes idle.
    #[tokio::test]
    async fn a_read_buffer_grown_for_a_long_head_is_let_go_when_idle() {
        use tokio::io::AsyncWriteExt;
        let (mut conn, mut server) = connected().await;
        // 60 KiB of head arriving in pieces smaller than a read.
        for _ in 0..30 {
            server.write_all(&[b'h'; 2048]).await.expect("write");
            let n = std::future::poll_fn(|cx| conn.poll_fill(cx))
                .await
                .expect("read");
            assert!(n > 0);
        }
        assert!(
            conn.read.capacity() > 4 * MIN_READ,
            "{}",
            conn.read.capacity()
        );
        conn.read.clear();
        conn.idle();
        assert!(conn.read.capacity() <= MIN_READ, "{}", conn.read.capacity());
    }

    /// Whatever heads follow each other, a cached name is the one parsing gives.
    #[test]
    fn cached_field_names_are_the_parsed_names() {
        use rand::{Rng, SeedableRng};
        let long = "x-".repeat(300);
        let pool: &[&str] = &[
            "Content-Type",
            "content-type",
            "Content-Length",
            "Server",
            "Date",
            "X-Custom",
            "x-custom",
            "Set-Cookie",
            "bad name",
            "",
            &long,
        ];
        let mut cache = NameCache::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut hits = 0;
        for _ in 0..5_000 {
            // Mostly the same head again, sometimes another.
            let same = rng.random_ratio(3, 4);
            let len = if same { 5 } else { rng.random_range(0..40) };
            for i in 0..len {
                let raw = if same {
                    pool[i % 5]
                } else {
                    pool[rng.random_range(0..pool.len())]
                };
                let want = HeaderName::from_bytes(raw.as_bytes()).ok();
                let before = cache.names.get(i).map(|(_, n)| n.clone());
                let got = cache.name(i, raw.as_bytes()).ok();
                assert_eq!(got, want, "field {i}: {raw:?}");
                hits += usize::from(before.is_some() && before == got);
            }
            assert!(cache.names.len() <= NameCache::MAX_NAMES);
            assert!(cache.raw.len() <= NameCache::MAX_BYTES);
        }
        assert!(hits > 10_000, "the cache served {hits} names");
    }

    /// A socket that takes `room` bytes and then fails, as an upstream that closes
    /// partway through a request does; what it took is kept.
    struct CutOff {
        room: usize,
        took: Vec<u8>,
    }

    impl AsyncWrite for CutOff {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.room == 0 {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.took.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Sends `upload` into a socket that breaks after `room` bytes; the error and
    /// the bytes that left.
    fn send_cut_off(upload: &mut Upload, room: usize) -> (bool, Vec<u8>) {
        let mut io = CutOff {
            room,
            took: Vec::new(),
        };
        let mut scratch = BytesMut::new();
        let mut cx = Context::from_waker(Waker::noop());
        let failed = match upload.poll_send(&mut io, &mut scratch, &mut cx) {
            Poll::Ready(Ok(())) => false,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => panic!("a socket that never blocks left the upload pending"),
        };
        (failed, io.took)
    }

    /// The retry rule on a connection cut partway through the request: any request
    /// of which nothing left goes again; one partly sent goes again from its first
    /// byte only if it is a head-only request, idempotent and unanswered.
    #[test]
    fn a_request_cut_off_partway_is_replayed_only_when_that_is_safe() {
        const HEAD: &[u8] = b"GET /a HTTP/1.1\r\nhost: up\r\n\r\n";
        let head = |replay| Upload::Head {
            head: Bytes::from_static(HEAD),
            sent: 0,
            replay,
        };

        // Idempotent: cut after 5 bytes, then sent whole from the start.
        let mut get = head(true);
        assert_eq!(send_cut_off(&mut get, 5), (true, HEAD[..5].to_vec()));
        assert!(!get.is_sent());
        assert!(get.abandon(), "part of it had left");
        assert!(get.rewind(), "an idempotent head goes again");
        assert_eq!(send_cut_off(&mut get, usize::MAX), (false, HEAD.to_vec()));
        assert!(get.is_sent());

        // Answered once: never again, even if idempotent.
        get.answered();
        assert!(!get.rewind());

        // Not idempotent: once a byte has left, it stays cut off...
        let mut post = head(false);
        assert_eq!(send_cut_off(&mut post, 1), (true, HEAD[..1].to_vec()));
        assert!(!post.rewind(), "a POST half sent is not sent twice");
        // ...but a connection that took nothing at all leaves it free to go.
        let mut post = head(false);
        assert_eq!(send_cut_off(&mut post, 0), (true, Vec::new()));
        assert!(!post.abandon());
        assert!(post.rewind());

        // A body: the same, counted in bytes written of head and body.
        let body = || {
            let mut queue: [Bytes; OUTBOX] = Default::default();
            queue[0] = Bytes::from_static(b"POST /a HTTP/1.1\r\ncontent-length: 4\r\n\r\n");
            queue[1] = Bytes::from_static(b"data");
            Upload::Body(Box::new(Streaming {
                queue,
                start: 0,
                end: 2,
                body: None,
                chunked: false,
                written: 0,
                received: 0,
            }))
        };
        let mut cut = body();
        let (failed, took) = send_cut_off(&mut cut, 41);
        assert!(failed && took.len() == 41, "{failed} {}", took.len());
        assert!(cut.abandon());
        assert!(!cut.rewind(), "a body partly sent is not sent twice");
        let mut untouched = body();
        assert_eq!(send_cut_off(&mut untouched, 0), (true, Vec::new()));
        assert!(!untouched.abandon());
        assert!(untouched.rewind());
        let (failed, took) = send_cut_off(&mut untouched, usize::MAX);
        assert!(!failed && took.ends_with(b"\r\n\r\ndata"), "{took:?}");
        assert!(untouched.is_sent());
    }

    #[test]
    fn lengths_are_plain_decimal_digits() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(
            parse_u64(b"18446744073709551"),
            Some(18_446_744_073_709_551)
        );
        for bad in [&b""[..], b"+1", b"1 2", b"0x10", b"12345678901234567890"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
