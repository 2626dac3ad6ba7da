//! A client connection's life: closed once it has been idle for `client_idle_timeout`
//! (an idle keep-alive connection, or a slow-loris client still sending its request
//! head), and drained gracefully on shutdown.
//!
//! hyper has the first bound built in (`header_read_timeout`), but it arms a fresh
//! boxed timer for every request: one allocation and ~1.5k instructions, 4 % of a
//! proxied request. Here each connection keeps one timer that is looked at only when
//! it fires; a request costs two atomic counts and a clock read. Likewise the drain
//! signal is checked with an atomic load rather than a future polled at every wakeup.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};

/// Whether a connection has a request in progress, and since when it has not.
#[derive(Debug)]
pub(crate) struct IdleClock {
    base: Instant,
    /// Requests whose response has not been sent yet.
    busy: AtomicUsize,
    /// Milliseconds from `base` to the end of the latest response.
    idle_since_ms: AtomicU64,
    /// The connection speaks HTTP/2 (it is told GOAWAY rather than cut).
    http2: AtomicBool,
}

impl IdleClock {
    /// A clock for a connection accepted now: idle, with no request yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        })
    }

    /// Marks a request in progress until the returned guard is dropped, which the
    /// response body does once it has been sent (or the request is abandoned).
    pub(crate) fn busy(self: &Arc<Self>, http2: bool) -> Busy {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection times out if nothing changes, or `None` when it already has.
    fn deadline(&self, now: Instant, timeout: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return Some(now + timeout);
        }
        let idle_since =
            self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        let deadline = idle_since + timeout;
        (now < deadline).then_some(deadline)
    }
}

/// A request in progress on a client connection; see [`IdleClock::busy`].
#[derive(Debug)]
pub(crate) struct Busy(Arc<IdleClock>);

impl Drop for Busy {
    fn drop(&mut self) {
        let clock = &*self.0;
        let ms = u64::try_from(clock.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Before the count drops, so a timer that sees no request sees this time.
        clock.idle_since_ms.fetch_max(ms, Ordering::Relaxed);
        clock.busy.fetch_sub(1, Ordering::Release);
    }
}

/// Tells open client connections to finish, and counts them until they have.
pub(crate) struct Drain {
    started: Arc<AtomicBool>,
    signal: Arc<Notify>,
    open: watch::Sender<()>,
}

impl Drain {
    /// A drain for one listener's connections.
    pub(crate) fn new() -> Self {
        Self {
            started: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(Notify::new()),
            open: watch::Sender::new(()),
        }
    }

    /// What one connection holds: the count of open ones and the signal to finish.
    pub(crate) fn watch(&self) -> DrainWatch {
        DrainWatch {
            started: self.started.clone(),
            signal: self.signal.clone().notified_owned(),
            open: self.open.subscribe(),
        }
    }

    /// Client connections still open.
    pub(crate) fn open(&self) -> usize {
        self.open.receiver_count()
    }

    /// Asks every connection to finish its requests and close, then waits until all
    /// have.
    pub(crate) async fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.signal.notify_waiters();
        self.open.closed().await;
    }
}

/// One connection's part in a [`Drain`], taken when it is accepted (so a drain that
/// starts before its task first runs still reaches it).
pub(crate) struct DrainWatch {
    started: Arc<AtomicBool>,
    signal: OwnedNotified,
    open: watch::Receiver<()>,
}

pin_project! {
    /// A served client connection bound by its idle timeout and the drain.
    pub(crate) struct ClientConnection<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: Sleep,
        // Polled once so the drain can wake this task; afterwards `started` is read.
        #[pin]
        drain_signal: OwnedNotified,
        drain_started: Arc<AtomicBool>,
        _open: watch::Receiver<()>,
        clock: Arc<IdleClock>,
        timeout: Duration,
        // The timer has been polled since it was last set.
        timer_armed: bool,
        drain_armed: bool,
        // graceful_shutdown has been called (drain, or an idle HTTP/2 connection).
        closing: bool,
    }
}

/// What a connection needs to be wrapped: hyper-util's connections, which can be told
/// to finish gracefully.
pub(crate) trait Graceful: Future {
    /// Finish the requests in progress, take no more, then close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> Graceful for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::Connection::graceful_shutdown(self);
    }
}

impl<C> ClientConnection<C> {
    /// Wraps a served connection; `clock` is the one its service marks busy.
    pub(crate) fn new(
        conn: C,
        clock: Arc<IdleClock>,
        timeout: Duration,
        drain: DrainWatch,
    ) -> Self {
        Self {
            conn,
            timer: tokio::time::sleep_until(clock.base + timeout),
            drain_signal: drain.signal,
            drain_started: drain.started,
            _open: drain.open,
            clock,
            timeout,
            timer_armed: false,
            drain_armed: false,
            closing: false,
        }
    }
}

impl<C, T, E> Future for ClientConnection<C>
where
    C: Graceful<Output = Result<T, E>>,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                return Poll::Ready(result.map(|_| ()));
            }
            if !*this.closing && (!*this.drain_armed || this.drain_started.load(Ordering::Relaxed))
            {
                *this.drain_armed = true;
                let signalled = this.drain_signal.as_mut().poll(cx).is_ready();
                if signalled || this.drain_started.load(Ordering::SeqCst) {
                    *this.closing = true;
                    this.conn.as_mut().graceful_shutdown();
                    continue;
                }
            }
            // After `Sleep` first registers, it wakes this task when it fires; until
            // then, checking it is one atomic load.
            if *this.timer_armed && !this.timer.is_elapsed() {
                return Poll::Pending;
            }
            *this.timer_armed = true;
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            *this.timer_armed = false;
            match this.clock.deadline(now, *this.timeout) {
                Some(deadline) => this.timer.as_mut().reset(deadline),
                // An HTTP/2 connection is told GOAWAY and given one more period.
                None if this.clock.http2.load(Ordering::Relaxed) && !*this.closing => {
                    *this.closing = true;
                    this.conn.as_mut().graceful_shutdown();
                    this.timer.as_mut().reset(now + *this.timeout);
                }
                // HTTP/1 between requests (idle, or a head still arriving): close,
                // as hyper's header-read timeout would.
                None => {
                    tracing::debug!("client connection idle for {:?}; closing", this.timeout);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}
