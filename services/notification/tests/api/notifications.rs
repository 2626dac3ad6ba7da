//! Every event family is recorded once; duplicates are ignored; filtering by order works.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use services_common::bus::{EventBus, InProcessBus};
use services_common::test_support::Backend;
use services_common::Event;

use crate::helpers::spawn_app;

async fn records_each_event_once(backend: Backend) {
    let bus = Arc::new(InProcessBus::new());
    let Some(app) = spawn_app(backend, bus.clone(), "q").await else {
        return;
    };
    let created = Event::new("order.created", json!({"order_id": "o1"}));
    bus.publish(&created).await.unwrap();
    bus.publish(&created).await.unwrap(); // redelivery
    bus.publish(&Event::new(
        "payment.processed",
        json!({"order_id": "o1", "status": "completed"}),
    ))
    .await
    .unwrap();
    bus.publish(&Event::new("inventory.reserved", json!({"order_id": "o2"})))
        .await
        .unwrap();
    bus.publish(&Event::new("saga.completed", json!({"order_id": "o2"})))
        .await
        .unwrap();
    bus.publish(&Event::new("other.thing", json!({"order_id": "o1"})))
        .await
        .unwrap(); // not subscribed

    let all = app.wait_for("/notifications", 4).await;
    let types: Vec<&str> = all
        .iter()
        .map(|n| n["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "order.created",
            "payment.processed",
            "inventory.reserved",
            "saga.completed"
        ]
    );
    let o1 = app.wait_for("/notifications?order_id=o1", 2).await;
    assert_eq!(o1[0]["event_id"], created.event_id.to_string());
    assert_eq!(o1[0]["message"], "We received order o1.");
    let (status, err) = app.get("/notifications?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "validation_error");
    app.stop().await;
}

services_common::backend_tests!(records_each_event_once);
