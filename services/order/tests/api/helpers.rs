//! Spawns the order service on 127.0.0.1:0 on the requested backend.

use std::sync::Arc;

use order_service::store::{MemoryOrderStore, PgOrderStore};
use order_service::AppState;
use services_common::bus::{EventBus, InProcessBus, Subscription};
use services_common::outbox::Relay;
use services_common::server::{Shutdown, ShutdownTrigger};
use services_common::test_support::{test_db, Backend, TestDb, TestServer};
use tokio::sync::Notify;

pub(crate) struct TestApp {
    pub(crate) server: TestServer,
    pub(crate) events: Box<dyn Subscription>,
    pub(crate) db: Option<TestDb>,
    _stop: ShutdownTrigger,
}

impl std::ops::Deref for TestApp {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

/// The app on `backend`, or `None` when that backend is not configured (PG without DATABASE_URL).
pub(crate) async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let bus = InProcessBus::new();
    let events = bus.subscribe("test", &["#"]).await.unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    let (stop, shutdown) = Shutdown::new();
    let (state, db) = match backend {
        Backend::Memory => (
            AppState {
                store: Arc::new(MemoryOrderStore::new(bus)),
            },
            None,
        ),
        Backend::Postgres => {
            let db = test_db().await?;
            let wake = Arc::new(Notify::new());
            let store = PgOrderStore::new(db.pool.clone(), wake.clone())
                .await
                .unwrap();
            tokio::spawn(Relay::new(db.pool.clone(), bus, wake).run(shutdown.wait()));
            (
                AppState {
                    store: Arc::new(store),
                },
                Some(db),
            )
        }
    };
    let server = TestServer::spawn(order_service::app(state)).await;
    Some(TestApp {
        server,
        events,
        db,
        _stop: stop,
    })
}

pub(crate) fn order_body() -> serde_json::Value {
    serde_json::json!({
        "customer_id": "c1",
        "product_id": "p1",
        "quantity": 2,
        "total_amount": "59.98"
    })
}

impl TestApp {
    /// Waits (bounded) for the next event and returns its type and body.
    pub(crate) async fn next_event(&mut self) -> services_common::Event {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), self.events.next())
            .await
            .expect("no event within 10s")
            .expect("bus closed")
            .unwrap();
        d.event
    }

    pub(crate) async fn cleanup(self) {
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}
