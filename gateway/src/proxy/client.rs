//! Upstream connections: one small HTTP/1.1 keep-alive pool per endpoint.
//!
//! The balancer has already chosen the endpoint, so the pool needs no key: a request
//! pops the most recently used idle connection (a `Vec` behind a mutex held for a few
//! instructions), sends on it, and the connection goes back when the response body
//! has been read to its end. A body dropped early closes its connection, since HTTP/1.1
//! cannot abandon a response midway. Connections idle longer than `idle_timeout` are
//! never reused (the timeout sits below the upstream's own, so the gateway closes
//! first) and are closed by a reaper task that lives as long as the pool.
//!
//! Compared with hyper-util's general-purpose client this drops, per request, two
//! hashes of the authority, a spawned task that waits for the connection to be ready
//! again, and an absolute-form URI.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use super::body::LimitedBody;
use crate::config::ConnectionConfig;

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
    Exchange(#[source] hyper::Error),
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
struct PoolInner {
    authority: Authority,
    /// Parsed once when the endpoint is an IP literal; names are resolved per connect.
    addr: Option<SocketAddr>,
    settings: ConnectionConfig,
    /// Idle connections, oldest first; the last one is reused first (it is the warmest).
    idle: Mutex<Vec<Idle>>,
    /// Woken when a connection comes back, for requests waiting to connect.
    returned: Notify,
    /// `connect_concurrency` slots: connections being opened right now.
    connecting: Semaphore,
    reaper_started: AtomicBool,
    opened: AtomicU64,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<LimitedBody>,
    since: Instant,
}

/// A connection a waiting request took out of the pool to watch (it was still
/// finishing its last exchange). However the request stops waiting without it (with
/// another connection, a connect slot, at the connect timeout, or dropped with its
/// client), it goes back to the pool as it was, and one other waiter is woken to
/// watch it. Only a waiter that leaves wakes another: one that woke itself with the
/// connection it put back would spin.
struct Watched<'a> {
    pool: &'a PoolInner,
    idle: Option<Idle>,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        if let Some(idle) = self.idle.take() {
            self.pool.restore(idle);
            self.pool.returned.notify_one();
        }
    }
}

impl EndpointPool {
    /// An empty pool for `authority`; connections open on demand.
    pub fn new(authority: Authority, settings: ConnectionConfig) -> Self {
        let addr = authority.as_str().parse().ok();
        Self {
            inner: Arc::new(PoolInner {
                authority,
                addr,
                settings,
                idle: Mutex::new(Vec::new()),
                returned: Notify::new(),
                connecting: Semaphore::new(settings.connect_concurrency),
                reaper_started: AtomicBool::new(false),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// The settings it was built with; a change needs a new pool.
    pub fn settings(&self) -> &ConnectionConfig {
        &self.inner.settings
    }

    /// Connections waiting for a request right now.
    pub fn idle(&self) -> usize {
        self.inner.lock().len()
    }

    /// Connections opened since the pool was created.
    pub fn opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Sends one request (origin-form URI, Host set); the future resolves at the
    /// response head. A request that a reused connection closed under before sending
    /// any of it is sent again on another connection; nothing else is retried here.
    ///
    /// With an idle connection at hand the request is handed to it before this
    /// returns, so the future holds only the response channel, not the request.
    pub(crate) fn send(
        &self,
        req: Request<LimitedBody>,
    ) -> SendFuture<impl Future<Output = Result<Response<Incoming>, Unsent>> + Send + 'static> {
        let pool = self.inner.clone();
        let state = match pool.checkout() {
            Some(mut sender) => SendState::Sent {
                response: sender.try_send_request(req),
                lease: Some(Lease { sender, pool }),
            },
            // Connecting is rare; boxed, its large future stays out of every request's.
            None => SendState::Slow {
                future: Box::pin(send_slow(pool, req)),
            },
        };
        SendFuture { state }
    }
}

/// What `try_send_request` gives back on failure.
pub(crate) type Unsent = TrySendError<Request<LimitedBody>>;

type SlowFuture = Pin<Box<dyn Future<Output = Result<Response<PooledBody>, ClientError>> + Send>>;

pin_project! {
    /// The response head from [`EndpointPool::send`].
    pub(crate) struct SendFuture<R> {
        #[pin]
        state: SendState<R>,
    }
}

pin_project! {
    #[project = SendStateProj]
    enum SendState<R> {
        // Handed to an idle connection; waiting for its answer.
        Sent { #[pin] response: R, lease: Option<Lease> },
        // Connecting, or retrying after an idle connection closed under the request.
        Slow { future: SlowFuture },
    }
}

impl<R> Future for SendFuture<R>
where
    R: Future<Output = Result<Response<Incoming>, Unsent>>,
{
    type Output = Result<Response<PooledBody>, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let retry = match state.as_mut().project() {
                SendStateProj::Slow { future } => return future.as_mut().poll(cx),
                SendStateProj::Sent { response, lease } => match ready!(response.poll(cx)) {
                    Ok(response) => {
                        return Poll::Ready(Ok(PooledBody::wrap(response, lease.take())))
                    }
                    Err(mut e) => match (e.take_message(), lease.take()) {
                        // The idle connection closed before the request was written.
                        (Some(unsent), Some(lease)) => send_slow(lease.pool, unsent),
                        _ => return Poll::Ready(Err(ClientError::Exchange(e.into_error()))),
                    },
                },
            };
            state.set(SendState::Slow {
                future: Box::pin(retry),
            });
        }
    }
}

/// The general path: idle connections until one takes the request, else a new one.
async fn send_slow(
    pool: Arc<PoolInner>,
    mut req: Request<LimitedBody>,
) -> Result<Response<PooledBody>, ClientError> {
    loop {
        let (mut sender, reused) = pool.acquire().await?;
        match sender.try_send_request(req).await {
            Ok(response) => return Ok(PooledBody::wrap(response, Some(Lease { sender, pool }))),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => return Err(ClientError::Exchange(e.into_error())),
            },
        }
    }
}

impl PoolInner {
    async fn connect(&self) -> Result<SendRequest<LimitedBody>, ClientError> {
        let fail = |source| self.connect_error(source);
        let stream = self.dial().await.map_err(fail)?;
        stream.set_nodelay(true).map_err(fail)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&keepalive)
            .map_err(fail)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Exchange)?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(upstream = %authority, error = %e, "upstream connection ended");
            }
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing panics while the lock is held; a poisoned list is still a valid list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The warmest idle connection that is ready and young enough, if any.
    fn checkout(&self) -> Option<SendRequest<LimitedBody>> {
        let mut idle = self.lock();
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let conn = &idle[i];
            if now.duration_since(conn.since) >= self.settings.idle_timeout {
                // This one and all before it (older still) have expired.
                idle.drain(..=i);
                return None;
            }
            if conn.sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
            if conn.sender.is_closed() {
                idle.remove(i);
            }
            // Otherwise still finishing its last exchange: left for a later request.
        }
        None
    }

    /// An idle connection, or a new one once a connect slot is free, whichever comes
    /// first; `true` with a reused one. Waiting is bounded by the connect timeout.
    async fn acquire(self: &Arc<Self>) -> Result<(SendRequest<LimitedBody>, bool), ClientError> {
        let wait = async {
            // A returned connection still finishing its last exchange announces nothing
            // when it is done, so a waiter takes one out and watches it along with the
            // rest, across wake-ups, until it leaves: then it goes back (see `Watched`).
            let mut watched = Watched {
                pool: self,
                idle: None,
            };
            loop {
                // Registered before the pool is checked, so a return in between wakes it.
                let returned = self.returned.notified();
                tokio::pin!(returned);
                returned.as_mut().enable();
                if let Some(sender) = self.checkout() {
                    return Got::Idle(sender);
                }
                if watched.idle.is_none() {
                    watched.idle = self.take_pending();
                }
                let woke = {
                    let ready = async {
                        match watched.idle.as_mut() {
                            Some(idle) => idle.sender.ready().await.is_ok(),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        slot = self.connecting.acquire() => Woke::Slot(slot),
                        () = &mut returned => Woke::Returned,
                        ok = ready => Woke::Ready(ok),
                    }
                };
                match woke {
                    Woke::Ready(true) => {
                        if let Some(idle) = watched.idle.take() {
                            return Got::Idle(idle.sender);
                        }
                    }
                    // Closed meanwhile: dropped.
                    Woke::Ready(false) => watched.idle = None,
                    // Another connection came back: look again, still watching this one.
                    Woke::Returned => {}
                    Woke::Slot(slot) => return Got::Slot(slot),
                }
            }
        };
        let waited = tokio::time::timeout(self.settings.connect_timeout, wait).await;
        match waited {
            Ok(Got::Idle(sender)) => Ok((sender, true)),
            Ok(Got::Slot(Ok(_slot))) => Ok((self.connect().await?, false)),
            Ok(Got::Slot(Err(_closed))) => Err(self.connect_error(io::Error::other("pool closed"))),
            Err(_elapsed) => Err(self.connect_error(io::Error::new(
                io::ErrorKind::TimedOut,
                "no connection became available within the connect timeout",
            ))),
        }
    }

    /// The most recently returned connection that is not closed (after `checkout`
    /// found none ready: one still finishing its last exchange).
    fn take_pending(&self) -> Option<Idle> {
        let mut idle = self.lock();
        let i = idle.iter().rposition(|c| !c.sender.is_closed())?;
        Some(idle.remove(i))
    }

    /// Puts back a connection `take_pending` took, as it was, telling no one.
    fn restore(&self, conn: Idle) {
        let mut idle = self.lock();
        if idle.len() < self.settings.max_idle_per_endpoint {
            // Newer ones may have come back meanwhile: keep the list oldest first.
            let at = idle.partition_point(|c| c.since <= conn.since);
            idle.insert(at, conn);
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
        let deadline = tokio::time::Instant::now() + limit;
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout_at(deadline, tokio::net::lookup_host(self.authority.as_str()))
                .await
                .unwrap_or_else(|_| Err(timed_out()))?
                .collect();
        let mut last = None;
        for (i, addr) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
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

    /// Takes a connection back after its response ended.
    fn put(self: &Arc<Self>, sender: SendRequest<LimitedBody>) {
        if sender.is_closed() {
            return;
        }
        // It may not be ready yet: its connection task has not yet run since the
        // body ended, or the upstream answered before the upload finished.
        // `checkout` skips it until it is and `acquire` waits on it, so no task is
        // spawned per request to wait for it.
        {
            let mut idle = self.lock();
            if idle.len() >= self.settings.max_idle_per_endpoint {
                return;
            }
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        self.returned.notify_one();
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
                let expired: Vec<Idle> = {
                    let mut idle = pool.lock();
                    let now = Instant::now();
                    let keep = idle
                        .iter()
                        .position(|c| now.duration_since(c.since) < timeout)
                        .unwrap_or(idle.len());
                    let mut expired: Vec<Idle> = idle.drain(..keep).collect();
                    idle.retain(|c| !c.sender.is_closed());
                    expired.shrink_to_fit();
                    expired
                };
                // Closed outside the lock.
                drop(expired);
            }
        });
    }
}

type Slot<'a> = Result<tokio::sync::SemaphorePermit<'a>, tokio::sync::AcquireError>;

/// What woke a request waiting for a connection.
enum Woke<'a> {
    Slot(Slot<'a>),
    Returned,
    Ready(bool),
}

/// What a request waiting for a connection got: one to reuse, or leave to open one.
enum Got<'a> {
    Idle(SendRequest<LimitedBody>),
    Slot(Slot<'a>),
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
}

/// Holds a connection while its response body is read.
#[derive(Debug)]
struct Lease {
    sender: SendRequest<LimitedBody>,
    pool: Arc<PoolInner>,
}

/// An upstream response body that returns its connection to the pool when it has
/// been read to the end, and closes it when dropped before that.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn wrap(response: Response<Incoming>, lease: Option<Lease>) -> Response<Self> {
        response.map(|inner| PooledBody { inner, lease })
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.put(lease.sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.release(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            // The connection is broken; dropping the sender lets it close.
            Some(Err(_)) => this.lease = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies that are empty from the start (HEAD, 204, 304) are never polled.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
