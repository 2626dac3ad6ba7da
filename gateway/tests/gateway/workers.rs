//! Worker threads (`--workers N`): client connections are shared out among N threads,
//! each with its own runtime and its own idle upstream connections, and a shutdown
//! drains every worker.

use gateway_test_support::{empty, eventually, within, FakeUpstream, TestGateway};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::{route, upstream};

/// One client connection of its own to the gateway (so the test knows which requests
/// share a worker).
async fn connection(gw: &TestGateway) -> SendRequest<gateway_test_support::TestBody> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// GETs `path` on `send`'s connection; the status and body.
async fn get(
    send: &mut SendRequest<gateway_test_support::TestBody>,
    gw: &TestGateway,
    path: &str,
) -> Result<(u16, String), hyper::Error> {
    let req = Request::get(gw.url(path))
        .header("host", "gateway")
        .body(empty())
        .unwrap();
    within("the connection to be ready", send.ready()).await?;
    let response = within("a response", send.send_request(req)).await?;
    let status = response.status().as_u16();
    let body = within("the body", response.into_body().collect())
        .await?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn config(up: &FakeUpstream, server: &str) -> String {
    [
        server.to_owned(),
        upstream("up", &[up], ""),
        route("r", "/", "up", ""),
    ]
    .concat()
}

#[tokio::test]
async fn connections_are_shared_out_and_each_worker_reuses_its_own_upstream_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start_with_workers(&config(&up, ""), 2).await;
    // The first connection goes to one worker; the second, to the one with none.
    let mut a = connection(&gw).await;
    let mut b = connection(&gw).await;
    for _ in 0..3 {
        for send in [&mut a, &mut b] {
            let (status, _) = get(send, &gw, "/x").await.unwrap();
            assert_eq!(status, 200);
        }
    }
    // One connection per worker, each used for its worker's three requests. One
    // worker, or two workers sharing one pool, would have opened one; two client
    // connections on one worker, too.
    assert_eq!(up.connections(), 2);
    assert_eq!(up.hits(), 6);
    // The admin view adds up the workers' idle connections.
    let state = gateway_test_support::Client::default()
        .get(&gw.admin_url("/admin/upstreams"))
        .await
        .json();
    assert_eq!(
        state["upstreams"][0]["endpoints"][0]["idle_connections"], 2,
        "{state}"
    );
    // And the metrics show one client connection on each worker.
    let metrics = gateway_test_support::Client::default()
        .get(&gw.admin_url("/metrics"))
        .await
        .body;
    let metrics = String::from_utf8_lossy(&metrics);
    for worker in ["0", "1"] {
        let line = format!("gateway_worker_connections{{worker=\"{worker}\"}} 1\n");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
}

#[tokio::test]
async fn a_new_connection_goes_to_the_worker_with_fewer() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start_with_workers(&config(&up, ""), 2).await;
    let mut a = connection(&gw).await;
    let mut b = connection(&gw).await;
    get(&mut a, &gw, "/x").await.unwrap();
    get(&mut b, &gw, "/x").await.unwrap();
    assert_eq!(up.connections(), 2);
    drop(b);
    eventually("b's close to be counted", || async {
        let metrics = gateway_test_support::Client::default()
            .get(&gw.admin_url("/metrics"))
            .await
            .body;
        String::from_utf8_lossy(&metrics)
            .contains("\ngateway_open_connections 1\n")
            .then_some(())
    })
    .await;
    // a's worker is busy with a held request on its one upstream connection; b's
    // worker has no client connection left and one idle upstream connection.
    let url = gw.url("/hold");
    let held = tokio::spawn(async move {
        let req = Request::get(url)
            .header("host", "gateway")
            .body(empty())
            .unwrap();
        a.ready().await?;
        a.send_request(req).await.map(|r| r.status().as_u16())
    });
    up.hold().arrived().await;
    // So the next connection goes to b's worker and reuses that idle connection: on
    // a's worker it would have needed a third.
    let mut c = connection(&gw).await;
    assert_eq!(get(&mut c, &gw, "/x").await.unwrap().0, 200);
    assert_eq!(up.connections(), 2);
    up.hold().release(1);
    assert_eq!(
        within("the held request", held).await.unwrap().unwrap(),
        200
    );
}

/// Two requests held at the upstream, each on its own client connection, so one
/// on each worker.
async fn two_held(
    gw: &TestGateway,
    up: &FakeUpstream,
) -> [JoinHandle<Result<(u16, String), hyper::Error>>; 2] {
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut send = connection(gw).await;
        let url = gw.url("/hold");
        held.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("host", "gateway")
                .body(empty())
                .unwrap();
            send.ready().await?;
            let response = send.send_request(req).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }));
        up.hold().arrived().await;
    }
    let [a, b]: [_; 2] = held.try_into().map_err(|_| ()).unwrap();
    [a, b]
}

#[tokio::test]
async fn a_shutdown_drains_every_worker_then_returns() {
    let up = FakeUpstream::start("up").await;
    let mut gw = TestGateway::start_with_workers(&config(&up, ""), 2).await;
    let [a, b] = two_held(&gw, &up).await;
    gw.begin_shutdown();
    within("listener to close", async {
        while TcpStream::connect(gw.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    up.hold().release(2);
    for held in [a, b] {
        let (status, body) = within("a drained request", held).await.unwrap().unwrap();
        assert_eq!((status, body.as_str()), (200, "released"));
    }
    gw.stopped().await;
}

#[tokio::test]
async fn connections_still_busy_after_the_grace_period_close_with_their_worker() {
    let up = FakeUpstream::start("up").await;
    let server = "[server]\nshutdown_grace = \"200ms\"\n";
    let mut gw = TestGateway::start_with_workers(&config(&up, server), 2).await;
    let [a, b] = two_held(&gw, &up).await;
    gw.begin_shutdown();
    // `run` returns once each worker has closed what it still held.
    gw.stopped().await;
    for held in [a, b] {
        let outcome = within("the cut request", held).await.unwrap();
        assert!(
            outcome.is_err(),
            "a request past the grace period: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn h2c_streams_run_on_their_connections_worker() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start_with_workers(&config(&up, ""), 2).await;
    // Two h2c clients: two connections, one on each worker.
    let (a, b) = (
        gateway_test_support::Client::h2c(),
        gateway_test_support::Client::h2c(),
    );
    for _ in 0..3 {
        for c in [&a, &b] {
            assert_eq!(c.get(&gw.url("/x")).await.status, 200);
        }
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn idle_upstream_connections_of_every_worker_are_reaped() {
    let up = FakeUpstream::start("up").await;
    let body = [
        upstream("up", &[&up], "idle_timeout = \"300ms\""),
        route("r", "/", "up", ""),
    ]
    .concat();
    let gw = TestGateway::start_with_workers(&body, 2).await;
    let mut a = connection(&gw).await;
    let mut b = connection(&gw).await;
    get(&mut a, &gw, "/x").await.unwrap();
    get(&mut b, &gw, "/x").await.unwrap();
    assert_eq!(up.connections(), 2);
    eventually("both workers' idle connections to close", || async {
        (up.open_connections() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_gateway_dropped_without_a_shutdown_lets_its_workers_finish_their_requests() {
    let up = FakeUpstream::start("up").await;
    let gw = TestGateway::start_with_workers(&config(&up, ""), 2).await;
    let [a, b] = two_held(&gw, &up).await;
    let addr = gw.addr;
    // Its task aborted, as when served on the calling runtime: the connections are told
    // to finish (`Drain`'s drop), and the requests in flight are answered.
    drop(gw);
    within("listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Not a synchronisation: nothing signals a worker dropping its runtime, so a build
    // that did so on the abort gets a moment to show it before the answers are let go.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    up.hold().release(2);
    for held in [a, b] {
        let (status, body) = within("a request in flight", held).await.unwrap().unwrap();
        assert_eq!((status, body.as_str()), (200, "released"));
    }
}
