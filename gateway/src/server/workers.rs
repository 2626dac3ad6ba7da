//! Worker threads, nginx's model in one process: with more than one worker, the
//! acceptor hands each client connection to one of N threads, and the connection stays
//! there. Each thread runs its own single-threaded runtime, so a request, the upstream
//! connection it uses ([`crate::worker`]) and its timers all live on one thread: no
//! work stealing, and no thread woken to look for work that another already has.
//!
//! The acceptor picks the worker with the fewest open client connections; a
//! connection's requests cannot move, so this is the balance there is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::{DrainWatch, Site};
use crate::worker;

/// A client connection on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    drain: DrainWatch,
    load: Load,
}

/// One open client connection counted on its worker, until dropped.
pub(crate) struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The acceptor's handle on one worker thread.
struct Worker {
    queue: mpsc::UnboundedSender<Accepted>,
    open: Arc<AtomicUsize>,
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
        let mut workers = Vec::with_capacity(n);
        let mut stopped = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (queue, rx) = mpsc::unbounded_channel();
            let (done, done_rx) = oneshot::channel();
            let site = site.clone();
            let stop_rx = stop_rx.clone();
            thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    worker::enter(index);
                    runtime.block_on(run(site, rx, stop_rx));
                    // Connections still open after the drain close here, with the runtime.
                    drop(runtime);
                    let _ = done.send(());
                })?;
            workers.push(Worker {
                queue,
                open: Arc::new(AtomicUsize::new(0)),
            });
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
    pub(crate) fn hand_over(&mut self, stream: TcpStream, addr: SocketAddr, drain: DrainWatch) {
        let n = self.workers.len();
        let start = self.next;
        self.next = (self.next + 1) % n;
        let Some(worker) = (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            return;
        };
        // Off this thread's reactor, onto the worker's when it arrives there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("handing over the connection from {addr}: {e}");
                return;
            }
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        let load = Load(worker.open.clone());
        let accepted = Accepted {
            stream,
            addr,
            drain,
            load,
        };
        if worker.queue.send(accepted).is_err() {
            tracing::error!("a worker thread has stopped; the connection from {addr} is closed");
        }
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
) {
    while let Some(a) = queue.recv().await {
        match TcpStream::from_std(a.stream) {
            Ok(stream) => site.spawn(stream, a.addr, a.drain, Some(a.load)),
            Err(e) => tracing::warn!("registering the connection from {}: {e}", a.addr),
        }
    }
    // Resolves when the sender is dropped: nothing is ever sent.
    let _ = stop.changed().await;
}
