//! The consumer never drops an event: when the store fails, the delivery stays unacked and is
//! retried until it is stored, exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notification_service::consumer::Consumer;
use notification_service::domain::Notification;
use notification_service::error::StoreError;
use notification_service::store::{MemoryNotificationStore, NotificationStore};
use serde_json::json;
use services_common::bus::{EventBus, InProcessBus};
use services_common::server::Shutdown;
use services_common::test_support::eventually;
use services_common::Event;

/// Fails its first `failures` writes, like a database that is briefly down.
struct FlakyStore {
    inner: MemoryNotificationStore,
    failures: usize,
    attempts: AtomicUsize,
}

#[async_trait]
impl NotificationStore for FlakyStore {
    async fn record(&self, n: Notification) -> Result<bool, StoreError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(StoreError::Db(sqlx::Error::PoolTimedOut));
        }
        self.inner.record(n).await
    }

    async fn list(
        &self,
        order_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.list(order_id, limit).await
    }
}

#[tokio::test]
async fn a_failing_store_delays_but_does_not_drop_events() {
    let bus = Arc::new(InProcessBus::new());
    let store = Arc::new(FlakyStore {
        inner: MemoryNotificationStore::new(),
        failures: 3,
        attempts: AtomicUsize::new(0),
    });
    let (stop, shutdown) = Shutdown::new();
    let consumer = Consumer::start(bus.clone(), "q", store.clone()).await;
    let task = tokio::spawn(consumer.run(shutdown));
    let e = Event::new("order.created", json!({"order_id": "o1"}));
    bus.publish(&e).await.unwrap();
    let stored = eventually(
        Duration::from_secs(15),
        "the event to be stored",
        || async {
            let items = store.list(None, 10).await.unwrap();
            (!items.is_empty()).then_some(items)
        },
    )
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, e.event_id);
    assert_eq!(
        store.attempts.load(Ordering::SeqCst),
        4,
        "three failures, one success"
    );
    stop.fire();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
