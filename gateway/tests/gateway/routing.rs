//! Routing: prefixes on segment boundaries, longest prefix, hosts, methods, rewrites.

use gateway_test_support::{Client, FakeUpstream, TestGateway};
use http::{Method, Request};

use crate::{route, upstream};

#[tokio::test]
async fn strips_prefixes_keeps_queries_and_routes_by_longest_prefix() {
    let order = FakeUpstream::start("order").await;
    let saga = FakeUpstream::start("saga").await;
    let special = FakeUpstream::start("special").await;
    let config = [
        upstream("order-service", &[&order], ""),
        upstream("saga", &[&saga], ""),
        upstream("special", &[&special], ""),
        route("order", "/order", "order-service", "strip_prefix = true"),
        route("saga", "/saga", "saga", ""),
        route("special", "/order/special/", "special", "rewrite = \"/v2\""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let c = Client::default();

    let r = c
        .request(Method::POST, &gw.url("/order/orders?page=2"), &[], "{}")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "order");
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["path"], "/orders?page=2");

    assert_eq!(c.get(&gw.url("/order")).await.json()["path"], "/");
    assert_eq!(
        c.get(&gw.url("/saga/execute")).await.json()["path"],
        "/saga/execute"
    );
    let r = c.get(&gw.url("/order/special/x?y=1")).await;
    assert_eq!(
        (r.json()["upstream"].as_str(), r.json()["path"].as_str()),
        (Some("special"), Some("/v2/x?y=1"))
    );

    // `/orders` is not under the `/order` prefix.
    let r = c.get(&gw.url("/orders")).await;
    assert_eq!(r.status, 404);
    assert_eq!(order.hits(), 2);
}

#[tokio::test]
async fn host_routes_win_over_host_less_ones_and_methods_filter() {
    let general = FakeUpstream::start("general").await;
    let shop = FakeUpstream::start("shop").await;
    let writes = FakeUpstream::start("writes").await;
    let config = [
        upstream("general", &[&general], ""),
        upstream("shop", &[&shop], ""),
        upstream("writes", &[&writes], ""),
        route("general", "/api/items", "general", ""),
        route("shop", "/", "shop", "host = \"Shop.Example\""),
        route("writes", "/api", "writes", "methods = [\"post\", \"PUT\"]"),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let c = Client::default();
    let with_host = |host: &str, method: Method, path: &str| {
        Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("host", host)
            .body(gateway_test_support::empty())
            .unwrap()
    };
    let r = c
        .send(with_host("shop.example:8000", Method::GET, "/api/items"))
        .await;
    assert_eq!(
        r.header("x-upstream"),
        "shop",
        "a host route beats a longer host-less prefix"
    );
    let r = c
        .send(with_host("other.example", Method::GET, "/api/items"))
        .await;
    assert_eq!(r.header("x-upstream"), "general");
    let r = c
        .send(with_host("other.example", Method::POST, "/api/orders"))
        .await;
    assert_eq!(r.header("x-upstream"), "writes");
    let r = c
        .send(with_host("other.example", Method::GET, "/api/orders"))
        .await;
    assert_eq!(r.status, 404, "GET is not among the route's methods");
}

#[tokio::test]
async fn serves_http2_cleartext_on_the_same_port() {
    let up = FakeUpstream::start("up").await;
    let config = [upstream("up", &[&up], ""), route("all", "/", "up", "")].concat();
    let gw = TestGateway::start(&config).await;
    let r = Client::h2c().get(&gw.url("/hello")).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/hello");
    // The client's :authority becomes the upstream's Host.
    assert_eq!(echo["headers"]["host"][0], gw.addr.to_string());
    let r = Client::http1().get(&gw.url("/hello")).await;
    assert_eq!(r.status, 200);
}
