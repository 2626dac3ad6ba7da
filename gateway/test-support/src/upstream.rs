//! A fake upstream: counts hits and connections, echoes requests as JSON, streams
//! bodies both ways, and holds requests until the test releases them.
//!
//! Paths (as the upstream sees them, after the gateway's rewrite):
//! - `.../hold`: reports arrival on [`Hold::arrived`], answers after [`Hold::release`].
//! - `.../stream/N`: answers N bytes in 64 KiB chunks.
//! - `.../stream-gated`: sends 64 KiB, waits for a release, then 64 KiB more.
//! - `.../early`: answers 200 at once, then reads the request body to its end.
//! - `.../early-hold`: like `early`, once released as `hold` is.
//! - `.../upload`: counts body bytes as they arrive (see [`FakeUpstream::uploaded`]).
//! - `.../hop`: answers with hop-by-hop headers the gateway must remove.
//! - `.../status/NNN`: answers with that status.
//! - `.../close`: answers with `Connection: close`, then closes the connection.
//! - anything else: 200 with `{"upstream", "method", "path", "headers", "body_len"}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio::task::JoinHandle;

const CHUNK: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// Lets a test hold requests at the upstream and release them when it chooses.
pub struct Hold {
    arrived_tx: mpsc::UnboundedSender<()>,
    arrived_rx: Mutex<mpsc::UnboundedReceiver<()>>,
    permits: Semaphore,
}

impl Hold {
    fn new() -> Self {
        let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
        Self {
            arrived_tx,
            arrived_rx: Mutex::new(arrived_rx),
            permits: Semaphore::new(0),
        }
    }

    /// Waits (bounded) until one more held request has reached the upstream.
    pub async fn arrived(&self) {
        let mut rx = self.arrived_rx.lock().await;
        crate::within("a held request to arrive", rx.recv())
            .await
            .expect("upstream alive");
    }

    /// Lets `n` held requests (or gated streams) continue.
    pub fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }

    async fn wait(&self) {
        let _ = self.arrived_tx.send(());
        if let Ok(p) = self.permits.acquire().await {
            p.forget();
        }
    }
}

struct State {
    name: String,
    hits: AtomicUsize,
    connections: AtomicUsize,
    open: AtomicUsize,
    /// Bumped to make every open connection close once it is idle.
    close_all: watch::Sender<u64>,
    hold: Hold,
    uploaded: watch::Sender<u64>,
}

/// A running fake upstream; stops when dropped.
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Starts one on 127.0.0.1:0; `name` comes back in the `x-upstream` header.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            close_all: watch::channel(0).0,
            hold: Hold::new(),
            uploaded: watch::channel(0).0,
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                s.open.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut close_all = s.close_all.subscribe();
                    let s2 = s.clone();
                    let svc = service_fn(move |req| {
                        let s = s2.clone();
                        async move { Ok::<_, Infallible>(handle(s, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        Ok(()) = close_all.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, state, task }
    }

    /// `host:port` for a config file.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open right now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Closes every open connection once its current exchange (if any) ends, as an
    /// upstream's own keep-alive timeout would.
    pub fn close_connections(&self) {
        self.state.close_all.send_modify(|n| *n += 1);
    }

    /// The hold/release control.
    pub fn hold(&self) -> &Hold {
        &self.state.hold
    }

    /// Bytes of the current `/upload` body received so far.
    pub fn uploaded(&self) -> watch::Receiver<u64> {
        self.state.uploaded.subscribe()
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    BodyExt::boxed(Full::new(b.into()))
}

async fn handle(s: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let mut response = if path.ends_with("/early-hold") {
        // Held, then answered before the upload is over; the body is read afterwards.
        let body = req.into_body();
        tokio::spawn(async move {
            let _ = body.collect().await;
        });
        s.hold.wait().await;
        Response::new(full("early"))
    } else if path.ends_with("/hold") {
        s.hold.wait().await;
        Response::new(full("released"))
    } else if path.ends_with("/early") {
        // Answers at once and reads the body to its end afterwards, as an upstream
        // that rejects or accepts a request before its upload is over.
        let body = req.into_body();
        tokio::spawn(async move {
            let _ = body.collect().await;
        });
        Response::new(full("early"))
    } else if let Some(n) = path
        .rsplit_once("/stream/")
        .and_then(|(_, n)| n.parse::<usize>().ok())
    {
        Response::new(stream_bytes(n))
    } else if path.ends_with("/stream-gated") {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let s2 = s.clone();
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from(vec![b'a'; CHUNK])).await;
            s2.hold.wait().await;
            let _ = tx.send(Bytes::from(vec![b'b'; CHUNK])).await;
        });
        Response::new(channel_body(rx))
    } else if path.ends_with("/upload") {
        let mut body = req.into_body();
        let mut n = 0u64;
        s.uploaded.send_replace(0);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                        s.uploaded.send_replace(n);
                    }
                }
                Err(_) => break,
            }
        }
        Response::new(full(format!("{{\"received\":{n}}}")))
    } else if path.ends_with("/close") {
        Response::builder()
            .header("connection", "close")
            .body(full("closing"))
            .expect("valid response")
    } else if path.ends_with("/hop") {
        Response::builder()
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-kept", "yes")
            .body(full("hop"))
            .expect("valid response")
    } else if let Some(code) = path
        .rsplit_once("/status/")
        .and_then(|(_, c)| c.parse::<u16>().ok())
    {
        let mut r = Response::new(full(format!("status {code}")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        r
    } else {
        let method = req.method().to_string();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in req.headers() {
            headers
                .entry(k.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let echo = serde_json::json!({
            "upstream": s.name,
            "method": method,
            "path": path_and_query,
            "headers": headers,
            "body_len": body.len(),
        });
        Response::new(full(echo.to_string()))
    };
    if let Ok(v) = s.name.parse() {
        response.headers_mut().insert("x-upstream", v);
    }
    response
}

fn stream_bytes(total: usize) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let mut left = total;
        while left > 0 {
            let n = left.min(CHUNK);
            if tx.send(Bytes::from(vec![b'x'; n])).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    channel_body(rx)
}

fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    BodyExt::boxed(StreamBody::new(s))
}
