//! A client connection's life: closed once it has been idle for `client_idle_timeout`
//! (an idle keep-alive connection, or a slow-loris client still sending its request
//! head), cut once it has taken no byte of what is written to it for
//! `client_send_timeout`, and drained gracefully on shutdown.
//!
//! "Idle" means: no request still arriving (its body) or still answered (hyper has not
//! taken all of its response), and no write waiting for the client to read (hyper may
//! still hold the tail of a response). An HTTP/1 connection idle that long is closed,
//! as hyper's own header-read timeout would close it. An HTTP/2 one (known by its
//! preface) is told GOAWAY; hyper closes it once its open streams end and the client
//! has acknowledged the shutdown, and keeps it while the client does neither, as it did
//! without this timer (one that never sent a request is cut a period after GOAWAY).
//!
//! hyper has the first bound built in (`header_read_timeout`), but it arms a fresh
//! boxed timer for every request: one allocation and ~1.5k instructions, 4 % of a
//! proxied request. Here each connection keeps one timer that is looked at only when
//! it fires; a request costs two atomic counts and a clock read. Likewise the drain
//! signal is checked with an atomic load rather than a future polled at every wakeup.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};

/// Whether a connection has a request in progress, and since when it has not.
#[derive(Debug)]
pub(crate) struct IdleClock {
    base: Instant,
    /// Requests whose response body hyper has not taken in full yet.
    busy: AtomicUsize,
    /// The last write to the client would have blocked: it is not reading (yet).
    write_blocked: AtomicBool,
    /// Milliseconds from `base` to the latest end of a response or of a blocked write.
    idle_since_ms: AtomicU64,
    /// Milliseconds from `base` to when writes last became blocked.
    blocked_since_ms: AtomicU64,
    /// The connection opened with the HTTP/2 preface (it is told GOAWAY, not cut).
    http2: AtomicBool,
    /// A request has come in: without one, an HTTP/2 connection has no stream to wait for.
    asked: AtomicBool,
    /// HTTP/2: the streamed response bodies in progress ([`Busy::watch_stream`]).
    streams: Mutex<Vec<Weak<AtomicU64>>>,
}

impl IdleClock {
    /// A clock for a connection accepted now: idle, with no request yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            busy: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            blocked_since_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        })
    }

    /// Marks a request in progress until the returned guard and its clones are
    /// dropped: the response body drops its one once hyper has taken all of it, the
    /// request body once it has all arrived (or the request is abandoned).
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        if !self.asked.load(Ordering::Relaxed) {
            self.asked.store(true, Ordering::Relaxed);
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Records whether a write to the client would have blocked; on the change back,
    /// idleness counts from now, and on the change to blocked, the stall does.
    /// Called on every write, so the common case is a load.
    fn wrote(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
            if blocked {
                self.blocked_since_ms
                    .store(self.elapsed_ms(), Ordering::Relaxed);
            } else {
                self.mark_idle();
            }
        }
    }

    fn mark_idle(&self) {
        self.idle_since_ms
            .fetch_max(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn since(&self, ms: &AtomicU64) -> Instant {
        self.base + Duration::from_millis(ms.load(Ordering::Relaxed))
    }

    /// When the connection times out if nothing changes, or how it already has.
    fn deadline(&self, now: Instant, timeouts: Timeouts) -> Result<Instant, Expired> {
        if self.write_blocked.load(Ordering::Relaxed) {
            let since = self.since(&self.blocked_since_ms);
            return unless_past(now, since + timeouts.send, Expired::Stalled);
        }
        if self.busy.load(Ordering::Acquire) > 0 {
            // Looked at again within the send timeout, so that a write blocked from
            // now on is cut in time even when that timeout is the shorter.
            let next = now + timeouts.idle.min(timeouts.send);
            return match self.oldest_stream_wait() {
                None => Ok(next),
                Some(since) => unless_past(now, since + timeouts.send, Expired::Stalled)
                    .map(|deadline| deadline.min(next)),
            };
        }
        // Looked at again within the send timeout here too: the timer is not moved when
        // a request comes in, and its writes may block long before the idle deadline.
        let since = self.since(&self.idle_since_ms);
        unless_past(now, since + timeouts.idle, Expired::Idle)
            .map(|deadline| deadline.min(now + timeouts.send))
    }

    /// Since when the longest-waiting HTTP/2 response body has had a frame hyper has
    /// not sent on (the client's flow-control window is shut); `None` when none waits.
    fn oldest_stream_wait(&self) -> Option<Instant> {
        if !self.http2.load(Ordering::Relaxed) {
            return None;
        }
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = streams
            .iter()
            .filter_map(Weak::upgrade)
            .map(|stamp| stamp.load(Ordering::Relaxed))
            .filter(|&ms| ms > 0)
            .min()?;
        Some(self.base + Duration::from_millis(oldest - 1))
    }
}

/// `deadline` while it is ahead of `now`, else `expired`.
fn unless_past(now: Instant, deadline: Instant, expired: Expired) -> Result<Instant, Expired> {
    if now < deadline {
        Ok(deadline)
    } else {
        Err(expired)
    }
}

/// A client connection's two bounds (`[server]` in the config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// `client_idle_timeout`: nothing in progress.
    pub(crate) idle: Duration,
    /// `client_send_timeout`: writes to the client blocked, none of them taken.
    pub(crate) send: Duration,
}

/// How a connection's time ran out.
#[derive(Debug, PartialEq, Eq)]
enum Expired {
    /// Nothing in progress for `client_idle_timeout`.
    Idle,
    /// The client took no byte for `client_send_timeout`.
    Stalled,
}

/// A request in progress on a client connection; see [`IdleClock::busy`].
#[derive(Debug)]
pub(crate) struct Busy(Arc<IdleClock>);

impl Busy {
    /// For an HTTP/2 response body streamed from an upstream: a watch on whether hyper
    /// sends its frames on. A stream whose client never opens its flow-control window
    /// blocks no socket write (the connection's other frames go on), so only this
    /// shows that the client takes nothing of it; `None` on HTTP/1, where the socket
    /// does.
    pub(crate) fn watch_stream(&self) -> Option<StreamWatch> {
        if !self.0.http2.load(Ordering::Relaxed) {
            return None;
        }
        let stamp = Arc::new(AtomicU64::new(0));
        let mut streams = self
            .0
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(&stamp));
        Some(StreamWatch(stamp))
    }

    /// The body has handed hyper a frame: until hyper asks for the next, it waits
    /// for the client.
    pub(crate) fn stream_waits(&self, watch: &StreamWatch) {
        watch.0.store(self.0.elapsed_ms() + 1, Ordering::Relaxed);
    }
}

/// See [`Busy::watch_stream`]: 0 while the body is not waiting for its client, else
/// 1 + the milliseconds from the connection's start to when it began to.
#[derive(Debug)]
pub(crate) struct StreamWatch(Arc<AtomicU64>);

impl StreamWatch {
    /// hyper has asked for the next frame.
    pub(crate) fn taken(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Clone for Busy {
    fn clone(&self) -> Self {
        self.0.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.0.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Before the count drops, so a timer that sees no request sees this time.
        self.0.mark_idle();
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
}

/// A client socket that tells its [`IdleClock`] whether writes are getting through,
/// and that notices an HTTP/1 client hanging up while its request is in progress.
///
/// hyper is told not to read while an HTTP/1 request is in progress (`half_close`):
/// its read-ahead, which is how it would notice the hang-up, needs a fresh read
/// buffer each time, since the request's headers still point into the old one (1.6
/// of 6.7 heap allocations and 3.5 % of the instructions of a proxied request). The
/// hang-up is noticed here instead, at every flush hyper asks for (each turn of its
/// connection loop) and at every write that would block (hyper does not get to its
/// flush then): a readiness check, and a one-byte peek when the socket turns readable.
/// An end of stream fails the flush or write, so hyper drops the connection and the
/// request with it, as it would have on its own read. Like that read, a peek cannot
/// see an end behind data hyper has not read yet (a request pipelined after the one
/// in progress was read): that hang-up is noticed once hyper reads, after the response.
#[derive(Debug)]
pub(crate) struct WatchedIo<T> {
    inner: T,
    clock: Arc<IdleClock>,
    /// Bytes taken off the socket before hyper read (the beginning of an HTTP/2
    /// preface that came in pieces), given to hyper first.
    replay: Bytes,
    /// A peek found data waiting (a pipelined request, the rest of a body): no more
    /// peeking until hyper reads.
    data_waiting: bool,
}

/// A socket that can be looked at without taking its data.
pub(crate) trait Peek {
    /// Like `TcpStream::poll_peek`: bytes copied into `buf`, 0 at end of stream.
    fn poll_peek(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>>;
}

impl Peek for tokio::net::TcpStream {
    fn poll_peek(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        tokio::net::TcpStream::poll_peek(self, cx, buf)
    }
}

impl<T> WatchedIo<T> {
    /// Wraps the accepted socket of the connection `clock` times.
    pub(crate) fn new(inner: T, clock: Arc<IdleClock>) -> Self {
        Self {
            inner,
            clock,
            replay: Bytes::new(),
            data_waiting: false,
        }
    }

    /// Gives `bytes`, already read off the socket, to the next reads.
    pub(crate) fn replay(&mut self, bytes: Bytes) {
        self.replay = bytes;
    }

    /// The connection speaks HTTP/2: told GOAWAY when idle, never peeked at.
    pub(crate) fn set_http2(&self) {
        self.clock.http2.store(true, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        // hyper has read: what a peek saw waiting may be gone (a read that exactly fills
        // the buffer drains the socket too), so the next flush looks again.
        self.data_waiting = false;
        read
    }
}

impl<T: Peek> WatchedIo<T> {
    /// Looks at the bytes waiting on the socket without taking them.
    pub(crate) fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_peek(cx, buf)
    }

    /// Fails when an HTTP/1 client has closed its end while a request is in progress.
    /// Costs a readiness check; the one-byte peek (a syscall) runs only once the
    /// socket turns readable.
    fn check_hang_up(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.data_waiting
            || self.clock.busy.load(Ordering::Relaxed) == 0
            || self.clock.http2.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let mut byte = [0u8; 1];
        match self.inner.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
            Poll::Ready(Ok(0)) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client closed its connection with a request in progress",
            )),
            Poll::Ready(Ok(_)) => {
                self.data_waiting = true;
                Ok(())
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: Peek> WatchedIo<T> {
    /// Tells the clock whether the write got through; one that would block is also a
    /// moment to look for a hang-up, since hyper does not get to its flush then.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.clock.wrote(written.is_pending());
        if written.is_pending() {
            self.check_hang_up(cx)?;
        }
        written
    }
}

impl<T: AsyncWrite + Peek + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_hang_up(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

impl Drop for Drain {
    /// A drain dropped unstarted (its listener's task aborted) still lets the
    /// connections finish gracefully rather than run on unbounded.
    fn drop(&mut self) {
        self.started.store(true, Ordering::SeqCst);
        self.signal.notify_waiters();
    }
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
        timeouts: Timeouts,
        // The timer has registered (been polled with budget) since it was last set.
        timer_armed: bool,
        drain_armed: bool,
        // graceful_shutdown has been called (drain, or an idle HTTP/2 connection).
        closing: bool,
    }
}

/// What a connection needs to be wrapped: one that can be told to finish gracefully.
pub(crate) trait Graceful: Future {
    /// Finish the requests in progress, take no more, then close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<C> ClientConnection<C> {
    /// Wraps a served connection; `clock` is the one its service marks busy.
    pub(crate) fn new(
        conn: C,
        clock: Arc<IdleClock>,
        timeouts: Timeouts,
        drain: DrainWatch,
    ) -> Self {
        Self {
            conn,
            // Within the send timeout if that is the shorter: see `IdleClock::deadline`.
            timer: tokio::time::sleep_until(clock.base + timeouts.idle.min(timeouts.send)),
            drain_signal: drain.signal,
            drain_started: drain.started,
            _open: drain.open,
            clock,
            timeouts,
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
            // After `Sleep` registers, it wakes this task when it fires; until then,
            // checking it is one atomic load.
            if *this.timer_armed && !this.timer.is_elapsed() {
                return Poll::Pending;
            }
            // Outside tokio's coop budget: the connection may have spent it, and a
            // `Sleep` polled without budget registers nothing.
            let timer = this.timer.as_mut();
            let fired = std::pin::pin!(tokio::task::coop::unconstrained(timer)).poll(cx);
            *this.timer_armed = true;
            if fired.is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            *this.timer_armed = false;
            match this.clock.deadline(now, *this.timeouts) {
                Ok(deadline) => this.timer.as_mut().reset(deadline),
                // A client that reads nothing: cut, HTTP/1 or HTTP/2, with whatever it
                // was being sent (its upstream connections close with it).
                Err(Expired::Stalled) => {
                    tracing::debug!("client took no byte for {:?}; closing", this.timeouts.send);
                    return Poll::Ready(Ok(()));
                }
                // HTTP/2: GOAWAY. hyper closes the connection once its open streams
                // end (one may still be sending a body the client reads slowly) and the
                // client has acknowledged; until then the timer only watches for a
                // client that stops reading.
                // One that never asked anything has no stream to wait for: it gets one
                // more period to go, then is cut.
                Err(Expired::Idle)
                    if this.clock.http2.load(Ordering::Relaxed)
                        && (this.clock.asked.load(Ordering::Relaxed) || !*this.closing) =>
                {
                    if !*this.closing {
                        *this.closing = true;
                        this.conn.as_mut().graceful_shutdown();
                    }
                    if this.clock.asked.load(Ordering::Relaxed) {
                        this.timer.as_mut().reset(now + this.timeouts.send);
                    } else {
                        this.timer.as_mut().reset(now + this.timeouts.idle);
                    }
                }
                // HTTP/1 between requests (idle, or a head still arriving): close,
                // as hyper's header-read timeout would.
                Err(Expired::Idle) => {
                    tracing::debug!(
                        "client connection idle for {:?}; closing",
                        this.timeouts.idle
                    );
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Stands in for hyper's connection: never finishes by itself, finishes once told
    /// to shut down gracefully. On poll number `flood_on` it spends tokio's coop
    /// budget, as a run of socket reads does.
    struct FakeConn {
        polls: usize,
        flood_on: usize,
        shutdowns: Arc<AtomicUsize>,
        closing: bool,
    }

    impl FakeConn {
        fn new(flood_on: usize) -> Self {
            Self {
                polls: 0,
                flood_on,
                shutdowns: Arc::new(AtomicUsize::new(0)),
                closing: false,
            }
        }
    }

    impl Future for FakeConn {
        type Output = Result<(), ()>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.polls += 1;
            if self.closing {
                return Poll::Ready(Ok(()));
            }
            if self.polls == self.flood_on {
                while let Poll::Ready(r) = tokio::task::coop::poll_proceed(cx) {
                    r.made_progress();
                }
            }
            Poll::Pending
        }
    }

    impl Graceful for FakeConn {
        fn graceful_shutdown(self: Pin<&mut Self>) {
            let this = self.get_mut();
            this.shutdowns.fetch_add(1, Ordering::SeqCst);
            this.closing = true;
        }
    }

    const T: Duration = Duration::from_millis(50);

    /// Whether an idle connection closes within 20 periods.
    async fn closes_when_idle(conn: FakeConn) -> bool {
        let drain = Drain::new();
        let task = tokio::spawn(ClientConnection::new(
            conn,
            IdleClock::new(),
            Timeouts { idle: T, send: T },
            drain.watch(),
        ));
        tokio::time::timeout(T * 20, task).await.is_ok()
    }

    #[tokio::test]
    async fn an_idle_connection_closes_even_if_its_first_poll_spent_the_budget() {
        assert!(closes_when_idle(FakeConn::new(usize::MAX)).await);
        assert!(closes_when_idle(FakeConn::new(1)).await);
    }

    #[tokio::test]
    async fn a_blocked_write_is_bounded_by_the_send_timeout_and_idleness_counts_from_its_end() {
        // Long enough that a descheduled test thread cannot reach a deadline.
        let t = Duration::from_secs(60);
        let timeouts = Timeouts {
            idle: t,
            send: t * 2,
        };
        let clock = IdleClock::new();
        let before = Instant::now();
        clock.wrote(true);
        let after = Instant::now();
        // Past the idle timeout, not past the send timeout: kept, until the latter.
        let deadline = clock
            .deadline(after + t, timeouts)
            .expect("not stalled yet");
        // Kept in whole milliseconds.
        assert!(
            deadline + Duration::from_millis(1) >= before + t * 2,
            "{deadline:?}"
        );
        assert!(deadline <= after + t * 2, "{deadline:?}");
        assert_eq!(
            clock.deadline(after + t * 2, timeouts),
            Err(Expired::Stalled)
        );
        let before = Instant::now();
        clock.wrote(false);
        let deadline = clock
            .deadline(Instant::now(), timeouts)
            .expect("not idle yet");
        assert!(
            deadline + Duration::from_millis(1) >= before + t,
            "{deadline:?}"
        );
        // With a request in progress the clock is looked at again within the shorter
        // of the two, so that a write blocked from then on is cut in time.
        let busy = clock.busy();
        let now = Instant::now();
        let shorter = Timeouts {
            idle: t * 2,
            send: t,
        };
        assert_eq!(clock.deadline(now, shorter), Ok(now + t));
        // And without one, for the next request's writes: the timer stays as it is
        // set when a request comes in.
        drop(busy);
        let now = Instant::now();
        assert_eq!(clock.deadline(now, shorter), Ok(now + t));
    }

    /// A socket whose data and end are set by the test.
    #[derive(Default)]
    struct FakeSocket {
        data: std::sync::Mutex<Vec<u8>>,
        eof: AtomicBool,
    }

    impl Peek for FakeSocket {
        fn poll_peek(&self, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
            let data = self.data.lock().unwrap();
            if !data.is_empty() {
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                Poll::Ready(Ok(n))
            } else if self.eof.load(Ordering::SeqCst) {
                Poll::Ready(Ok(0))
            } else {
                Poll::Pending
            }
        }
    }

    impl AsyncRead for FakeSocket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut data = self.data.lock().unwrap();
            if data.is_empty() && !self.eof.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
            let n = data.len().min(buf.remaining());
            buf.put_slice(&data[..n]);
            data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for FakeSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Data seen by a peek, then read by one read that fills the buffer exactly (the
    /// socket is now empty), then the client's end: the next flush must fail.
    #[test]
    fn a_hang_up_after_a_read_that_filled_the_buffer_is_noticed() {
        let clock = IdleClock::new();
        let _busy = clock.busy();
        let mut io = WatchedIo::new(FakeSocket::default(), clock);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        *io.inner.data.lock().unwrap() = vec![b'x'; 10];
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        let mut mem = [0u8; 10];
        let mut buf = ReadBuf::new(&mut mem);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_ready());
        assert_eq!(buf.filled().len(), 10);
        io.inner.eof.store(true, Ordering::SeqCst);
        assert!(
            matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Err(_))),
            "the hang-up went unnoticed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_drain_reaches_connections_polled_before_and_after_it_starts() {
        for _ in 0..50 {
            let drain = Drain::new();
            let mut tasks = Vec::new();
            let mut counts = Vec::new();
            for i in 0..8 {
                let conn = FakeConn::new(usize::MAX);
                counts.push(conn.shutdowns.clone());
                let conn = ClientConnection::new(
                    conn,
                    IdleClock::new(),
                    Timeouts {
                        idle: Duration::from_secs(3600),
                        send: Duration::from_secs(3600),
                    },
                    drain.watch(),
                );
                if i % 2 == 0 {
                    tasks.push(tokio::spawn(conn));
                } else {
                    // Accepted before the drain, first polled after it started.
                    tasks.push(tokio::spawn(async move {
                        tokio::task::yield_now().await;
                        conn.await
                    }));
                }
            }
            tokio::time::timeout(Duration::from_secs(5), drain.start())
                .await
                .expect("the drain finishes");
            for t in tasks {
                t.await.expect("no panic").expect("closed cleanly");
            }
            assert!(counts.iter().all(|c| c.load(Ordering::SeqCst) == 1));
        }
    }
}
