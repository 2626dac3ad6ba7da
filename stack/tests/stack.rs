//! End to end through the real gateway: the stack on port 0 (a copy of config/gateway.toml with
//! the ports rewritten), seeding stock, placing orders, running sagas, reading notifications.
//! Uses the embedded backends (memory, one in-process bus) so it needs no server.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use services_common::http_client::JsonClient;
use services_common::test_support::eventually;
use stack::{Listeners, ServiceAddrs};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn the_stack_serves_the_seed_flows_through_the_gateway() {
    let services = Listeners::bind(&ServiceAddrs {
        order: any_port(),
        payment: any_port(),
        inventory: any_port(),
        notification: any_port(),
        saga: any_port(),
    })
    .await
    .unwrap();
    let a = services.local_addrs().unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/gateway.toml"
    ))
    .unwrap();
    let mut text = shipped
        .replace("\"0.0.0.0:8000\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9000\"", "\"127.0.0.1:0\"");
    for (port, addr) in [
        (8001, a.order),
        (8002, a.payment),
        (8003, a.inventory),
        (8004, a.notification),
        (8010, a.saga),
    ] {
        text = text.replace(&format!("\"127.0.0.1:{port}\""), &format!("\"{addr}\""));
    }
    assert!(
        !text.contains(":800"),
        "every shipped port was rewritten:\n{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let config = gateway::config::load(&path).unwrap();
    let gw = gateway::Listeners::bind(&config).await.unwrap();
    let base = format!("http://{}", gw.local_addrs().unwrap().0);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The embedded defaults: no DATABASE_URL / AMQP_URL whatever the test environment says.
    let stack = tokio::spawn(stack::run(services, gw, config, |_| None, async {
        let _ = stop_rx.await;
    }));

    let client = JsonClient::new(Duration::from_secs(2), Duration::from_secs(30));
    let call = |method: Method, path: &str, body: Option<Value>| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.send(method, &url, body.as_ref(), &[]).await.unwrap();
            (r.status, r.body)
        }
    };

    let (status, p) = call(
        Method::PUT,
        "/inventory/products/p1",
        Some(json!({"stock": 100})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (status, order) = call(
        Method::POST,
        "/order/orders",
        Some(json!({"customer_id": "c1", "product_id": "p1", "quantity": 2, "total_amount": "59.98"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "pending");

    // Idempotency-Key travels through the gateway: a retried create returns the same order.
    let body = json!({"customer_id": "c9", "product_id": "p1", "quantity": 1, "total_amount": 5});
    let url = format!("{base}/order/orders");
    let headers = [("Idempotency-Key", "e2e-1")];
    let first = client
        .send(Method::POST, &url, Some(&body), &headers)
        .await
        .unwrap();
    let again = client
        .send(Method::POST, &url, Some(&body), &headers)
        .await
        .unwrap();
    assert_eq!(first.body["id"], again.body["id"]);

    let (status, saga) = call(
        Method::POST,
        "/saga/execute",
        Some(
            json!({"customer_id": "c1", "product_id": "p1", "quantity": 2, "total_amount": 59.98}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saga}");
    assert_eq!(saga["status"], "completed", "{saga}");
    let (_, fetched) = call(
        Method::GET,
        &format!("/saga/{}", saga["saga_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(fetched["status"], "completed");

    let (_, declined) = call(
        Method::POST,
        "/saga/execute",
        Some(json!({"customer_id": "decline-c2", "product_id": "p1", "quantity": 3, "total_amount": "30"})),
    )
    .await;
    assert_eq!(declined["status"], "compensated", "{declined}");
    let (_, p) = call(Method::GET, "/inventory/products/p1", None).await;
    assert_eq!(
        (p["stock"].as_i64(), p["reserved"].as_i64()),
        (Some(98), Some(2))
    );

    let (status, err) = call(
        Method::POST,
        "/payment/payments",
        Some(json!({"order_id": "x", "amount": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");

    // The notification service saw the saga's events through the shared bus.
    let order_id = saga["order_id"].as_str().unwrap().to_owned();
    let path = format!("/notification/notifications?order_id={order_id}");
    let types = eventually(Duration::from_secs(10), "saga notifications", || {
        let call = &call;
        let path = path.clone();
        async move {
            let (_, body) = call(Method::GET, &path, None).await;
            let types: Vec<String> = body["notifications"]
                .as_array()?
                .iter()
                .map(|n| n["event_type"].as_str().unwrap_or("").to_owned())
                .collect();
            types.iter().any(|t| t == "saga.completed").then_some(types)
        }
    })
    .await;
    for t in [
        "order.created",
        "inventory.reserved",
        "payment.processed",
        "order.updated",
        "saga.completed",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(45), stack)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
