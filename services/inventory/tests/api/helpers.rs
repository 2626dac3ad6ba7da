//! Spawns the inventory service on 127.0.0.1:0 on the requested backend.

use services_common::test_support::{Backend, TestApp};

pub(crate) async fn spawn_app(backend: Backend) -> Option<TestApp> {
    TestApp::spawn(backend, |bus, pool| async move {
        let service = inventory_service::build_on(pool, bus).await.unwrap();
        (inventory_service::app(service.state), service.relay)
    })
    .await
}
