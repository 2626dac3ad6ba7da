//! The proxy listener: accepts connections, serves HTTP/1.1 and h2c on the same port
//! (told apart by the first bytes: `protocol`), and drains gracefully on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::client::together;
use crate::proxy::{self, Peer};
use crate::shared::Shared;
pub(crate) use client_conn::{Busy, StreamWatch};
use client_conn::{ClientConnection, Drain, DrainWatch, IdleClock, Timeouts, WatchedIo};
use protocol::{Protocols, Serve};

mod client_conn;
mod protocol;
mod workers;
/// After an accept error (out of file descriptors, say) pause before retrying, rather
/// than spinning on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The read buffer for request heads, sized once from `max_request_headers` at
/// startup: the gateway answers 431 itself up to 4x its limit; beyond that hyper's own
/// bare 431 protects the buffer. So a reload may raise the limit up to this size only.
pub(crate) fn head_buffer(max_headers: usize) -> usize {
    (max_headers.saturating_mul(4)).max(64 * 1024)
}

/// The listener's protocols, reading request heads into `buffer` bytes ([`head_buffer`]).
fn protocols(buffer: usize) -> Protocols {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // `client_conn` bounds the wait for a request head, at less cost per request.
        .header_read_timeout(None)
        .max_buf_size(buffer)
        .keep_alive(true)
        // No read-ahead while a request is in progress: `WatchedIo` notices a hang-up.
        .half_close(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX));
    Protocols { http1, http2 }
}

pin_project! {
    /// One client connection's task: the connection, then the bookkeeping once it ends.
    /// Written out rather than as an async block, whose state would keep room for both
    /// the parts captured and the connection built from them (~2 KB more per
    /// connection).
    struct Served<C> {
        #[pin]
        conn: C,
        shared: Arc<Shared>,
        addr: SocketAddr,
        // Counts the connection on its worker thread until the task ends or is dropped.
        _load: Option<workers::Load>,
    }
}

impl<C, E> Future for Served<C>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Err(e) = ready!(this.conn.poll(cx)) {
            tracing::debug!("connection from {} ended: {e}", this.addr);
        }
        this.shared.metrics.open_connections.dec();
        Poll::Ready(())
    }
}

/// What serving a client connection needs, on whichever thread serves it.
#[derive(Clone)]
pub(crate) struct Site {
    shared: Arc<Shared>,
    protocols: Arc<Protocols>,
}

impl Site {
    /// Serves one accepted client connection on a task of the current runtime.
    fn spawn(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        drain: DrainWatch,
        load: Option<workers::Load>,
    ) {
        let peer = Arc::new(Peer::new(addr, "http"));
        let timeouts = {
            let server = &self.shared.snapshot.load().config.server;
            Timeouts {
                idle: server.client_idle_timeout,
                send: server.client_send_timeout,
            }
        };
        let clock = IdleClock::new();
        let svc_clock = clock.clone();
        let svc_shared = self.shared.clone();
        let service = service_fn(move |req| {
            let busy = svc_clock.busy();
            // Not wrapped in an async block: see `proxy::handle` on future size.
            proxy::handle(svc_shared.clone(), peer.clone(), req, busy)
        });
        let conn = Serve::new(
            WatchedIo::new(stream, clock.clone()),
            service,
            self.protocols.clone(),
        );
        self.shared.metrics.open_connections.inc();
        tokio::spawn(Served {
            conn: ClientConnection::new(conn, clock, timeouts, drain),
            shared: self.shared.clone(),
            addr,
            _load: load,
        });
    }
}

/// Serves until `shutdown` resolves, then drains for the configured grace period.
/// With one worker, connections are served on the calling runtime; with more, each
/// is handed to one of `workers` threads ([`workers`]). Request heads are read into
/// `head_buffer` bytes, the size the reload task checks a raised limit against.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    workers: usize,
    head_buffer: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let site = Site {
        shared: shared.clone(),
        protocols: Arc::new(protocols(head_buffer)),
    };
    // Serving in place on a single-threaded runtime: every task runs on this thread.
    let in_place = workers <= 1
        && shared.snapshot.load().config.server.io_uring
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
    let _together = in_place.then(together::enable).flatten();
    let mut pool = match workers {
        0 | 1 => None,
        n => Some(workers::Workers::start(n, &site)?),
    };
    let drain = Drain::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on {addr}: {e}");
        }
        match &mut pool {
            None => site.spawn(stream, addr, drain.watch(), None),
            Some(pool) => pool.hand_over(stream, addr, drain.watch()),
        }
    }
    drop(listener);
    shared.ready.store(false, Ordering::SeqCst);
    // Workers take no more connections; the ones they have finish under the drain.
    let pool = pool.map(workers::Workers::close);
    let grace = shared.snapshot.load().config.server.shutdown_grace;
    let open = drain.open();
    tracing::info!(open_connections = open, grace = ?grace, "stopped accepting; draining");
    match tokio::time::timeout(grace, drain.start()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(grace = ?grace, "grace period over; closing remaining connections")
        }
    }
    if let Some(pool) = pool {
        pool.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};

    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::discovery::Registry;
    use crate::metrics::Metrics;
    use crate::snapshot;

    /// Bounds every wait of the test.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// Forwards a wake to the task's own waker and remembers that it happened.
    struct Noticed {
        task: Waker,
        woken: AtomicBool,
    }

    impl Wake for Noticed {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Relaxed);
            self.task.wake_by_ref();
        }
    }

    /// One poll of a request's future: whether it was ready, and whether it woke its
    /// own task before it returned.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Step {
        ready: bool,
        woke_itself: bool,
    }

    /// Polls `proxy::Handling` and writes down each poll's [`Step`].
    struct Recorded {
        inner: proxy::Handling,
        steps: Arc<Mutex<Vec<Step>>>,
    }

    impl Future for Recorded {
        type Output = <proxy::Handling as Future>::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let noticed = Arc::new(Noticed {
                task: cx.waker().clone(),
                woken: AtomicBool::new(false),
            });
            let waker = Waker::from(noticed.clone());
            let poll = Pin::new(&mut self.inner).poll(&mut Context::from_waker(&waker));
            let step = Step {
                ready: poll.is_ready(),
                woke_itself: noticed.woken.load(Ordering::Relaxed),
            };
            self.steps.lock().expect("steps").push(step);
            poll
        }
    }

    /// The turn `proxy::Handling` gives an upstream's answer (the run-queue order it
    /// counts on is pinned in `proxy`'s tests): the poll that finds the answer wakes
    /// its own task and returns `Pending`, and the next poll hands the answer on.
    /// Without the turn the answer would be written in the same poll it was read.
    #[test]
    fn an_answer_is_handed_on_one_turn_after_it_arrives() {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let runtime = crate::runtime().expect("runtime");
        let answer = runtime
            .block_on(async { tokio::time::timeout(PATIENCE, exchange(steps.clone())).await })
            .expect("the exchange took too long");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        let steps = steps.lock().expect("steps").clone();
        let [.., answered, handed_on] = steps[..] else {
            panic!("the request's future was polled fewer than twice: {steps:?}");
        };
        let turn = Step {
            ready: false,
            woke_itself: true,
        };
        let done = Step {
            ready: true,
            woke_itself: false,
        };
        assert_eq!((answered, handed_on), (turn, done), "{steps:?}");
        // Only the answer's poll wakes its own task.
        let early = &steps[..steps.len() - 2];
        assert!(
            early.iter().all(|s| !s.ready && !s.woke_itself),
            "{steps:?}"
        );
    }

    /// Sends one GET through `proxy::handle` to a one-shot upstream and returns the
    /// response the client read.
    async fn exchange(steps: Arc<Mutex<Vec<Step>>>) -> String {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut conn, _) = upstream.accept().await.expect("accept");
            let head = read_head(&mut conn).await;
            assert!(head.starts_with("GET /hello HTTP/1.1\r\n"), "{head}");
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("answer");
            // Open until the gateway lets go, so the answer is not cut short.
            let _ = conn.read(&mut [0; 64]).await;
        });

        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [upstreams.u]\nendpoints = [\"{upstream_addr}\"]\n\
             [[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"u\"\n"
        );
        let config = Arc::new(crate::config::parse(&text, Path::new("test.toml")).expect("config"));
        let metrics = Metrics::new();
        let mut registry = Registry::new();
        registry.sync(&config);
        let snapshot = snapshot::Builder::new(1).build(config, &registry, &metrics);
        let shared = Arc::new(Shared::new(snapshot, metrics));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, peer_addr) = listener.accept().await.expect("accept");
            let peer = Arc::new(Peer::new(peer_addr, "http"));
            let clock = IdleClock::new();
            let service = service_fn(move |req| Recorded {
                inner: proxy::handle(shared.clone(), peer.clone(), req, clock.busy()),
                steps: steps.clone(),
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });

        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /hello HTTP/1.1\r\nhost: shop.example\r\n\r\n")
            .await
            .expect("request");
        read_until(&mut client, |read| {
            read.contains("\r\n\r\n") && read.ends_with("ok")
        })
        .await
    }

    /// Reads up to and including the blank line that ends a head (and whatever came
    /// with it).
    async fn read_head(conn: &mut TcpStream) -> String {
        read_until(conn, |read| read.contains("\r\n\r\n")).await
    }

    /// Reads until what has been read is `done`; the peer leaving first fails the test.
    async fn read_until(conn: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
        let mut read = String::new();
        while !done(&read) {
            let mut chunk = [0; 256];
            let n = conn.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the peer left first, after: {read}");
            read.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        read
    }
}
