//! Worker threads, nginx's model in one process: with more than one worker, the
//! acceptor hands each client connection to one of N threads, and the connection stays
//! there. Each thread runs its own single-threaded runtime, so a request, the upstream
//! connection it uses ([`crate::worker`]) and its timers all live on one thread: no
//! work stealing, and no thread woken to look for work that another already has.
//!
//! The acceptor picks the worker with the fewest open client connections; a
//! connection's requests cannot move, so this is the balance there is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::{DrainWatch, Site};
use crate::proxy::client::together;
use crate::worker;

/// A client connection on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    drain: DrainWatch,
    load: Load,
}

/// A worker's open client connections.
struct Open {
    /// Also exported as `gateway_worker_connections{worker}`.
    count: Gauge,
    /// Woken when the count drops to zero.
    none: Notify,
}

/// One open client connection counted on its worker, until dropped.
pub(crate) struct Load(Arc<Open>);

impl Drop for Load {
    fn drop(&mut self) {
        if self.0.count.dec() == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// The acceptor's handle on one worker thread.
struct Worker {
    queue: mpsc::UnboundedSender<Accepted>,
    open: Arc<Open>,
}

/// The running worker threads.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    // Where the search for the least loaded worker starts; moves on with every
    // connection, so ties are shared out in turn.
    next: usize,
    stop: watch::Sender<()>,
    stopped: Vec<oneshot::Receiver<()>>,
}

/// The workers after the acceptor has stopped: they finish their connections.
pub(crate) struct Closing {
    stop: watch::Sender<()>,
    stopped: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts `n` worker threads, each with its own single-threaded runtime.
    pub(crate) fn start(n: usize, site: &Site) -> std::io::Result<Self> {
        let (stop, stop_rx) = watch::channel(());
        let io_uring = site.shared.snapshot.load().config.server.io_uring;
        let mut workers = Vec::with_capacity(n);
        let mut stopped = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = crate::runtime()?;
            let (queue, rx) = mpsc::unbounded_channel();
            let (done, done_rx) = oneshot::channel();
            let site = site.clone();
            let stop_rx = stop_rx.clone();
            let open = Arc::new(Open {
                count: site.shared.metrics.worker_connections(index),
                none: Notify::new(),
            });
            let worker_open = open.clone();
            thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    worker::enter(index);
                    // Every task of this runtime runs on this thread.
                    let _together = io_uring.then(together::enable).flatten();
                    runtime.block_on(run(site, rx, stop_rx, worker_open));
                    // Connections still open after the drain close here, with the runtime.
                    drop(runtime);
                    let _ = done.send(());
                })?;
            workers.push(Worker { queue, open });
            stopped.push(done_rx);
        }
        Ok(Self {
            workers,
            next: 0,
            stop,
            stopped,
        })
    }

    /// Hands an accepted connection to the worker with the fewest open connections.
    pub(crate) fn hand_over(&mut self, stream: TcpStream, addr: SocketAddr, mut drain: DrainWatch) {
        let n = self.workers.len();
        let start = self.next;
        self.next = (self.next + 1) % n;
        let Some(first) = (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.workers[i].open.count.get())
        else {
            return;
        };
        // Off this thread's reactor, onto the worker's when it arrives there.
        let mut stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("handing over the connection from {addr}: {e}");
                return;
            }
        };
        // A worker whose thread has ended (it cannot, short of a bug) hands the
        // connection on to the next one rather than closing it.
        for worker in (0..n).map(|i| &self.workers[(first + i) % n]) {
            worker.open.count.inc();
            let accepted = Accepted {
                stream,
                addr,
                drain,
                load: Load(worker.open.clone()),
            };
            match worker.queue.send(accepted) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => (stream, drain) = (back.stream, back.drain),
            }
        }
        tracing::error!("no worker thread is running; the connection from {addr} is closed");
    }

    /// Stops handing out connections; the workers serve the ones they have.
    pub(crate) fn close(self) -> Closing {
        Closing {
            stop: self.stop,
            stopped: self.stopped,
        }
    }
}

impl Closing {
    /// Ends the worker threads, closing the connections they still hold, and waits
    /// until each has.
    pub(crate) async fn stop(self) {
        // Sent, not only dropped: a sender dropped unsent means the acceptor's task was
        // aborted, and the workers then let their connections finish (see `run`).
        let _ = self.stop.send(());
        drop(self.stop);
        for stopped in self.stopped {
            let _ = stopped.await;
        }
    }
}

/// One worker thread's loop: serve what the acceptor hands over until it stops, then
/// let those connections finish until told to stop.
async fn run(
    site: Site,
    mut queue: mpsc::UnboundedReceiver<Accepted>,
    mut stop: watch::Receiver<()>,
    open: Arc<Open>,
) {
    while let Some(a) = queue.recv().await {
        match TcpStream::from_std(a.stream) {
            Ok(stream) => site.spawn(stream, a.addr, a.drain, Some(a.load)),
            Err(e) => tracing::warn!("registering the connection from {}: {e}", a.addr),
        }
    }
    // Told to stop after the drain: what is left closes with the runtime.
    if stop.changed().await.is_ok() {
        return;
    }
    // The sender was dropped unsent: `serve` was dropped (its task aborted). Its
    // `Drain`'s drop has told the connections to finish gracefully, as they do on the
    // calling runtime with one worker; the thread ends once they have.
    loop {
        let none = open.none.notified();
        tokio::pin!(none);
        none.as_mut().enable();
        if open.count.get() <= 0 {
            return;
        }
        none.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Drain;

    fn worker() -> (Worker, mpsc::UnboundedReceiver<Accepted>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let open = Arc::new(Open {
            count: Gauge::default(),
            none: Notify::new(),
        });
        (Worker { queue, open }, rx)
    }

    #[tokio::test]
    async fn a_connection_skips_a_worker_that_has_stopped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, addr) = listener.accept().await.unwrap();
        let (stopped, rx) = worker();
        drop(rx);
        let (live, mut live_rx) = worker();
        let (stop, _) = watch::channel(());
        let mut workers = Workers {
            workers: vec![stopped, live],
            next: 0,
            stop,
            stopped: Vec::new(),
        };
        let drain = Drain::new();
        // The stopped worker has no connections, so it is tried first.
        workers.hand_over(stream, addr, drain.watch());
        let accepted = live_rx.try_recv().expect("handed to the live worker");
        assert_eq!(accepted.addr, addr);
        assert_eq!(workers.workers[0].open.count.get(), 0);
        assert_eq!(workers.workers[1].open.count.get(), 1);
        drop(accepted);
        assert_eq!(workers.workers[1].open.count.get(), 0);
    }
}
