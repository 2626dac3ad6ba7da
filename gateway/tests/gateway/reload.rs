//! Hot reload: new routes without restart, broken files refused and reported,
//! requests in flight finish on their snapshot, listener changes flagged.

use gateway_test_support::{eventually, within, Client, FakeUpstream, TestGateway};

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
