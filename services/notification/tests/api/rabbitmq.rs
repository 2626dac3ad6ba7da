//! Over RabbitMQ (AMQP_URL): a durable queue with manual acks feeds the store; duplicates dedup.

use std::sync::Arc;

use serde_json::json;
use services_common::bus::EventBus;
use services_common::rabbit::RabbitBus;
use services_common::test_support::{amqp_url, unique_name, Backend};
use services_common::Event;

use crate::helpers::spawn_app;

async fn consumes_from_rabbitmq(backend: Backend) {
    let Some(url) = amqp_url() else { return };
    let exchange = unique_name("events_test");
    let bus = Arc::new(
        RabbitBus::connect(&url, &exchange)
            .await
            .expect("AMQP_URL is set but RabbitMQ is unusable"),
    );
    let queue = unique_name("notifications_test");
    let Some(app) = spawn_app(backend, bus.clone(), &queue).await else {
        return;
    };
    let e = Event::new("order.created", json!({"order_id": "r1"}));
    bus.publish(&e).await.unwrap();
    bus.publish(&e).await.unwrap();
    bus.publish(&Event::new("saga.compensated", json!({"order_id": "r1"})))
        .await
        .unwrap();
    let items = app.wait_for("/notifications?order_id=r1", 2).await;
    assert_eq!(items[0]["event_id"], e.event_id.to_string());
    app.stop().await;
    bus.delete_topology(&[&queue]).await.unwrap();
}

services_common::backend_tests!(consumes_from_rabbitmq);
