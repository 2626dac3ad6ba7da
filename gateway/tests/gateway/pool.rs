//! The per-endpoint connection pool: what goes back to it, what never does, and when
//! idle connections close.

use std::time::Duration;

use gateway_test_support::{eventually, within, Client, FakeUpstream, TestGateway};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::{route, send_raw, upstream};

/// The gateway in front of `up` alone, with `extra` settings on its upstream, on one
/// worker thread: these tests are about one pool, shared by the requests of several
/// client connections (each worker has a pool of its own: `workers.rs`).
async fn gateway(up: &FakeUpstream, extra: &str) -> TestGateway {
    let config = [upstream("up", &[up], extra), route("all", "/", "up", "")].concat();
    TestGateway::start_with_workers(&config, 1).await
}

/// `n` concurrent GETs of `path`, each answering with its status.
fn spawn_gets(gw: &TestGateway, path: &str, n: usize) -> Vec<JoinHandle<StatusCode>> {
    let client = Client::default();
    (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), gw.url(path));
            tokio::spawn(async move { client.get(&url).await.status })
        })
        .collect()
}

/// Waits (bounded) until the upstream has no connection open.
async fn all_closed(up: &FakeUpstream, what: &str) {
    eventually(what, || async {
        (up.open_connections() == 0).then_some(())
    })
    .await;
}

/// The gateway's view of its one endpoint in `/admin/upstreams`.
async fn endpoint_state(gw: &TestGateway) -> serde_json::Value {
    let ups = Client::default()
        .get(&gw.admin_url("/admin/upstreams"))
        .await
        .json();
    ups["upstreams"][0]["endpoints"][0].clone()
}

#[tokio::test]
async fn every_kind_of_complete_response_returns_its_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;
    let client = Client::default();

    // Sized, empty (HEAD, 204, 304), chunked and large streamed bodies.
    for (method, path) in [
        (Method::GET, "/echo"),
        (Method::HEAD, "/echo"),
        (Method::GET, "/status/204"),
        (Method::GET, "/status/304"),
        (Method::GET, "/stream/300000"),
        (Method::POST, "/echo"),
        (Method::GET, "/status/503"),
        (Method::GET, "/echo"),
    ] {
        let r = client.request(method.clone(), &gw.url(path), &[], "").await;
        assert!(r.status.as_u16() < 600, "{method} {path}");
    }
    assert_eq!(up.hits(), 8);
    assert_eq!(up.connections(), 1, "one upstream connection carried all");
    let state = endpoint_state(&gw).await;
    assert_eq!(state["connections_opened"], 1, "{state}");
}

#[tokio::test]
async fn a_response_abandoned_midway_closes_its_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;
    let client = Client::default();

    let response = client
        .send_streaming(
            Request::get(gw.url("/stream-gated"))
                .body(gateway_test_support::empty())
                .unwrap(),
        )
        .await;
    let mut body = response.into_body();
    within("first chunk", body.frame()).await.unwrap().unwrap();
    drop(body);
    up.hold().release(1);
    all_closed(&up, "the abandoned upstream connection to close").await;

    // The next request must not read the rest of the old response.
    let r = client.get(&gw.url("/echo")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/echo");
    assert_eq!(up.connections(), 2);
}

/// A client that hangs up while the upstream is still working on its request (HTTP/1.1:
/// the socket closed; HTTP/2: the stream reset) abandons the exchange: the gateway
/// closes that upstream connection rather than wait for an answer nobody will read,
/// as nginx does by default (`proxy_ignore_client_abort off`).
#[tokio::test]
async fn a_client_that_hangs_up_abandons_its_exchange() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;

    let s = send_raw(&gw, b"GET /hold HTTP/1.1\r\nHost: test\r\n\r\n").await;
    up.hold().arrived().await;
    drop(s);
    all_closed(&up, "the HTTP/1.1 exchange's upstream connection to close").await;

    let (h2, url) = (Client::h2c(), gw.url("/hold"));
    let request = tokio::spawn(async move { h2.get(&url).await });
    up.hold().arrived().await;
    request.abort();
    all_closed(&up, "the HTTP/2 exchange's upstream connection to close").await;

    // Neither answer is sent later on another client's connection.
    up.hold().release(2);
    let r = Client::default().get(&gw.url("/echo")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/echo");
    assert_eq!(up.hits(), 3);
}

/// A held request with another pipelined behind it.
const PIPELINED: &[u8] =
    b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /one HTTP/1.1\r\nHost: t\r\n\r\n";

/// Requests pipelined on one HTTP/1.1 connection are answered one after the other, in
/// order, however they arrive: in one write, or the next one while the first is at
/// the upstream (the gateway reads it only once the first is answered).
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;

    let mut s = send_raw(&gw, PIPELINED).await;
    up.hold().arrived().await;
    s.write_all(b"GET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    up.hold().release(1);
    let mut got = Vec::new();
    within("three responses, then the close", s.read_to_end(&mut got))
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 3, "{got}");
    let one = got.find(r#""path":"/one""#).expect("/one answered");
    let two = got.find(r#""path":"/two""#).expect("/two answered");
    assert!(one < two, "{got}");
}

/// A hang-up is noticed even with the next pipelined request already read.
#[tokio::test]
async fn a_hang_up_behind_a_pipelined_request_abandons_the_exchange() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;

    let s = send_raw(&gw, PIPELINED).await;
    up.hold().arrived().await;
    drop(s);
    all_closed(&up, "the upstream connection to close").await;
    up.hold().release(1);
    assert_eq!(up.hits(), 1, "the pipelined request was not sent");
}

/// A hang-up is noticed while a pipelined request waits, also when the gateway's read
/// of that request happened to fill its read buffer exactly (hyper 1.12 reads it into
/// what is left of a 16 KiB buffer after the first request; the unit test
/// `a_hang_up_after_a_read_that_filled_the_buffer_is_noticed` does not depend on that).
#[tokio::test]
async fn a_hang_up_after_a_request_that_filled_the_read_buffer_is_noticed() {
    const FIRST: &[u8] = b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n";
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;

    let mut s = send_raw(&gw, FIRST).await;
    up.hold().arrived().await;
    // The next request (padded with a header to fill the buffer), sent while the first
    // is at the upstream: the gateway's peek sees it waiting.
    let size = 16 * 1024 - FIRST.len();
    let head = "GET /hold HTTP/1.1\r\nHost: t\r\nX-Pad: ";
    let second = format!("{head}{}\r\n\r\n", "p".repeat(size - head.len() - 4));
    s.write_all(second.as_bytes()).await.unwrap();
    // Time for the peek (nothing outside the gateway shows it); a late one only makes
    // this test weaker, never wrong.
    tokio::time::sleep(Duration::from_millis(100)).await;
    up.hold().release(1);
    up.hold().arrived().await;
    let mut buf = vec![0u8; 4096];
    within("the first response", s.read(&mut buf))
        .await
        .unwrap();
    drop(s);
    all_closed(&up, "the upstream connection to close").await;
    up.hold().release(1);
}

/// A client that half-closes while a large response is stalled on its unread socket
/// abandons the exchange.
#[tokio::test]
async fn a_half_close_while_the_response_is_stalled_abandons_the_exchange() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;

    let mut s = send_raw(&gw, b"GET /stream/100000000 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    // Time for the gateway to fill the socket buffers and block on its writes (nothing
    // outside it shows when); a shorter wait only makes this test weaker, never wrong.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.shutdown().await.unwrap();
    all_closed(&up, "the upstream connection to close").await;
}

/// An upstream that restarts (closes its idle connections) leaves none of them in the
/// pool for long: the reaper, which runs every half idle timeout, drops the closed ones
/// too, well before they would expire, so no socket lingers half-closed while no
/// request comes to notice it.
#[tokio::test]
async fn the_reaper_drops_idle_connections_the_upstream_closed() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "idle_timeout = \"6s\"").await;
    assert_eq!(Client::default().get(&gw.url("/echo")).await.status, 200);
    assert_eq!(endpoint_state(&gw).await["idle_connections"], 1);
    up.close_connections();
    all_closed(&up, "the upstream to close its idle connection").await;
    let closed = std::time::Instant::now();
    eventually("the closed connection to leave the pool", || async {
        (endpoint_state(&gw).await["idle_connections"] == 0).then_some(())
    })
    .await;
    // The reaper's tick is at 3 s; expiry would take 6.
    assert!(
        closed.elapsed() < Duration::from_millis(5500),
        "left only when it expired: {:?}",
        closed.elapsed()
    );
}

#[tokio::test]
async fn connections_the_upstream_closes_are_not_reused() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;
    let client = Client::default();

    // Announced: `Connection: close` on the response.
    assert_eq!(client.get(&gw.url("/close")).await.status, 200);
    assert_eq!(client.get(&gw.url("/echo")).await.status, 200);
    assert_eq!(up.connections(), 2);

    // Unannounced: the upstream drops an idle keep-alive connection.
    up.close_connections();
    all_closed(&up, "the upstream to close its idle connection").await;
    for _ in 0..3 {
        let r = client.get(&gw.url("/echo")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(up.connections(), 3);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "idle_timeout = \"300ms\"").await;
    let client = Client::default();

    assert_eq!(client.get(&gw.url("/echo")).await.status, 200);
    assert_eq!(endpoint_state(&gw).await["idle_connections"], 1);
    all_closed(&up, "the gateway to close its idle connection").await;
    assert_eq!(endpoint_state(&gw).await["idle_connections"], 0);
    assert_eq!(client.get(&gw.url("/echo")).await.status, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn the_pool_keeps_at_most_max_idle_connections() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "max_idle_per_endpoint = 1").await;

    let held = spawn_gets(&gw, "/hold", 3);
    for _ in 0..3 {
        up.hold().arrived().await;
    }
    assert_eq!(up.connections(), 3);
    up.hold().release(3);
    for h in held {
        assert_eq!(within("held response", h).await.unwrap(), 200);
    }
    eventually("the surplus connections to close", || async {
        (up.open_connections() == 1).then_some(())
    })
    .await;
    assert_eq!(endpoint_state(&gw).await["idle_connections"], 1);
}

#[tokio::test]
async fn a_burst_reuses_returned_connections_instead_of_opening_one_each() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "connect_concurrency = 1").await;

    let burst = spawn_gets(&gw, "/echo", 100);
    for r in burst {
        assert_eq!(within("burst response", r).await.unwrap(), 200);
    }
    assert_eq!(up.hits(), 100);
    assert!(
        up.connections() < 100,
        "{} upstream connections for 100 requests",
        up.connections()
    );
}

#[tokio::test]
async fn requests_that_hold_their_connections_each_get_one_under_the_connect_limit() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "connect_concurrency = 1").await;

    let held = spawn_gets(&gw, "/hold", 10);
    for _ in 0..10 {
        up.hold().arrived().await;
    }
    assert_eq!(
        up.connections(),
        10,
        "the limit is on connecting, not on connections"
    );
    up.hold().release(10);
    for h in held {
        assert_eq!(within("held response", h).await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_connection_still_uploading_after_an_early_answer_carries_no_other_request() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up, "").await;

    // The upstream answers before the upload is over; the upload goes on.
    let (tx, response) = gw.start_upload("/status/201");
    tx.send(bytes::Bytes::from_static(b"part one"))
        .await
        .unwrap();
    assert_eq!(within("early answer", response).await.unwrap().status, 201);
    for _ in 0..5 {
        let r = Client::default().get(&gw.url("/echo")).await;
        assert_eq!(r.json()["path"], "/echo");
    }
    let _ = tx.send(bytes::Bytes::from_static(b"part two")).await;
    drop(tx);
    let r = Client::default().get(&gw.url("/echo")).await;
    assert_eq!(r.json()["path"], "/echo");
}

/// Requests waiting for a connection while the only ones there are still uploading
/// after an early answer, and no new connection can open, wait quietly and fail with
/// 502 at the connect timeout. The pool once handed such a connection back with a
/// wake-up that the next waiter (or the same one) took at once, round and round: a
/// worker busy at 100 % for as long as requests waited (2.2 s of CPU in 3 s here),
/// and under load (32 uploads of 1 MiB to an upstream that answers early) requests
/// stuck for seconds. The test runs the gateway on its own named threads and measures their CPU
/// time while the requests wait.
#[cfg(target_os = "linux")]
#[test]
fn waiters_do_not_spin_on_a_connection_still_uploading() {
    const THREADS: &str = "spin-check";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let up = FakeUpstream::start("up").await;
        let (gw, addr) = gateway_behind_a_relay(&up, 2, "1s").await;

        // Two uploads the upstream answers before they are over; they go on (their
        // clients keep their connections open), and their upstream connections go
        // back to the pool not ready for another request.
        let uploads = vec![start_early_upload(&gw).await, start_early_upload(&gw).await];
        // From now on connects to the endpoint hang.
        let _queued = fill_accept_queue(addr);

        let (cpu_before, started) = (cpu_of_threads(THREADS), std::time::Instant::now());
        for w in spawn_gets(&gw, "/x", 3) {
            assert_eq!(within("a 502", w).await.unwrap(), StatusCode::BAD_GATEWAY);
        }
        let (cpu, waited) = (cpu_of_threads(THREADS) - cpu_before, started.elapsed());
        assert!(
            waited >= Duration::from_millis(900),
            "the requests did wait for the connect timeout: {waited:?}"
        );
        assert!(
            cpu < waited / 4,
            "the gateway's threads were busy while requests waited: {cpu:?} of CPU in {waited:?}"
        );
        drop(uploads);
    });
}

/// A connection still uploading after an early answer comes back to the pool when its
/// upload ends, and a waiting request gets it at once, long before the connect
/// timeout that a new connection (its connect hanging here) runs into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_gets_the_connection_whose_upload_ends() {
    let up = FakeUpstream::start("up").await;
    let (gw, mut upload, _queued) = one_upload_then_dark(&up).await;

    // Two requests wait: one takes the connect slot (its connect hangs), the other
    // for a connection to come back.
    let waiting = spawn_gets(&gw, "/echo", 2);
    eventually("both requests to reach the pool", || async {
        let state = endpoint_state(&gw).await;
        (state["idle_connections"] == 0).then_some(())
    })
    .await;
    upload.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(first_of(waiting).await, StatusCode::OK);
}

/// Two connections busy with uploads answered early: the second answer wakes no
/// waiter with a connection it cannot use, and once the first upload ends a waiting
/// request gets its connection. (The pool once handed out connections still uploading
/// for waiters to watch, and lost track of one here.) The waits only order the
/// requests (nothing outside the gateway shows that one has reached the pool); another
/// order makes the test weaker, not wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_first_upload_s_connection_when_another_answer_comes_first() {
    let up = FakeUpstream::start("up").await;
    let (gw, addr) = gateway_behind_a_relay(&up, 2, "8s").await;
    let mut upload1 = start_early_upload(&gw).await;
    // A second connection, busy with an upload the upstream answers only when
    // released (and reads after answering).
    let mut upload2 = send_raw(
        &gw,
        b"POST /early-hold HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\npart two\r\n",
    )
    .await;
    up.hold().arrived().await;
    let _queued = fill_accept_queue(addr);

    // One request takes the connect slot (its connect hangs), two more wait.
    let (mut waiting, waiter) =
        slot_taken_then_waiting(&gw, async { spawn_gets(&gw, "/echo", 1) }).await;
    waiting.extend(waiter);
    waiting.extend(spawn_gets(&gw, "/echo", 1));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The second upload is answered; its connection is still busy uploading.
    up.hold().release(1);
    let mut head = [0u8; 12];
    within("the second early answer", upload2.read_exact(&mut head))
        .await
        .unwrap();
    // The first upload ends: its connection is ready, and someone must take it.
    upload1.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(first_of(waiting).await, StatusCode::OK);
    drop(upload2);
}

/// A waiting request whose client hangs up takes nothing with it: the connection
/// still uploading goes to another waiting request once the upload ends. The waits
/// only order the requests (nothing outside the gateway shows that one has reached
/// the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_takes_no_connection_with_it() {
    let up = FakeUpstream::start("up").await;
    let (gw, mut upload, _queued) = one_upload_then_dark(&up).await;

    // One request takes the connect slot (its connect hangs), the next waits (from a
    // raw socket, to hang up), a third waits too.
    let waiter = send_raw(&gw, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    let (slot_holder, waiter) = slot_taken_then_waiting(&gw, waiter).await;
    let other = spawn_gets(&gw, "/echo", 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(waiter);
    tokio::time::sleep(Duration::from_millis(300)).await;
    upload.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(first_of(other).await, StatusCode::OK);
    assert_eq!(up.connections(), 1, "the connection was kept, not reopened");
    drop(slot_holder);
}

/// Starts a request that takes the only connect slot (its connect hangs), then, once
/// it has had time to, `wait`, a request expected to wait for a connection; returns
/// the first and what `wait` gives.
async fn slot_taken_then_waiting<W: std::future::Future>(
    gw: &TestGateway,
    wait: W,
) -> (Vec<JoinHandle<StatusCode>>, W::Output) {
    let slot_holder = spawn_gets(gw, "/echo", 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiter = wait.await;
    eventually("no idle connection left to take", || async {
        (endpoint_state(gw).await["idle_connections"] == 0).then_some(())
    })
    .await;
    (slot_holder, waiter)
}

/// The status of the first of `requests` to finish, within 3 s (well before the
/// connect timeout the others run into).
async fn first_of(requests: Vec<JoinHandle<StatusCode>>) -> StatusCode {
    let (tx, mut rx) = tokio::sync::mpsc::channel(requests.len());
    for r in requests {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Ok(status) = r.await {
                let _ = tx.send(status).await;
            }
        });
    }
    let first = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
    first
        .expect("a request done within 3 s")
        .expect("a request finished")
}

/// The gateway, with `connect_concurrency = 1` and `connect_timeout`, in front of a
/// relay to `up` that accepts `n` connections and then no more: once
/// [`fill_accept_queue`] has run on the returned address, connects to it hang.
async fn gateway_behind_a_relay(
    up: &FakeUpstream,
    n: usize,
    connect_timeout: &str,
) -> (TestGateway, std::net::SocketAddr) {
    let (addr, listener) = listener_with_a_short_queue();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let upstream_addr = up.addr;
    tokio::spawn(async move {
        let mut relays = Vec::new();
        for _ in 0..n {
            let (mut client, _) = listener.accept().await.unwrap();
            relays.push(tokio::spawn(async move {
                let mut server = TcpStream::connect(upstream_addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }));
        }
        let _keep_listening = listener;
        for r in relays {
            let _ = r.await;
        }
    });
    let config = format!(
        "[upstreams.up]\nendpoints = [\"{addr}\"]\nconnect_timeout = \"{connect_timeout}\"\nconnect_concurrency = 1\n\n{}",
        route("all", "/", "up", ""),
    );
    // One worker: the waiting requests and the one holding the slot share a pool.
    (TestGateway::start_with_workers(&config, 1).await, addr)
}

/// The gateway behind a relay (connect timeout 8 s) whose one connection carries an
/// upload answered early and still going (the returned client socket); connects to
/// the relay hang from then on, while the returned sockets live.
async fn one_upload_then_dark(
    up: &FakeUpstream,
) -> (TestGateway, TcpStream, Vec<std::net::TcpStream>) {
    let (gw, addr) = gateway_behind_a_relay(up, 1, "8s").await;
    let upload = start_early_upload(&gw).await;
    let queued = fill_accept_queue(addr);
    (gw, upload, queued)
}

/// A chunked upload to `/early`, answered before it is over; the returned client
/// socket keeps it going (its upstream connection goes back to the pool not ready for
/// another request) until it sends the last chunk or closes.
async fn start_early_upload(gw: &TestGateway) -> TcpStream {
    let mut upload = send_raw(
        gw,
        b"POST /early HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\npart one\r\n",
    )
    .await;
    let mut head = [0u8; 12];
    within("early answer", upload.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    upload
}

/// CPU time (user + system) used so far by this process's threads named `name`.
#[cfg(target_os = "linux")]
fn cpu_of_threads(name: &str) -> Duration {
    // Clock ticks of 10 ms: USER_HZ is 100 on Linux.
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command name: utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn a_named_endpoint_is_resolved_and_fails_cleanly_when_its_addresses_refuse() {
    // Names take the resolver path (IP literals skip it); every address refusing
    // is a 502 `connect_failed`, not a hang.
    let up = FakeUpstream::start("up").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "[upstreams.named]\nendpoints = [\"localhost:{}\"]\n\n\
         [upstreams.dead]\nendpoints = [\"localhost:{closed}\"]\nconnect_timeout = \"2s\"\n\n{}{}",
        up.addr.port(),
        route("named", "/named", "named", ""),
        route("dead", "/dead", "dead", ""),
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::default();

    let r = client.get(&gw.url("/named/echo")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["upstream"], "up");

    let r = client.get(&gw.url("/dead/echo")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-gateway-error"), "connect_failed");
}

/// A listening socket on 127.0.0.1 with the shortest accept queue the kernel allows.
fn listener_with_a_short_queue() -> (std::net::SocketAddr, std::net::TcpListener) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    (addr, listener.into())
}

/// Connects to `addr`, which accepts nothing more, until its accept queue is full and
/// connects hang (the kernel drops the SYNs), like a host gone dark. Keep the returned
/// sockets alive for as long as it must stay that way.
fn fill_accept_queue(addr: std::net::SocketAddr) -> Vec<std::net::TcpStream> {
    let mut queued = Vec::new();
    let hangs = loop {
        let wait = std::time::Duration::from_millis(200);
        match std::net::TcpStream::connect_timeout(&addr, wait) {
            Ok(s) if queued.len() < 16 => queued.push(s),
            Ok(_) => break false,
            Err(_) => break true,
        }
    };
    assert!(hangs, "could not fill the accept queue of {addr}");
    queued
}

/// A listening socket that never accepts, its accept queue filled: connects to it
/// hang. Keep the returned sockets alive for as long as it must stay that way.
fn unresponsive_endpoint() -> (std::net::SocketAddr, impl Sized) {
    let (addr, listener) = listener_with_a_short_queue();
    (addr, (listener, fill_accept_queue(addr)))
}

#[tokio::test]
async fn an_endpoint_that_never_answers_fails_each_waiting_request_within_the_connect_timeout() {
    let (addr, _keep) = unresponsive_endpoint();
    let config = format!(
        "[upstreams.dark]\nendpoints = [\"{addr}\"]\nconnect_timeout = \"300ms\"\nconnect_concurrency = 1\n\n{}",
        route("all", "/", "dark", ""),
    );
    let gw = TestGateway::start(&config).await;
    // One request takes the only connect slot and waits on the dead connect; the
    // others wait for a slot or a connection that never comes. None of them hangs.
    let client = Client::default();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let (client, url) = (client.clone(), gw.url("/x"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    for w in waiting {
        let r = within("a 502", w).await.unwrap();
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(r.header("x-gateway-error"), "connect_failed");
    }
}

/// The request timeout also bounds the wait for a connection: a request whose connect
/// hangs gets its 504 at `request_timeout`, well before `connect_timeout`.
#[tokio::test]
async fn a_request_still_waiting_for_a_connection_times_out_at_the_request_timeout() {
    let (addr, _keep) = unresponsive_endpoint();
    let config = format!(
        "[upstreams.dark]\nendpoints = [\"{addr}\"]\nconnect_timeout = \"20s\"\nrequest_timeout = \"300ms\"\n\n{}",
        route("all", "/", "dark", ""),
    );
    let gw = TestGateway::start(&config).await;
    let started = std::time::Instant::now();
    let r = within("a 504", Client::default().get(&gw.url("/x"))).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.header("x-gateway-error"), "upstream_timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}
