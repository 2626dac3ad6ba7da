//! Round-robin spread and upstream connection reuse.

use gateway_test_support::{Client, FakeUpstream, TestGateway};

use crate::{route, upstream};

#[tokio::test]
async fn three_endpoints_get_exactly_a_third_each_over_reused_connections() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let c = FakeUpstream::start("c").await;
    let config = [
        upstream("pool", &[&a, &b, &c], ""),
        route("all", "/", "pool", ""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let client = Client::default();
    for _ in 0..300 {
        assert_eq!(client.get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!([a.hits(), b.hits(), c.hits()], [100, 100, 100]);
    // Sequential requests reuse one pooled connection per endpoint.
    assert_eq!(
        [a.connections(), b.connections(), c.connections()],
        [1, 1, 1]
    );
}
