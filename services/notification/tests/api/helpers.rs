//! Spawns the notification service (consumer + HTTP) on the requested backend and bus.

use std::sync::Arc;

use services_common::bus::EventBus;
use services_common::server::{Shutdown, ShutdownTrigger};
use services_common::test_support::{eventually, test_db, Backend, TestDb, TestServer};

pub(crate) struct TestApp {
    pub(crate) server: TestServer,
    pub(crate) db: Option<TestDb>,
    stop: ShutdownTrigger,
    consumer: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for TestApp {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

pub(crate) async fn spawn_app(
    backend: Backend,
    bus: Arc<dyn EventBus>,
    queue: &str,
) -> Option<TestApp> {
    let db = match backend {
        Backend::Memory => None,
        Backend::Postgres => Some(test_db().await?),
    };
    let pool = db.as_ref().map(|d| d.pool.clone());
    let service = notification_service::build_on(pool, bus, queue)
        .await
        .unwrap();
    let (stop, shutdown) = Shutdown::new();
    let consumer = tokio::spawn(service.consumer.run(shutdown));
    let server = TestServer::spawn(notification_service::app(service.state)).await;
    Some(TestApp {
        server,
        db,
        stop,
        consumer,
    })
}

impl TestApp {
    /// Polls (bounded) until `path` lists exactly `n` notifications; returns them.
    pub(crate) async fn wait_for(&self, path: &str, n: usize) -> Vec<serde_json::Value> {
        eventually(
            std::time::Duration::from_secs(15),
            &format!("{n} notifications at {path}"),
            || async {
                let (_, body) = self.get(path).await;
                let items = body["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                (items.len() == n).then_some(items)
            },
        )
        .await
    }

    pub(crate) async fn stop(self) {
        self.stop.fire();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.consumer)
            .await
            .expect("consumer did not stop")
            .unwrap();
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}
