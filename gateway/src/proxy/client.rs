//! Upstream connections: one small HTTP/1.1 keep-alive pool per endpoint.
//!
//! The balancer has already chosen the endpoint, so the pool needs no key: a request
//! pops the most recently used idle connection (a `Vec` behind a mutex held for a few
//! instructions), and the request's own task runs the exchange on it ([`h1`]). The
//! connection goes back when the response body has been read to its end and the
//! request body is all sent; a body dropped early closes its connection, since
//! HTTP/1.1 cannot abandon a response midway. So the pool only ever holds connections
//! that are ready for a request. Connections idle longer than `idle_timeout` are never
//! reused (the timeout sits below the upstream's own, so the gateway closes first) and
//! are closed by a reaper task that lives as long as the pool; one the upstream closed
//! meanwhile is noticed when it is taken, at no cost while nothing has arrived on it.

mod h1;
#[cfg(target_os = "linux")]
pub(crate) mod together;
#[cfg(not(target_os = "linux"))]
#[path = "client/together_elsewhere.rs"]
pub(crate) mod together;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Method, Response};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::body::LimitedBody;
use super::headers::Added;
use crate::config::ConnectionConfig;
use crate::worker;
pub(crate) use h1::{deadline_after, rearm_on_progress};
use h1::{Conn, HeadError, RequestFraming, Upload};
pub use h1::{ExchangeError, PooledBody};

/// TCP keepalive probes detect a silently dead upstream host on long idle connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Resolving or connecting failed, or took longer than the connect timeout.
    #[error("connecting to {authority} failed")]
    Connect {
        /// The endpoint.
        authority: Authority,
        /// What the OS or the resolver said.
        #[source]
        source: io::Error,
    },
    /// The connection failed while sending the request or reading the response head.
    #[error("the exchange with the upstream failed")]
    Exchange(#[source] ExchangeError),
}

impl ClientError {
    /// True when the upstream cannot have seen the request.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// The HTTP/1.1 connection pool of one endpoint; clones share it.
#[derive(Clone, Debug)]
pub struct EndpointPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
pub(crate) struct PoolInner {
    authority: Authority,
    /// Parsed once when the endpoint is an IP literal; names are resolved per connect.
    addr: Option<SocketAddr>,
    settings: ConnectionConfig,
    /// One per worker thread ([`crate::worker`]): a worker reuses only the connections
    /// it opened, which are registered with its own reactor. Like nginx's workers, each
    /// keeps `max_idle_per_endpoint` idle connections and opens up to
    /// `connect_concurrency` at once.
    shards: Box<[Shard]>,
    reaper_started: AtomicBool,
    opened: AtomicU64,
}

/// One worker's part of a pool; aligned so that two workers' locks never share a
/// cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// Idle connections, oldest first; the last one is reused first (it is the warmest).
    idle: Mutex<Vec<Idle>>,
    /// Woken when a connection comes back, for this worker's requests waiting to connect.
    returned: Notify,
    /// `connect_concurrency` slots: connections this worker is opening right now.
    connecting: Semaphore,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl EndpointPool {
    /// An empty pool for `authority`, for `workers` worker threads (at least one);
    /// connections open on demand.
    pub fn new(authority: Authority, settings: ConnectionConfig, workers: usize) -> Self {
        let addr = authority.as_str().parse().ok();
        let workers = workers.max(1);
        Self {
            inner: Arc::new(PoolInner {
                authority,
                addr,
                settings,
                shards: (0..workers)
                    .map(|_| Shard {
                        idle: Mutex::new(Vec::new()),
                        returned: Notify::new(),
                        connecting: Semaphore::new(settings.connect_concurrency),
                    })
                    .collect(),
                reaper_started: AtomicBool::new(false),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// The settings it was built with; a change needs a new pool.
    pub fn settings(&self) -> &ConnectionConfig {
        &self.inner.settings
    }

    /// Connections waiting for a request right now, over all workers.
    pub fn idle(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Connections opened since the pool was created.
    pub fn opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Sends one request (origin-form URI, Host set); the future resolves at the
    /// response head. A request a reused connection's upstream closed under (before
    /// any of it was sent, or, for a repeatable request that is only a head, before any
    /// byte of answer) goes again on another connection; nothing else is retried here.
    ///
    /// With an idle connection at hand the head is encoded before this returns, so
    /// the future holds the exchange itself and nothing boxed.
    ///
    /// The request comes as its parts and its body, as `dispatch` has them: putting
    /// them together and apart again would copy both. `now` is a recent reading of
    /// tokio's clock (the request's arrival), against which idle connections are aged:
    /// the pool keeps the same clock as the deadlines, which a test may pause.
    pub(crate) fn send(
        &self,
        mut parts: http::request::Parts,
        added: Added,
        body: LimitedBody,
        now: Instant,
    ) -> SendFuture {
        let pool = self.inner.clone();
        let framing = RequestFraming::choose(&mut parts, &body);
        let state = match pool.checkout(now) {
            Some(conn) => SendState::Exchanging {
                exchange: Exchange::start(conn, parts, &added, framing, body, true, pool),
            },
            None => SendState::waiting(
                pool,
                Unsent::New {
                    parts,
                    added,
                    framing,
                    body,
                },
            ),
        };
        SendFuture { state }
    }
}

/// The response head from [`EndpointPool::send`].
pub(crate) struct SendFuture {
    state: SendState,
}

/// The exchange sits in place: boxing it would cost every request an allocation.
enum SendState {
    /// On a connection, up to the response head.
    Exchanging { exchange: Exchange },
    /// Waiting for a connection: an idle one coming back or a new one. Only the wait
    /// is boxed (it is rare, and its future is large), so a burst of requests waiting
    /// for connections holds a few hundred bytes each.
    Waiting {
        connection: ConnectionFuture,
        request: Option<Box<Unsent>>,
        pool: Arc<PoolInner>,
        /// The response-head deadline while there is no connection to keep it.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

type ConnectionFuture = Pin<Box<dyn Future<Output = Result<(Conn, bool), ClientError>> + Send>>;

/// A request waiting for a connection: not started yet, or to be sent again after a
/// reused connection's upstream closed under it. Boxed while it waits, a path as rare
/// as opening a connection, so that the future of every request stays small.
// Boxed whole, so the difference between its variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Unsent {
    New {
        parts: http::request::Parts,
        added: Added,
        framing: RequestFraming,
        body: LimitedBody,
    },
    Again {
        upload: Upload,
        method: Method,
    },
}

impl SendState {
    fn waiting(pool: Arc<PoolInner>, request: Unsent) -> Self {
        let waiter = pool.clone();
        SendState::Waiting {
            connection: Box::pin(async move { waiter.acquire().await }),
            request: Some(Box::new(request)),
            pool,
            timer: None,
        }
    }
}

impl Future for SendFuture {
    type Output = Result<Response<PooledBody>, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.state;
        loop {
            let next = match state {
                SendState::Exchanging { exchange } => match ready!(Pin::new(exchange).poll(cx)) {
                    Ok(response) => return Poll::Ready(Ok(response)),
                    Err(Failed::Error(e)) => return Poll::Ready(Err(e)),
                    Err(Failed::Retry {
                        upload,
                        method,
                        pool,
                    }) => SendState::waiting(pool, Unsent::Again { upload, method }),
                },
                SendState::Waiting {
                    connection,
                    request,
                    pool,
                    ..
                } => {
                    let (conn, reused) = ready!(connection.as_mut().poll(cx))?;
                    let pool = pool.clone();
                    let exchange = match request.take().map(|r| *r) {
                        Some(Unsent::New {
                            parts,
                            added,
                            framing,
                            body,
                        }) => Exchange::start(conn, parts, &added, framing, body, reused, pool),
                        Some(Unsent::Again { upload, method }) => {
                            Exchange::new(conn, upload, method, reused, pool)
                        }
                        None => return Poll::Ready(Err(ended())),
                    };
                    SendState::Exchanging { exchange }
                }
            };
            *state = next;
        }
    }
}

impl SendFuture {
    /// True once the request's body has ended: read to its end, failed, cut off at
    /// its limit, or let go. False while a request not yet started waits for a
    /// connection (one waiting to go again says what its upload says). A request
    /// without a body has none to wait for.
    pub(crate) fn upload_ended(&self) -> bool {
        match &self.state {
            SendState::Exchanging { exchange } => exchange
                .live
                .as_ref()
                .is_none_or(|live| live.upload.body_ended()),
            SendState::Waiting { request, .. } => match request.as_deref() {
                Some(Unsent::New { .. }) => false,
                Some(Unsent::Again { upload, .. }) => upload.body_ended(),
                None => true,
            },
        }
    }

    /// How far the upload has got on its connection ([`Upload::progress`]); `None`
    /// while the request waits for a connection.
    pub(crate) fn upload_progress(&self) -> Option<(u64, bool)> {
        match &self.state {
            SendState::Exchanging { exchange } => {
                exchange.live.as_ref().map(|live| live.upload.progress())
            }
            SendState::Waiting { .. } => None,
        }
    }

    /// Ready once `deadline` has passed, for the caller's response-head timeout: on
    /// the connection's own timer once there is one (reset per exchange, so a request
    /// costs no timer registration), else on one of the wait's.
    pub(crate) fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        match &mut self.state {
            SendState::Exchanging { exchange } => match &mut exchange.live {
                Some(live) => live.conn.poll_deadline(cx, deadline),
                // Ended: the next poll of the exchange says how.
                None => Poll::Ready(()),
            },
            SendState::Waiting { timer, .. } => h1::poll_timer(timer, cx, deadline),
        }
    }
}

/// How an exchange failed: for good, or in a way that allows sending it again.
enum Failed {
    Error(ClientError),
    /// The request, to go again on another connection of `pool` (an upload is a few
    /// words: a body's part of it is boxed).
    Retry {
        upload: Upload,
        method: Method,
        pool: Arc<PoolInner>,
    },
}

/// One request on one connection, up to the response head.
struct Exchange {
    /// Moved out whole when the exchange ends: to the response body, or to a retry.
    live: Option<Live>,
    /// Writing the request failed after part of it had left; an answer may still be
    /// there to read (an upstream that answered early and reset the connection).
    write_failed: Option<ExchangeError>,
    reused: bool,
}

struct Live {
    conn: Conn,
    upload: Upload,
    method: Method,
    pool: Arc<PoolInner>,
}

impl Exchange {
    /// Encodes the request's head on `conn` and starts the exchange; the request's
    /// emptied header map stays with the connection for the response's headers.
    fn start(
        mut conn: Conn,
        parts: http::request::Parts,
        added: &Added,
        framing: RequestFraming,
        body: LimitedBody,
        reused: bool,
        pool: Arc<PoolInner>,
    ) -> Self {
        let upload = Upload::start(&mut conn, &parts, added, framing, body);
        conn.recycle(parts.headers);
        Self::new(conn, upload, parts.method, reused, pool)
    }

    fn new(conn: Conn, upload: Upload, method: Method, reused: bool, pool: Arc<PoolInner>) -> Self {
        Self {
            live: Some(Live {
                conn,
                upload,
                method,
                pool,
            }),
            write_failed: None,
            reused,
        }
    }

    /// Another attempt if the connection was reused and the request can go again.
    fn retry_or(&mut self, e: ExchangeError) -> Poll<Result<Response<PooledBody>, Failed>> {
        if let Some(mut live) = self.live.take() {
            if self.reused && live.upload.rewind() {
                return Poll::Ready(Err(Failed::Retry {
                    upload: live.upload,
                    method: live.method,
                    pool: live.pool,
                }));
            }
        }
        Poll::Ready(Err(Failed::Error(ClientError::Exchange(e))))
    }
}

/// What polling an exchange that has ended gives.
fn ended() -> ClientError {
    let gone = io::Error::other("exchange polled after it ended");
    ClientError::Exchange(gone.into())
}

impl Future for Exchange {
    type Output = Result<Response<PooledBody>, Failed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(live) = this.live.as_mut() else {
            return Poll::Ready(Err(Failed::Error(ended())));
        };
        if !live.upload.is_sent() && this.write_failed.is_none() {
            match live.conn.poll_send(&mut live.upload, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e @ ExchangeError::RequestBody(_))) => {
                    return Poll::Ready(Err(Failed::Error(ClientError::Exchange(e))))
                }
                // Read on: the connection is gone, so the read ends soon too, with the
                // answer if the upstream sent one before it reset the connection.
                Poll::Ready(Err(e)) if live.upload.abandon() => this.write_failed = Some(e),
                Poll::Ready(Err(e)) => return this.retry_or(e),
                // Nothing to read before the head has gone with the turn's others.
                Poll::Pending if live.conn.is_queued() => return Poll::Pending,
                Poll::Pending => {}
            }
        }
        match ready!(live.conn.poll_head(cx, &live.method)) {
            Ok(h1::Head {
                response,
                framing,
                keep_alive,
            }) => {
                let Some(Live {
                    conn,
                    mut upload,
                    pool,
                    ..
                }) = this.live.take()
                else {
                    return Poll::Ready(Err(Failed::Error(ended())));
                };
                upload.answered();
                let going = !upload.is_sent() && this.write_failed.is_none();
                let upload = going.then_some(upload);
                let keep_alive = keep_alive && this.write_failed.is_none();
                Poll::Ready(Ok(
                    response.map(|()| PooledBody::new(conn, framing, keep_alive, upload, pool))
                ))
            }
            Err(e @ HeadError::Silent(_)) => {
                let e = this.write_failed.take().unwrap_or_else(|| e.into_error());
                this.retry_or(e)
            }
            Err(e) => {
                this.live = None;
                let e = this.write_failed.take().unwrap_or_else(|| e.into_error());
                Poll::Ready(Err(Failed::Error(ClientError::Exchange(e))))
            }
        }
    }
}

impl PoolInner {
    async fn connect(&self) -> Result<Conn, ClientError> {
        let fail = |source| self.connect_error(source);
        let stream = self.dial().await.map_err(fail)?;
        stream.set_nodelay(true).map_err(fail)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&keepalive)
            .map_err(fail)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn::new(stream))
    }

    /// The running worker's shard.
    fn shard(&self) -> &Shard {
        &self.shards[worker::index() % self.shards.len()]
    }

    /// The running worker's idle connections.
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        lock(self.shard())
    }

    /// The warmest idle connection that is young enough at `now` and still open, if
    /// any.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        loop {
            let idle = {
                let mut idle = self.lock();
                let conn = idle.pop()?;
                if now.saturating_duration_since(conn.since) >= self.settings.idle_timeout {
                    // This one and all before it (older still) have expired; they
                    // close outside the lock.
                    let expired = std::mem::take(&mut *idle);
                    drop(idle);
                    drop(expired);
                    return None;
                }
                conn
            };
            if idle.conn.is_usable() {
                return Some(idle.conn);
            }
        }
    }

    /// An idle connection, or a new one once a connect slot is free, whichever comes
    /// first; `true` with a reused one. Waiting is bounded by the connect timeout.
    async fn acquire(self: &Arc<Self>) -> Result<(Conn, bool), ClientError> {
        let wait = async {
            loop {
                // Registered before the pool is checked, so a return in between wakes it.
                let shard = self.shard();
                let returned = shard.returned.notified();
                tokio::pin!(returned);
                returned.as_mut().enable();
                if let Some(conn) = self.checkout(Instant::now()) {
                    return Got::Idle(conn);
                }
                tokio::select! {
                    slot = shard.connecting.acquire() => return Got::Slot(slot),
                    () = &mut returned => {}
                }
            }
        };
        let waited = tokio::time::timeout(self.settings.connect_timeout, wait).await;
        match waited {
            Ok(Got::Idle(conn)) => Ok((conn, true)),
            Ok(Got::Slot(Ok(_slot))) => Ok((self.connect().await?, false)),
            Ok(Got::Slot(Err(_closed))) => Err(self.connect_error(io::Error::other("pool closed"))),
            Err(_elapsed) => Err(self.connect_error(io::Error::new(
                io::ErrorKind::TimedOut,
                "no connection became available within the connect timeout",
            ))),
        }
    }
    fn connect_error(&self, source: io::Error) -> ClientError {
        ClientError::Connect {
            authority: self.authority.clone(),
            source,
        }
    }

    /// A TCP connection to the endpoint. A name's addresses are tried in turn, each
    /// with an equal share of the time left, so one that drops SYNs (a dead IPv6
    /// route, say) cannot use up the whole connect timeout.
    async fn dial(&self) -> io::Result<TcpStream> {
        let limit = self.settings.connect_timeout;
        if let Some(addr) = self.addr {
            return tokio::time::timeout(limit, TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
        }
        let deadline = Instant::now() + limit;
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout_at(deadline, tokio::net::lookup_host(self.authority.as_str()))
                .await
                .unwrap_or_else(|_| Err(timed_out()))?
                .collect();
        let mut last = None;
        for (i, addr) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(timed_out()),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name has no addresses")
        }))
    }

    /// Takes a connection back after an exchange that ended cleanly.
    pub(crate) fn put(self: &Arc<Self>, mut conn: Conn) {
        conn.idle();
        let shard = self.shard();
        {
            let mut idle = lock(shard);
            if idle.len() >= self.settings.max_idle_per_endpoint {
                return;
            }
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        shard.returned.notify_one();
        // A plain load per request; the swap only until the reaper runs.
        if !self.reaper_started.load(Ordering::Relaxed)
            && !self.reaper_started.swap(true, Ordering::Relaxed)
        {
            self.start_reaper();
        }
    }

    /// Closes connections idle past the timeout, every half timeout, until the pool
    /// is dropped.
    fn start_reaper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaper_started.store(false, Ordering::Relaxed);
            return;
        };
        let pool: Weak<PoolInner> = Arc::downgrade(self);
        let timeout = self.settings.idle_timeout;
        let period = (timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(3600));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                for shard in pool.shards.iter() {
                    let expired: Vec<Idle> = {
                        let mut idle = lock(shard);
                        let now = Instant::now();
                        let keep = idle
                            .iter()
                            .position(|c| now.duration_since(c.since) < timeout)
                            .unwrap_or(idle.len());
                        let mut expired: Vec<Idle> = idle.drain(..keep).collect();
                        idle.retain(|c| c.conn.is_usable());
                        expired.shrink_to_fit();
                        expired
                    };
                    // Closed outside the lock.
                    drop(expired);
                }
            }
        });
    }
}

/// A shard's idle list. Nothing panics while it is held; a poisoned list is still a
/// valid list.
fn lock(shard: &Shard) -> MutexGuard<'_, Vec<Idle>> {
    shard.idle.lock().unwrap_or_else(PoisonError::into_inner)
}

type Slot<'a> = Result<tokio::sync::SemaphorePermit<'a>, tokio::sync::AcquireError>;

/// What a request waiting for a connection got: one to reuse, or leave to open one.
enum Got<'a> {
    Idle(Conn),
    Slot(Slot<'a>),
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
}
