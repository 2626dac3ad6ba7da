//! The proxy path: route, pick an endpoint, forward with streaming bodies, and turn
//! every failure into a gateway response.
//!
//! Per request: one snapshot load, one route scan, one atomic pick. The request and
//! response bodies are passed through frame by frame.

pub mod body;
pub mod client;
pub mod headers;
pub mod rescue;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, EXPECT, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::balance::EndpointStats;
use crate::routes::Route;
use crate::server::{Busy, StreamWatch};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use body::{BodyError, LimitedBody};
use client::{deadline_after, rearm_on_progress, ClientError, PooledBody, SendFuture};
use rescue::{Blame, ProxyError};

pin_project! {
    /// What the proxy sends back: an upstream's streamed body or the gateway's own.
    /// It keeps its client connection counted busy until hyper has taken all of it (the
    /// connection then watches its writes), so the idle timeout runs between requests.
    pub struct ResponseBody {
        #[pin]
        inner: Either<PooledBody, Full<Bytes>>,
        busy: Option<Busy>,
        // HTTP/2, an upstream's body: whether hyper is taking its frames.
        watch: Option<StreamWatch>,
    }
}

impl ResponseBody {
    /// A body the gateway made itself (an error document).
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            inner: Either::Right(Full::new(bytes)),
            busy: None,
            watch: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = <Either<PooledBody, Full<Bytes>> as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(watch) = this.watch.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        watch.taken();
        let frame = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(busy)) = (&frame, this.busy.as_ref()) {
            if f.is_data() {
                busy.stream_waits(watch);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Facts about the client connection a request came in on.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// The peer IP, pre-rendered once per connection for `X-Forwarded-For`.
    pub(crate) ip_header: HeaderValue,
    pub(crate) scheme: &'static str,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, scheme: &'static str) -> Self {
        let ip = addr.ip().to_canonical().to_string();
        Self {
            addr,
            ip_header: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            scheme,
        }
    }
}

/// What the access log and metrics learn while a request is handled.
#[derive(Default)]
struct Trace {
    route: Option<Arc<Route>>,
    endpoint: Option<http::uri::Authority>,
}

/// Handles one request end to end; never fails, never panics on input. `busy` marks
/// the client connection busy until hyper has taken the whole response.
///
/// Everything up to handing the request to an upstream connection runs here, before
/// the returned future is first polled, so the future carries only what waiting for
/// the response needs: hyper keeps one such future per connection and moves each
/// request's into place, so its size is paid per connection and per request.
pub(crate) fn handle(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    req: Request<Incoming>,
    busy: Busy,
) -> Handling {
    let start = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let scan = headers::Scan::of(req.headers());
    let request_id = shared.ids.for_request(req.headers(), &scan);
    let method = req.method().clone();
    let mut trace = Trace::default();
    let arrival = Arrival {
        start,
        scan: &scan,
        request_id: &request_id,
    };
    let stage = match dispatch(&snapshot, &peer, req, arrival, &busy, &mut trace) {
        Ok(exchange) => Stage::Sent { exchange },
        Err(e) => Stage::Answered {
            result: Some(Err(e)),
        },
    };
    Handling {
        stage,
        done: Done {
            shared,
            peer,
            snapshot,
            method,
            trace,
            request_id,
            start,
            busy: Some(busy),
        },
    }
}

/// The response to one request, from [`handle`]. Its error type is `Infallible`
/// because every failure becomes a gateway response. Nothing in it is pinned: the
/// exchange's timer is boxed on its upstream connection.
///
/// An upstream's answer waits one turn of the worker's run queue before it goes to
/// hyper, which writes it to the client. The connections woken in one batch of
/// readiness events all read their upstream responses first and then write to
/// their clients one after another, instead of a read and a write in turn. A client
/// that reads many connections (a load balancer in front, a load generator) then
/// wakes once for a burst of responses rather than once for each: HAProxy's staged
/// tasklets give the same order. At saturation this took oha's context switches per
/// request from 0.33 to 0.19 (load-tests/README.md); the turn costs one more poll
/// of the task that serves the request and no system call. (Over HTTP/2 that task
/// is the stream's, and the connection already writes its streams' frames
/// together: there the turn only costs the poll.)
pub(crate) struct Handling {
    stage: Stage,
    done: Done,
}

/// The exchange sits in place: boxing it would cost every request an allocation.
enum Stage {
    /// Waiting for the upstream's response head.
    Sent { exchange: Exchange },
    /// The answer, or the failure that stands for it, handed on at the next poll
    /// (taken then).
    Answered {
        result: Option<Result<Response<PooledBody>, ProxyError>>,
    },
}

/// What the metrics and the access log need once the response is known.
struct Done {
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    snapshot: Arc<Snapshot>,
    method: Method,
    trace: Trace,
    request_id: HeaderValue,
    start: Instant,
    busy: Option<Busy>,
}

impl Future for Handling {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.stage {
            Stage::Sent { exchange } => {
                let result = ready!(exchange.poll(cx));
                this.stage = Stage::Answered {
                    result: Some(result),
                };
                // Back of the run queue: the answer goes out after the tasks woken
                // with this one have read theirs.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Stage::Answered { result } => result.take().unwrap_or(Err(ProxyError::BadRequest(
                "request polled after completion",
            ))),
        };
        let done = &mut this.done;
        let mut response = match result {
            // The upstream client has left out the hop-by-hop fields.
            Ok(mut response) => {
                response
                    .headers_mut()
                    .insert(headers::X_REQUEST_ID, done.request_id.clone());
                response.map(|body| ResponseBody {
                    inner: Either::Left(body),
                    busy: None,
                    watch: None,
                })
            }
            Err(err) => {
                if err.blame() == Blame::Upstream {
                    if let Some(route) = &done.trace.route {
                        done.shared
                            .metrics
                            .upstream_error(&route.upstream.name, err.kind());
                    }
                }
                rescue::respond(&err, &done.request_id)
            }
        };
        finish(done, &response);
        let body = response.body_mut();
        body.busy = done.busy.take();
        if matches!(body.inner, Either::Left(_)) {
            body.watch = body.busy.as_ref().and_then(Busy::watch_stream);
        }
        Poll::Ready(Ok(response))
    }
}

/// Metrics and the access log for a finished request. The response is borrowed, not
/// passed through: moving it in and out costs two copies of it on every request.
fn finish(done: &Done, response: &Response<ResponseBody>) {
    let Done {
        shared,
        peer,
        snapshot,
        method,
        trace,
        request_id,
        start,
        busy: _,
    } = done;
    let elapsed = start.elapsed();
    let status = response.status();
    match &trace.route {
        Some(route) => route.metrics.record(method, status, elapsed.as_secs_f64()),
        None => shared
            .unrouted
            .record(method, status, elapsed.as_secs_f64()),
    }
    if snapshot.config.log.access_log {
        tracing::info!(
            target: "access",
            request_id = request_id.to_str().unwrap_or_default(),
            peer = %peer.addr,
            method = %method,
            route = trace.route.as_ref().map_or("-", |r| &*r.config.name),
            upstream = trace.endpoint.as_ref().map_or("-", |a| a.as_str()),
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            gateway_error = response.headers().get(headers::X_GATEWAY_ERROR).and_then(|v| v.to_str().ok()),
        );
    }
}

/// What [`handle`] learned of a request as it arrived.
#[derive(Clone, Copy)]
struct Arrival<'a> {
    /// When it arrived: the request timeout and the age of idle upstream connections
    /// count from here, so the request costs no more clock reads for them. tokio's
    /// clock, which a test may pause, as the timers that keep the deadline do.
    start: Instant,
    scan: &'a headers::Scan,
    request_id: &'a HeaderValue,
}

/// Checks, routes and rewrites a request, then hands it to an endpoint's pool.
fn dispatch(
    snapshot: &Snapshot,
    peer: &Peer,
    req: Request<Incoming>,
    arrival: Arrival<'_>,
    busy: &Busy,
    trace: &mut Trace,
) -> Result<Exchange, ProxyError> {
    let Arrival {
        start,
        scan,
        request_id,
    } = arrival;
    let server = &snapshot.config.server;
    if head_size(&req) > server.max_request_headers {
        return Err(ProxyError::HeadersTooLarge {
            limit: server.max_request_headers,
        });
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    // hyper decodes the chunks of `gzip, chunked` and leaves the gzip to the gateway,
    // which cannot pass it on: the field is hop-by-hop.
    if scan.fixed_hop_by_hop && !headers::TransferCodings::supported(req.headers()) {
        return Err(ProxyError::UnsupportedTransferCoding);
    }
    check_target(req.uri())?;
    if has_dot_segment(req.uri().path()) {
        // `/order/../admin` must not match `/order` and reach another route's upstream.
        return Err(ProxyError::BadRequest("path contains `.` or `..` segments"));
    }
    let Host {
        value: host_header,
        sent: host_sent,
        replaced: host_replaced,
    } = host_header(&req, peer.scheme)?;
    let host = host_header
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(strip_port);
    let route = snapshot
        .routes
        .find(host, req.uri().path(), req.method())
        .ok_or(ProxyError::NoRoute)?;
    trace.route = Some(route.clone());

    let limit = route.config.max_request_body;
    if let Some(len) = scan
        .content_length
        .then(|| req.headers().get(CONTENT_LENGTH))
        .flatten()
    {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }

    let upstream = &route.upstream;
    let endpoint = upstream
        .balancer
        .pick()
        .ok_or_else(|| ProxyError::NoEndpoint(upstream.name.clone()))?;
    trace.endpoint = Some(endpoint.authority.clone());

    let (mut parts, body) = req.into_parts();
    // Origin-form (`/path?query`): the connection already names the endpoint.
    parts.uri = Uri::from(upstream_path(route, &parts.uri)?);
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;

    let h = &mut parts.headers;
    headers::remove_hop_by_hop_scanned(h, scan);
    // The gateway already answered `Expect: 100-continue` by reading the body.
    if scan.expect {
        h.remove(EXPECT);
    }
    let trusted = headers::is_trusted(peer.addr.ip(), &server.trusted_proxies);
    let mut added = headers::set_forwarded(
        h,
        scan,
        &peer.ip_header,
        trusted,
        peer.scheme,
        host_header.clone(),
    );
    // The client's own Host header goes on as it is, where it is, unless `Connection`
    // named it (it was removed above), or an absolute-form target overrides it. HTTP/2
    // clients send :authority, not Host; keep the name the client used. An HTTP/1.0
    // request may have neither: then the endpoint's own name (port 80 left out, as
    // clients do).
    if host_replaced {
        h.remove(HOST);
    }
    if !host_sent || (scan.connection && !h.contains_key(HOST)) {
        let host = match host_header {
            Some(host) => host,
            None => {
                let a = &endpoint.authority;
                let name = match a.port_u16() {
                    None | Some(80) => a.host(),
                    Some(_) => a.as_str(),
                };
                HeaderValue::from_str(name)
                    .map_err(|_| ProxyError::BadRequest("invalid upstream authority"))?
            }
        };
        added.host = Some(host);
    }
    added.set_request_id(h, scan, request_id.clone());

    let body = LimitedBody::new(body, limit);
    // A body still to come keeps the client connection busy until it has all arrived.
    let uploading = !body.is_end_stream();
    let body = if uploading {
        body.hold(busy.clone())
    } else {
        body
    };
    let in_flight = InFlight::start(endpoint.stats.clone());
    let timeout = upstream.connection.request_timeout;
    Ok(Exchange {
        response: endpoint.pool.send(parts, added, body, start),
        deadline: deadline_after(start, timeout),
        uploading,
        moved: None,
        timeout,
        client_timeout: server.client_idle_timeout,
        in_flight,
    })
}

/// A request handed to an upstream connection, awaiting its response head within
/// the upstream's request timeout. The timeout runs from the end of the upload, so
/// a large or slow upload is bounded by the client's pace, not cut off by the
/// upstream's timer; while it goes on, a stall is bounded instead: no byte of it
/// moving for `request_timeout` while bytes wait for the upstream (504), or for the
/// client's `client_idle_timeout` while the gateway waits for the body (408), as
/// nginx's `proxy_send_timeout` and `client_body_timeout`. The timer itself is the
/// upstream connection's (see [`SendFuture::poll_deadline`]).
struct Exchange {
    response: SendFuture,
    deadline: Instant,
    /// A request body is still on its way: the timeout starts once it has ended.
    uploading: bool,
    /// While uploading: the upload's progress when `deadline` was last set.
    moved: Option<u64>,
    timeout: Duration,
    client_timeout: Duration,
    in_flight: InFlight,
}

impl Exchange {
    /// The response head, or the error it became (a timeout among them).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<PooledBody>, ProxyError>> {
        let result = match Pin::new(&mut self.response).poll(cx) {
            Poll::Ready(Ok(response)) => return Poll::Ready(Ok(response)),
            Poll::Ready(Err(e)) => classify(e),
            Poll::Pending => 'pending: {
                if self.uploading {
                    // The body is read on this task, by the poll above: it wakes this
                    // task with its next frame, and the poll that reads its end finds
                    // it ended here. Its last frames may still wait for the upstream
                    // to take them: that too is the upload, bounded as a stall.
                    let progress = self.response.upload_progress();
                    if !self.response.upload_ended() || progress.is_some_and(|(_, q)| q) {
                        break 'pending ready!(self.poll_stall(progress, cx));
                    }
                    self.uploading = false;
                    self.deadline = deadline_after(Instant::now(), self.timeout);
                }
                ready!(self.response.poll_deadline(cx, self.deadline));
                ProxyError::UpstreamTimeout
            }
        };
        if result.blame() == Blame::Upstream {
            self.in_flight.0.failures.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Err(result))
    }

    /// While the upload goes on (`progress`, as [`SendFuture::upload_progress`] says):
    /// ready with the error once it has moved no byte for the timeout of whoever it
    /// waits for.
    fn poll_stall(
        &mut self,
        progress: Option<(u64, bool)>,
        cx: &mut Context<'_>,
    ) -> Poll<ProxyError> {
        let Some((moved, upstream_owes)) = progress else {
            // Waiting for a connection, bounded by the connect timeout.
            self.moved = None;
            return Poll::Pending;
        };
        let wait = if upstream_owes {
            self.timeout
        } else {
            self.client_timeout
        };
        rearm_on_progress(&mut self.moved, moved, &mut self.deadline, wait);
        ready!(self.response.poll_deadline(cx, self.deadline));
        Poll::Ready(if upstream_owes {
            ProxyError::UpstreamTimeout
        } else {
            ProxyError::ClientTimeout
        })
    }
}

/// Counts a request as in flight on an endpoint until dropped.
struct InFlight(Arc<EndpointStats>);

impl InFlight {
    fn start(stats: Arc<EndpointStats>) -> Self {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sorts a client error into connect failure, our body limit, a client abort, or an
/// upstream failure, by walking its source chain.
fn classify(e: ClientError) -> ProxyError {
    if e.is_connect() {
        return ProxyError::Connect(e);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(body) = s.downcast_ref::<BodyError>() {
            return match body {
                BodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit: *limit },
                BodyError::Client(_) => ProxyError::ClientAborted(e),
            };
        }
        source = s.source();
    }
    ProxyError::UpstreamFailed(e)
}

/// Refuses the request-target forms the gateway does not serve (RFC 9112 3.2): the
/// authority-form (`host:port`), which only CONNECT may use and CONNECT is refused;
/// the asterisk-form (`*`, a server-wide OPTIONS), which no route stands for (nginx
/// refuses it too); and an absolute-form target with a scheme other than http or https.
fn check_target(uri: &Uri) -> Result<(), ProxyError> {
    match (uri.scheme(), uri.authority()) {
        (None, Some(_)) => Err(ProxyError::BadRequest(
            "a `host:port` request target is only for CONNECT",
        )),
        (Some(s), _) if *s != Scheme::HTTP && *s != Scheme::HTTPS => Err(ProxyError::BadRequest(
            "request target with a scheme other than http or https",
        )),
        _ if uri.path() == "*" => Err(ProxyError::BadRequest(
            "the `*` request target (server-wide OPTIONS) is not supported",
        )),
        _ => Ok(()),
    }
}

/// The host a request is routed on, and what becomes of the client's Host field.
struct Host {
    /// The `Host` field, the absolute-form target's authority or HTTP/2's
    /// `:authority`; none for HTTP/1.0 with neither.
    value: Option<HeaderValue>,
    /// It is the client's Host field, already among the fields forwarded.
    sent: bool,
    /// The client's Host field is dropped: the target's authority replaces it.
    replaced: bool,
}

/// The host the client asked for (see [`Host`]). More than one Host field is refused,
/// and so is a value that is not `host[:port]` (RFC 9112 3.2): the gateway routes on
/// the name before the port, and an upstream reading `shop.example:x@evil.example` as
/// an authority would see another host. An HTTP/1 absolute-form target's authority
/// overrides the field (RFC 9112 3.2.2), and an HTTP/2 Host must name `:authority`
/// (RFC 9113 8.3.1): either way the gateway and the upstream see one host. HTTP/1.1
/// without a Host field is refused even when its target names the host, as RFC 9112
/// 3.2 asks and nginx does.
fn host_header(req: &Request<Incoming>, scheme: &str) -> Result<Host, ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let field = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    match field {
        Some(h) if !valid_host(h.as_bytes()) => {
            return Err(ProxyError::BadRequest("invalid Host header"))
        }
        None if req.version() == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest(
                "HTTP/1.1 request without a Host header",
            ))
        }
        _ => {}
    }
    let Some(a) = req.uri().authority() else {
        return Ok(Host {
            value: field.cloned(),
            sent: field.is_some(),
            replaced: false,
        });
    };
    if !valid_host(a.as_str().as_bytes()) {
        return Err(ProxyError::BadRequest("invalid authority"));
    }
    match field {
        // HTTP/2: both must name the same host.
        Some(h) if req.version() == Version::HTTP_2 => {
            if !same_authority(h.as_bytes(), a.as_str().as_bytes(), scheme) {
                return Err(ProxyError::BadRequest("Host differs from :authority"));
            }
            Ok(Host {
                value: Some(h.clone()),
                sent: true,
                replaced: false,
            })
        }
        // HTTP/1 absolute-form, or HTTP/2 without Host: the target names the host,
        // in place of the client's Host field if it sent one.
        _ => Ok(Host {
            value: Some(
                HeaderValue::from_str(a.as_str())
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?,
            ),
            sent: false,
            replaced: field.is_some(),
        }),
    }
}

/// Whether a Host value or an authority is `host[:port]` (RFC 9110 7.2, RFC 3986
/// 3.2.2): a non-empty registered name (letters, digits, `-._~`, `%`-escapes and
/// sub-delims) or a bracketed IP literal, then at most a port of digits. No userinfo,
/// path or spaces: nothing an upstream could read as another host.
fn valid_host(v: &[u8]) -> bool {
    // One pass: the name (or literal), then what follows it must be a port.
    let port = match v {
        [b'[', rest @ ..] => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.'))
            {
                return false;
            }
            &rest[end + 1..]
        }
        _ => {
            let end = v
                .iter()
                .position(|&b| !REG_NAME[usize::from(b)])
                .unwrap_or(v.len());
            if end == 0 {
                return false;
            }
            &v[end..]
        }
    };
    match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The bytes a registered name may hold (RFC 3986 3.2.2: unreserved, `%` of a
/// pct-encoded octet, sub-delims).
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    t
};

/// True when a path has a `.` or `..` segment, plain or percent-encoded, as any server
/// behind the gateway may read it: one that drops `;` parameters (Tomcat reads
/// `/..;/` as `/../`) or splits segments at `%2f`, `%5c` or `\` as well as `/`.
fn has_dot_segment(path: &str) -> bool {
    // One pass over a short path costs less than two `contains` searches. Without a
    // `.` (plain or `%2e`) nothing can become a dot segment, separators or not.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let b = path.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match separator_len(&b[i..]) {
            0 => i += 1,
            n => {
                if is_dot_segment(&b[start..i]) {
                    return true;
                }
                i += n;
                start = i;
            }
        }
    }
    is_dot_segment(&b[start..])
}

/// The length of the segment separator `rest` starts with: `/`, `\`, `%2f` or `%5c`
/// (any case); 0 for none.
fn separator_len(rest: &[u8]) -> usize {
    match rest {
        [b'/' | b'\\', ..] => 1,
        [b'%', b'2', c, ..] if c | 0x20 == b'f' => 3,
        [b'%', b'5', c, ..] if c | 0x20 == b'c' => 3,
        _ => 0,
    }
}

/// `.` or `..`, each dot written as `.` or `%2e` (any case), up to any `;` parameters;
/// no allocation.
fn is_dot_segment(seg: &[u8]) -> bool {
    let (mut i, mut dots) = (0, 0);
    while i < seg.len() && seg[i] != b';' {
        match seg[i..] {
            [b'.', ..] => i += 1,
            [b'%', b'2', c, ..] if c | 0x20 == b'e' => i += 3,
            _ => return false,
        }
        dots += 1;
    }
    matches!(dots, 1 | 2)
}

/// Whether two authorities name the same host and port, compared as RFC 9113 8.3.1
/// asks of an intermediary: after scheme-based normalization (RFC 3986 6.2.3), so
/// case aside and an empty or default port left out.
fn same_authority(a: &[u8], b: &[u8], scheme: &str) -> bool {
    let default: &[u8] = if scheme == "https" { b"443" } else { b"80" };
    without_default_port(a, default).eq_ignore_ascii_case(without_default_port(b, default))
}

/// `authority` without its port when that is empty or `default`.
fn without_default_port<'a>(authority: &'a [u8], default: &[u8]) -> &'a [u8] {
    match authority.iter().rposition(|&b| b == b':') {
        // A colon inside an IPv6 literal's brackets is not a port's.
        Some(colon) if !authority[colon..].contains(&b']') => {
            let port = &authority[colon + 1..];
            if port.is_empty() || port == default {
                &authority[..colon]
            } else {
                authority
            }
        }
        _ => authority,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: `[::1]:8000`
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    match host.bytes().rposition(|b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// Size of the request head as the client sent it, near enough.
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.method().as_str().len()
        + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

fn upstream_path(route: &Route, uri: &Uri) -> Result<PathAndQuery, ProxyError> {
    match route.rewrite_path(uri.path()) {
        None => Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))),
        Some(mut path) => {
            if let Some(q) = uri.query() {
                path.push('?');
                path.push_str(q);
            }
            PathAndQuery::try_from(path)
                .map_err(|_| ProxyError::BadRequest("invalid path after rewrite"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{has_dot_segment, strip_port, valid_host};

    #[test]
    fn hosts_are_a_name_or_ip_literal_and_a_port() {
        for ok in [
            "shop.example",
            "shop.example:8000",
            "shop.example:",
            "127.0.0.1:18090",
            "[::1]",
            "[::1]:8000",
            "xn--bcher-kva.example",
            "a_b~c%41!$&'()*+,;=",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "shop.example:x@evil.example",
            "user@shop.example",
            "shop.example:abc",
            "shop.example:80:81",
            "shop.example/evil",
            "shop example",
            "shop.example\\evil",
            "[::1",
            "[]",
            "[::1]x",
            "[::1/64]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn dot_segments_are_found_plain_or_encoded() {
        assert!(has_dot_segment("/order/../admin"));
        assert!(has_dot_segment("/order/%2E%2e/admin"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/a/.."));
        assert!(!has_dot_segment("/files/v1.2/report.pdf"));
        assert!(!has_dot_segment("/a/...b"));
        assert!(!has_dot_segment("/a/.../b"));
        assert!(has_dot_segment("/a/.%2E/b"));
        // Parameters dropped (`;` to the segment's end) and `%2f`, `%5c`, `\` taken
        // for separators, as some servers behind the gateway do.
        for path in [
            "/order/..;/admin",
            "/order/.;x/",
            "/order/..;",
            "/order/%2e%2e%2fadmin",
            "/order/..%2Fadmin",
            "/order/..%5cadmin",
            "/order/..%5C",
            "/order/..\\admin",
            "/order\\.",
            "%2e%2e",
        ] {
            assert!(has_dot_segment(path), "{path}");
        }
        for path in [
            "/files/a%2Fb",
            "/a;b/c",
            "/a/;../b",
            "/a/.x;/b",
            "/a/...;/b",
            "/a%2f...%5cb",
            "/a/%2",
            "/a/.%2",
            "/a/%",
        ] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }

    /// What [`super::Handling`] relies on to write the answers of one batch together: on
    /// the runtime every serving thread runs, a task that wakes itself and returns
    /// `Pending` runs again only after every task already woken. (A runtime that ran
    /// it again at once, a LIFO slot say, would put each write straight after its
    /// read again.) That `Handling` takes the turn is tested in `server`'s tests.
    #[test]
    fn an_answer_waits_for_the_tasks_woken_with_it() {
        use std::sync::{Arc, Mutex};
        use std::task::Poll;
        const TASKS: usize = 8;
        let runtime = crate::runtime().expect("runtime");
        let log = Arc::new(Mutex::new(Vec::new()));
        runtime.block_on(async {
            let (go, ready) = tokio::sync::watch::channel(false);
            let mut tasks = Vec::new();
            for i in 0..TASKS {
                let (log, mut ready) = (log.clone(), ready.clone());
                tasks.push(tokio::spawn(async move {
                    // Every task is woken by the same event, as by one batch of
                    // readiness events.
                    ready.wait_for(|go| *go).await.expect("sender kept");
                    log.lock().expect("log").push(("read", i));
                    let mut waited = false;
                    std::future::poll_fn(|cx| {
                        if waited {
                            return Poll::Ready(());
                        }
                        waited = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    })
                    .await;
                    log.lock().expect("log").push(("write", i));
                }));
            }
            drop(ready);
            // The tasks run up to their wait first.
            tokio::task::yield_now().await;
            go.send_replace(true);
            for task in tasks {
                task.await.expect("task");
            }
        });
        // Every read before any write, and the writes in the order of the reads
        // (the event wakes its waiters in an order of its own).
        let log = log.lock().expect("log").clone();
        let (reads, writes) = log.split_at(TASKS.min(log.len()));
        let order = |step: &[(&str, usize)], kind: &str| -> Vec<usize> {
            step.iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, i)| *i)
                .collect()
        };
        assert_eq!(order(reads, "read").len(), TASKS, "{log:?}");
        assert_eq!(order(writes, "write"), order(reads, "read"), "{log:?}");
    }

    /// hyper moves each request's future into place, and the exchange moves the
    /// connection and the response along: their sizes are copied on every request
    /// (in callgrind, ~1k instructions per request went to such copies before the
    /// connection and a body's upload were boxed).
    #[test]
    fn what_moves_per_request_stays_small() {
        use std::mem::size_of;
        let handling = size_of::<super::Handling>();
        assert!(
            handling <= 384,
            "the request future grew to {handling} bytes"
        );
        let response = size_of::<http::Response<super::ResponseBody>>();
        assert!(response <= 192, "the response grew to {response} bytes");
        let body = size_of::<super::client::PooledBody>();
        assert!(body <= 64, "the response body grew to {body} bytes");
    }

    #[test]
    fn authorities_compare_after_scheme_based_normalization() {
        use super::same_authority;
        for (a, b, same) in [
            ("Shop.Example", "shop.example", true),
            ("shop.example:80", "shop.example", true),
            ("shop.example:", "shop.example:80", true),
            ("[::1]:80", "[::1]", true),
            ("shop.example:8080", "shop.example", false),
            ("shop.example:443", "shop.example", false),
            ("evil.example", "shop.example", false),
            ("[::1]", "[::2]", false),
        ] {
            assert_eq!(
                same_authority(a.as_bytes(), b.as_bytes(), "http"),
                same,
                "{a} {b}"
            );
        }
        assert!(same_authority(
            b"shop.example:443",
            b"shop.example",
            "https"
        ));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("shop.example:8000"), "shop.example");
        assert_eq!(strip_port("shop.example"), "shop.example");
        assert_eq!(strip_port("[::1]:8000"), "::1");
    }
}
