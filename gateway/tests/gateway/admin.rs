//! The admin API: health, readiness, metrics, routes, upstreams.

use gateway_test_support::{Client, FakeUpstream, TestGateway};

use crate::{route, upstream};

#[tokio::test]
async fn admin_endpoints_report_live_state() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let config = [
        upstream("pool", &[&a, &b], "request_timeout = \"5s\""),
        route("all", "/api", "pool", ""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let c = Client::default();
    for _ in 0..4 {
        c.get(&gw.url("/api/x")).await;
    }
    c.get(&gw.url("/missing")).await;

    assert_eq!(c.get(&gw.admin_url("/health")).await.status, 200);
    let ready = c.get(&gw.admin_url("/ready")).await;
    assert_eq!(
        (ready.status.as_u16(), ready.json()["status"].as_str()),
        (200, Some("ready"))
    );

    let routes = c.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(routes["routes"][0]["name"], "all");
    assert_eq!(routes["routes"][0]["prefix"], "/api");
    assert_eq!(routes["routes"][0]["upstream"], "pool");

    let ups = c.get(&gw.admin_url("/admin/upstreams")).await.json();
    let pool = &ups["upstreams"][0];
    assert_eq!(pool["name"], "pool");
    assert_eq!(pool["request_timeout_ms"], 5000);
    let eps = pool["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert!(
        eps.iter()
            .all(|e| e["requests"] == 2 && e["state"] == "active"),
        "{ups}"
    );

    let metrics = c.get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for needle in [
        "gateway_requests_total{route=\"all\",method=\"GET\",class=\"2xx\"} 4",
        "gateway_requests_total{route=\"\",method=\"GET\",class=\"4xx\"} 1",
        "gateway_request_duration_seconds_count{route=\"all\"} 4",
        "gateway_open_connections",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(c.get(&gw.admin_url("/nope")).await.status, 404);
}

#[tokio::test]
async fn upstream_errors_are_counted_by_kind() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let config = format!(
        "[upstreams.dead]\nendpoints = [\"{dead}\"]\n{}",
        route("all", "/", "dead", "")
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::default();
    c.get(&gw.url("/x")).await;
    let text = String::from_utf8_lossy(&c.get(&gw.admin_url("/metrics")).await.body).into_owned();
    assert!(
        text.contains("gateway_upstream_errors_total{upstream=\"dead\",kind=\"connect_failed\"} 1"),
        "{text}"
    );
    let ups = c.get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(ups["upstreams"][0]["endpoints"][0]["failures"], 1);
}
