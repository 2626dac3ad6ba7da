//! Event plumbing against real backends: the outbox relay on PostgreSQL (DATABASE_URL) and the
//! RabbitMQ bus (AMQP_URL). Each test skips with a note when its URL is unset and fails when the
//! URL is set but the server is unreachable.

// Tests may unwrap: a panic is the failure report (the workspace lint is for service code).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use services_common::bus::{BusError, EventBus, InProcessBus, Subscription};
use services_common::outbox::{self, Relay, OUTBOX_TABLE_SQL};
use services_common::rabbit::RabbitBus;
use services_common::server::Shutdown;
use services_common::test_support::{amqp_url, eventually, test_db, unique_name};
use services_common::Event;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

/// A bus that is "down" for its first `failures` publishes, then delivers to an in-process bus.
struct FlakyBus {
    inner: InProcessBus,
    failures: usize,
    attempts: AtomicUsize,
}

#[async_trait]
impl EventBus for FlakyBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(BusError::Unavailable("broker down (simulated)".into()));
        }
        self.inner.publish(event).await
    }

    async fn subscribe(
        &self,
        queue: &str,
        patterns: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(queue, patterns).await
    }
}

async fn next_event(sub: &mut Box<dyn Subscription>) -> services_common::bus::Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("no event in time")
        .expect("subscription ended")
        .expect("delivery failed")
}

#[tokio::test]
async fn outbox_events_written_while_the_broker_is_down_are_delivered_later() {
    let Some(db) = test_db().await else { return };
    sqlx::query(OUTBOX_TABLE_SQL)
        .execute(&db.pool)
        .await
        .unwrap();
    let events: Vec<Event> = (0..3)
        .map(|i| Event::new("order.created", json!({"order_id": format!("o{i}")})))
        .collect();
    {
        let mut tx = db.pool.begin().await.unwrap();
        for e in &events {
            outbox::enqueue(&mut tx, e).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    assert_eq!(outbox::unsent(&db.pool).await.unwrap(), 3);

    let bus = Arc::new(FlakyBus {
        inner: InProcessBus::new(),
        failures: 2,
        attempts: AtomicUsize::new(0),
    });
    let mut sub = bus.subscribe("q", &["#"]).await.unwrap();
    let wake = Arc::new(Notify::new());
    let relay = Relay::new(db.pool.clone(), bus.clone(), wake.clone());
    // While the broker is down nothing is marked sent.
    assert!(relay.relay_once().await.is_err());
    assert_eq!(outbox::unsent(&db.pool).await.unwrap(), 3);

    let (stop, shutdown) = Shutdown::new();
    let task = tokio::spawn(relay.run(shutdown.wait()));
    for expected in &events {
        let got = next_event(&mut sub).await;
        assert_eq!(&got.event, expected, "delivered in order, intact");
    }
    eventually(WAIT, "outbox drained", || async {
        (outbox::unsent(&db.pool).await.unwrap() == 0).then_some(())
    })
    .await;
    assert!(
        bus.attempts.load(Ordering::SeqCst) >= 5,
        "two failures, then three sends"
    );

    // A new row is picked up promptly once the store wakes the relay.
    let late = Event::new("payment.processed", json!({"order_id": "o9"}));
    let mut conn = db.pool.acquire().await.unwrap();
    outbox::enqueue(&mut conn, &late).await.unwrap();
    drop(conn);
    wake.notify_one();
    assert_eq!(next_event(&mut sub).await.event, late);

    stop.fire();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    // Recently sent rows are kept; old ones are pruned.
    let relay = Relay::new(db.pool.clone(), bus.clone(), wake);
    assert_eq!(relay.prune().await.unwrap(), 0);
    sqlx::query("UPDATE outbox SET sent_at = now() - interval '2 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(relay.prune().await.unwrap(), 4);
    db.cleanup().await;
}

#[tokio::test]
async fn rabbitmq_publish_consume_with_manual_acks() {
    let Some(url) = amqp_url() else { return };
    let exchange = unique_name("events_test");
    let queue = unique_name("q_test");
    let bus = RabbitBus::connect(&url, &exchange)
        .await
        .expect("AMQP_URL is set but RabbitMQ is unusable");
    let mut sub = bus.subscribe(&queue, &["order.*", "saga.*"]).await.unwrap();
    let skipped = Event::new("payment.processed", json!({"order_id": "x"}));
    let wanted = Event::new(
        "order.created",
        json!({"order_id": "x", "total_amount": "59.98"}),
    );
    bus.publish(&skipped).await.unwrap();
    bus.publish(&wanted).await.unwrap();

    // Received but not acked: closing the consumer hands it back to the queue.
    let first = next_event(&mut sub).await;
    assert_eq!(first.event, wanted);
    drop(first);
    drop(sub);
    let mut again = bus.subscribe(&queue, &["order.*", "saga.*"]).await.unwrap();
    let redelivered = next_event(&mut again).await;
    assert_eq!(redelivered.event, wanted, "unacked event is redelivered");
    redelivered.ack().await.unwrap();

    let done = Event::new("saga.completed", json!({"order_id": "x"}));
    bus.publish(&done).await.unwrap();
    assert_eq!(
        next_event(&mut again).await.event,
        done,
        "acked event is not redelivered"
    );
    drop(again);
    bus.delete_topology(&[&queue]).await.unwrap();
}

#[tokio::test]
async fn outbox_relays_to_rabbitmq_with_confirms() {
    let Some(url) = amqp_url() else { return };
    let Some(db) = test_db().await else { return };
    sqlx::query(OUTBOX_TABLE_SQL)
        .execute(&db.pool)
        .await
        .unwrap();
    let exchange = unique_name("events_test");
    let queue = unique_name("q_test");
    let bus = Arc::new(
        RabbitBus::connect(&url, &exchange)
            .await
            .expect("RabbitMQ unusable"),
    );
    let mut sub = bus.subscribe(&queue, &["#"]).await.unwrap();
    let e = Event::new(
        "inventory.reserved",
        json!({"order_id": "r1", "quantity": 2}),
    );
    let mut conn = db.pool.acquire().await.unwrap();
    outbox::enqueue(&mut conn, &e).await.unwrap();
    drop(conn);
    let relay = Relay::new(db.pool.clone(), bus.clone(), Arc::new(Notify::new()));
    assert_eq!(
        relay.relay_once().await.unwrap(),
        1,
        "confirmed and marked sent"
    );
    assert_eq!(outbox::unsent(&db.pool).await.unwrap(), 0);
    let got = next_event(&mut sub).await;
    assert_eq!(got.event, e);
    got.ack().await.unwrap();
    drop(sub);
    bus.delete_topology(&[&queue]).await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn lazy_rabbit_bus_reports_an_unreachable_broker() {
    // Port 9 (discard) has no AMQP broker: publishing fails, it does not hang or panic.
    let bus = RabbitBus::lazy("amqp://guest:guest@127.0.0.1:9/%2f", "events");
    let err = bus
        .publish(&Event::new("order.created", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::Unavailable(_) | BusError::Timeout),
        "{err}"
    );
}
