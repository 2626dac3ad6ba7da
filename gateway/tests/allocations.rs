//! Heap allocations per proxied request, counted on the thread that serves the
//! gateway's client connections (`allocation-counter`'s global allocator counts per
//! thread): a regression guard for the hot path (load-tests/README.md has the
//! history; an allocation and its free cost ~100–200 instructions and a chance of a
//! cache miss on every request). Counts, not times: the figure is the same on a loaded
//! machine.
//!
//! Its own test binary, so the counting allocator is linked into nothing else.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use gateway_test_support::{Client, FakeUpstream};
use http::{Method, StatusCode};
use tokio::sync::oneshot;

/// Requests before counting: the connections, pools and buffers settle first.
const WARM_UP: u64 = 200;
/// Requests counted.
const COUNTED_REQUESTS: u64 = 1_000;
/// Bounds every wait.
const PATIENCE: Duration = Duration::from_secs(60);

/// A gateway on a thread of its own, serving client connections on that thread's
/// runtime (one worker: the path each worker of a larger gateway runs). Its runtime
/// runs only inside `block_on`, so the thread can count the allocations of exactly
/// the stretch between [`CountedGateway::count`] and [`CountedGateway::counted`].
struct CountedGateway {
    addr: std::net::SocketAddr,
    count: Option<oneshot::Sender<()>>,
    stop_counting: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl CountedGateway {
    fn start(upstream: &str) -> Self {
        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [log]\naccess_log = false\n\
             [upstreams.u]\nendpoints = [\"{upstream}\"]\n\
             [[routes]]\nname = \"r\"\nprefix = \"/\"\nupstream = \"u\"\n"
        );
        let config = gateway::config::parse(&text, Path::new("allocations.toml"))
            .unwrap_or_else(|e| panic!("config: {e}"));
        let (bound, addr) = mpsc::channel();
        let (count, counting) = oneshot::channel::<()>();
        let (stop_counting, counting_stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = gateway::runtime().expect("runtime");
            let (stop, stopped) = oneshot::channel::<()>();
            let listeners = runtime.block_on(async {
                let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await;
                let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await;
                gateway::Listeners {
                    proxy: proxy.expect("bind proxy"),
                    admin: admin.expect("bind admin"),
                }
            });
            let (proxy, _) = listeners.local_addrs().expect("addrs");
            bound.send(proxy).expect("the test waits");
            let shutdown = async move {
                let _ = stopped.await;
            };
            let served = runtime.spawn(gateway::run(listeners, config, shutdown));
            // Warm-up, then the counted requests; a test that gave up ends each wait.
            let _ = runtime.block_on(counting);
            let counted = allocation_counter::measure(|| {
                let _ = runtime.block_on(counting_stopped);
            });
            let _ = stop.send(());
            let ended = runtime.block_on(async { tokio::time::timeout(PATIENCE, served).await });
            ended
                .expect("the gateway stopped")
                .expect("the gateway's task")
                .expect("the gateway ran");
            counted.count_total
        });
        let addr = addr.recv_timeout(PATIENCE).expect("gateway bound");
        Self {
            addr,
            count: Some(count),
            stop_counting: Some(stop_counting),
            thread: Some(thread),
        }
    }

    /// Counts from now on.
    fn count(&mut self) {
        if let Some(count) = self.count.take() {
            count.send(()).expect("the gateway thread waits");
        }
    }

    /// Stops counting, stops the gateway and returns what was counted.
    fn counted(mut self) -> u64 {
        self.count();
        if let Some(stop) = self.stop_counting.take() {
            stop.send(()).expect("the gateway thread counts");
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(counted)) => counted,
            _ => panic!("the gateway thread panicked"),
        }
    }
}

impl Drop for CountedGateway {
    fn drop(&mut self) {
        // A test that failed midway: let the thread run to its end.
        self.count.take();
        self.stop_counting.take();
    }
}

/// Sends `n` requests one after another on one keep-alive connection.
async fn send(client: &Client, url: &str, method: &Method, body: &'static [u8], n: u64) {
    for _ in 0..n {
        let response = client.request(method.clone(), url, &[], body).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
    }
}

/// Heap allocations the gateway made per request, over [`COUNTED_REQUESTS`].
async fn allocations_per_request(method: Method, body: &'static [u8]) -> f64 {
    let upstream = FakeUpstream::start("a").await;
    let mut gateway = CountedGateway::start(&upstream.authority());
    let client = Client::http1();
    let url = format!("http://{}/items/7?page=2", gateway.addr);
    let run = async {
        send(&client, &url, &method, body, WARM_UP).await;
        gateway.count();
        send(&client, &url, &method, body, COUNTED_REQUESTS).await;
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the requests took too long");
    let counted = tokio::task::spawn_blocking(move || gateway.counted())
        .await
        .expect("the count");
    counted as f64 / COUNTED_REQUESTS as f64
}

/// A GET and its answer cost the gateway no allocation of their own: what is counted
/// is the request ids' buffer and its shared header, two per 16 requests. The upper
/// bound fails on any allocation added to every request; the lower one on a count
/// that no longer sees the gateway's work (serving moved off the counted thread).
#[tokio::test]
async fn a_proxied_get_allocates_nothing_of_its_own() {
    let per_request = allocations_per_request(Method::GET, b"").await;
    println!("GET: {per_request:.2} heap allocations per request");
    assert!(
        (0.1..0.5).contains(&per_request),
        "a proxied GET now makes {per_request:.2} heap allocations"
    );
}

/// A request with a body: two allocations more, hyper's channel for the incoming body
/// and the box of the upload (which keeps every request's future small; see
/// `proxy::client::h1::Upload`).
#[tokio::test]
async fn a_proxied_post_allocates_for_its_body_only() {
    let per_request = allocations_per_request(Method::POST, &[b'x'; 2048]).await;
    println!("POST 2 KB: {per_request:.2} heap allocations per request");
    assert!(
        (2.0..2.5).contains(&per_request),
        "a proxied POST now makes {per_request:.2} heap allocations"
    );
}
