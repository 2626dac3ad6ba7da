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

use crate::proxy::{self, Peer};
use crate::shared::Shared;
pub(crate) use client_conn::Busy;
use client_conn::{ClientConnection, Drain, DrainWatch, IdleClock, WatchedIo};
use protocol::{Protocols, Serve};

mod client_conn;
mod protocol;
mod workers;
/// After an accept error (out of file descriptors, say) pause before retrying, rather
/// than spinning on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

fn protocols(max_headers: usize) -> Protocols {
    // The gateway answers 431 itself up to 4x its limit; beyond that hyper's own bare
    // 431 protects the read buffer.
    let buffer = (max_headers.saturating_mul(4)).max(64 * 1024);
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
        let idle_timeout = self
            .shared
            .snapshot
            .load()
            .config
            .server
            .client_idle_timeout;
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
            conn: ClientConnection::new(conn, clock, idle_timeout, drain),
            shared: self.shared.clone(),
            addr,
            _load: load,
        });
    }
}

/// Serves until `shutdown` resolves, then drains for the configured grace period.
/// With one worker, connections are served on the calling runtime; with more, each
/// is handed to one of `workers` threads ([`workers`]).
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max_headers = shared.snapshot.load().config.server.max_request_headers;
    let site = Site {
        shared: shared.clone(),
        protocols: Arc::new(protocols(max_headers)),
    };
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
