//! Hot reload: new routes without restart, broken files refused and reported,
//! requests in flight finish on their snapshot, listener changes flagged.

use gateway_test_support::{eventually, within, Client, FakeUpstream, TestGateway};
use http::Method;

use crate::{route, upstream};

#[tokio::test]
async fn a_route_added_to_the_file_works_without_restart() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let base = [
        upstream("a", &[&a], ""),
        upstream("b", &[&b], ""),
        route("a", "/a", "a", ""),
    ]
    .concat();
    let gw = TestGateway::start(&base).await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/b/x")).await.status, 404);
    let before = gw.generation().await;

    // The file watcher picks up the edit: no signal, no admin call.
    gw.write_config(&[base.clone(), route("b", "/b", "b", "strip_prefix = true")].concat());
    let r = eventually("the new route to serve", || async {
        let r = c.get(&gw.url("/b/x")).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json()["upstream"], "b");
    assert_eq!(r.json()["path"], "/x");
    assert!(gw.generation().await > before);
    assert_eq!(c.get(&gw.url("/a")).await.status, 200);
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_config_and_is_reported() {
    let a = FakeUpstream::start("a").await;
    let good = [upstream("a", &[&a], ""), route("a", "/a", "a", "")].concat();
    let gw = TestGateway::start(&good).await;
    let c = Client::default();
    let generation = gw.generation().await;

    // Line 9 (after the 4 [listen] lines and the upstream table) gets an unknown key.
    gw.write_config(
        &[
            upstream("a", &[&a], ""),
            route("a", "/a", "a", "retries = 3"),
        ]
        .concat(),
    );
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["ok"], false);
    let problem = &report["problems"][0];
    assert_eq!(problem["key"], "routes[0].retries", "{report}");
    assert_eq!(problem["line"], 12, "{report}");
    assert!(problem["message"]
        .as_str()
        .unwrap()
        .contains("unknown field"));

    assert_eq!(
        c.get(&gw.url("/a")).await.status,
        200,
        "the old config keeps serving"
    );
    assert_eq!(gw.generation().await, generation);
    let cfg = c.get(&gw.admin_url("/admin/config")).await.json();
    assert_eq!(cfg["last_reload"]["ok"], false);
    assert_eq!(
        cfg["last_reload"]["problems"][0]["key"],
        "routes[0].retries"
    );
    assert!(cfg["last_success_at"].is_string());

    // A cross-reference error is named too.
    gw.write_config(&[upstream("a", &[&a], ""), route("a", "/a", "nope", "")].concat());
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422);
    assert_eq!(report["problems"][0]["key"], "routes[0].upstream");

    let metrics = c.get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("gateway_config_reloads_total{result=\"failure\"}"),
        "{text}"
    );

    // Fixing the file recovers.
    gw.write_config(&good);
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
}

#[tokio::test]
async fn a_request_in_flight_across_a_reload_completes() {
    let old = FakeUpstream::start("old").await;
    let new = FakeUpstream::start("new").await;
    let gw =
        TestGateway::start(&[upstream("svc", &[&old], ""), route("r", "/", "svc", "")].concat())
            .await;
    let client = Client::default();
    let url = gw.url("/hold");
    let in_flight = tokio::spawn(async move { client.get(&url).await });
    old.hold().arrived().await;

    gw.write_config(&[upstream("svc", &[&new], ""), route("r", "/", "svc", "")].concat());
    let (status, report) = gw.reload().await;
    assert_eq!(
        (status, report["changed"].as_bool()),
        (200, Some(true)),
        "{report}"
    );
    assert_eq!(
        Client::default()
            .get(&gw.url("/x"))
            .await
            .header("x-upstream"),
        "new"
    );

    old.hold().release(1);
    let r = within("the held request", in_flight).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), "old");
}

#[tokio::test]
async fn a_listener_change_is_reported_as_needing_a_restart() {
    let a = FakeUpstream::start("a").await;
    let body = [upstream("a", &[&a], ""), route("a", "/a", "a", "")].concat();
    let gw = TestGateway::start(&body).await;
    gw.write_raw_config(&format!(
        "[listen]\nproxy = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:0\"\n{body}"
    ));
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
    let restart = report["restart_required"].as_array().unwrap();
    assert_eq!(restart.len(), 1, "{report}");
    assert!(restart[0].as_str().unwrap().contains("listen.proxy"));
    assert_eq!(
        Client::default().get(&gw.url("/a")).await.status,
        200,
        "still serving on the old port"
    );
}

/// `server.io_uring = false` writes request heads one by one, and serves as well; the
/// setting is read at startup, so a reload that changes it is reported as needing a
/// restart.
#[tokio::test]
async fn io_uring_can_be_turned_off_and_a_reload_cannot_turn_it_on() {
    let a = FakeUpstream::start("a").await;
    let body = [upstream("a", &[&a], ""), route("a", "/a", "a", "")].concat();
    let gw = TestGateway::start(&format!("[server]\nio_uring = false\n{body}")).await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/a")).await.status, 200);
    let posted = c
        .request(Method::POST, &gw.url("/a"), &[], "an order")
        .await;
    assert_eq!(posted.status, 200);

    gw.write_config(&format!("[server]\nio_uring = true\n{body}"));
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
    let restart = report["restart_required"].as_array().unwrap();
    assert_eq!(restart.len(), 1, "{report}");
    assert!(
        restart[0].as_str().unwrap().contains("server.io_uring"),
        "{report}"
    );
    assert_eq!(c.get(&gw.url("/a")).await.status, 200);
}

/// hyper's read buffer for request heads is sized once, from `max_request_headers` at
/// startup: a reload may raise the limit within that buffer, but not past it (heads
/// between the two would get hyper's bare 431). That needs a restart, reported as
/// `[listen]` changes are, and the running limit stays.
#[tokio::test]
async fn max_request_headers_raised_past_the_listeners_buffer_needs_a_restart() {
    let a = FakeUpstream::start("a").await;
    let body = [upstream("a", &[&a], ""), route("a", "/a", "a", "")].concat();
    // The default 16 KiB: the listener reads heads into 64 KiB.
    let gw = TestGateway::start(&body).await;
    let c = Client::default();
    let with_header = |len: usize| {
        let (c, url) = (c.clone(), gw.url("/a"));
        async move {
            let big = "x".repeat(len);
            c.request(Method::GET, &url, &[("x-big", &big)], "").await
        }
    };
    assert_eq!(with_header(20_000).await.status, 431);

    // Within the buffer: applied at once.
    gw.write_config(&format!(
        "[server]\nmax_request_headers = \"32KiB\"\n{body}"
    ));
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["restart_required"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(with_header(20_000).await.status, 200);

    // Past it: reported, and 32 KiB stays.
    gw.write_config(&format!(
        "[server]\nmax_request_headers = \"128KiB\"\n{body}"
    ));
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
    let restart = report["restart_required"].as_array().unwrap();
    assert_eq!(restart.len(), 1, "{report}");
    assert!(
        restart[0]
            .as_str()
            .unwrap()
            .contains("server.max_request_headers"),
        "{report}"
    );
    let r = with_header(40_000).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.header("x-gateway-error"), "headers_too_large");
    assert_eq!(with_header(20_000).await.status, 200);
}

#[tokio::test]
async fn a_deleted_config_file_keeps_the_running_config() {
    let a = FakeUpstream::start("a").await;
    let gw =
        TestGateway::start(&[upstream("a", &[&a], ""), route("a", "/a", "a", "")].concat()).await;
    std::fs::remove_file(&gw.config_path).unwrap();
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report}");
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{report}"
    );
    assert_eq!(Client::default().get(&gw.url("/a")).await.status, 200);
}
