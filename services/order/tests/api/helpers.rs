//! Spawns the order service on 127.0.0.1:0 on the requested backend.

use services_common::test_support::{Backend, TestApp};

/// The app on `backend`, or `None` when that backend is not configured (PG without DATABASE_URL).
pub(crate) async fn spawn_app(backend: Backend) -> Option<TestApp> {
    TestApp::spawn(backend, |bus, pool| async move {
        let service = order_service::build_on(pool, bus).await.unwrap();
        (order_service::app(service.state), service.relay)
    })
    .await
}

pub(crate) fn order_body() -> serde_json::Value {
    serde_json::json!({
        "customer_id": "c1",
        "product_id": "p1",
        "quantity": 2,
        "total_amount": "59.98"
    })
}
