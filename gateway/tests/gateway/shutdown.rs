//! Graceful shutdown: stop accepting, finish what is in flight, then return.

use gateway_test_support::{within, Client, FakeUpstream, TestGateway};

use crate::{route, upstream};

#[tokio::test]
async fn shutdown_drains_requests_in_flight_then_returns() {
    let up = FakeUpstream::start("up").await;
    let mut gw =
        TestGateway::start(&[upstream("up", &[&up], ""), route("r", "/", "up", "")].concat()).await;
    let client = Client::default();
    let url = gw.url("/hold");
    let in_flight = tokio::spawn(async move { client.get(&url).await });
    up.hold().arrived().await;

    gw.begin_shutdown();
    // The listener closes: new connections are refused.
    within("listener to close", async {
        while tokio::net::TcpStream::connect(gw.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;

    up.hold().release(1);
    let r = within("the drained request", in_flight).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "released");
    gw.stopped().await;
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let up = FakeUpstream::start("up").await;
    let config = [
        "[server]\nshutdown_grace = \"100ms\"\n".to_owned(),
        upstream("up", &[&up], ""),
        route("r", "/", "up", ""),
    ]
    .concat();
    let mut gw = TestGateway::start(&config).await;
    let url = gw.url("/hold");
    let _stuck = tokio::spawn(async move { Client::default().get(&url).await });
    up.hold().arrived().await;
    gw.begin_shutdown();
    gw.stopped().await;
}
