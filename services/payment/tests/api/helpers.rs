//! Spawns the payment service on 127.0.0.1:0 on the requested backend.

use std::sync::Arc;

use payment_service::domain::DeclineRule;
use payment_service::store::{MemoryPaymentStore, PgPaymentStore};
use payment_service::AppState;
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

pub(crate) async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let bus = InProcessBus::new();
    let events = bus.subscribe("test", &["#"]).await.unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    let (stop, shutdown) = Shutdown::new();
    let decline = Arc::new(DeclineRule::default());
    let (state, db) = match backend {
        Backend::Memory => (
            AppState {
                store: Arc::new(MemoryPaymentStore::new(bus)),
                decline,
            },
            None,
        ),
        Backend::Postgres => {
            let db = test_db().await?;
            let wake = Arc::new(Notify::new());
            let store = PgPaymentStore::new(db.pool.clone(), wake.clone())
                .await
                .unwrap();
            tokio::spawn(Relay::new(db.pool.clone(), bus, wake).run(shutdown.wait()));
            (
                AppState {
                    store: Arc::new(store),
                    decline,
                },
                Some(db),
            )
        }
    };
    let server = TestServer::spawn(payment_service::app(state)).await;
    Some(TestApp {
        server,
        events,
        db,
        _stop: stop,
    })
}

impl TestApp {
    pub(crate) async fn next_event(&mut self) -> services_common::Event {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.events.next())
            .await
            .expect("no event within 10s")
            .expect("bus closed")
            .unwrap()
            .event
    }

    pub(crate) async fn cleanup(self) {
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}
