//! The saga's outcomes over HTTP: success, decline and out-of-stock compensation, a failing last
//! step, validation; with the saga store on memory and on PostgreSQL.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use services_common::test_support::Backend;

use crate::helpers::{request, world, Fault, Faulty};

fn step_statuses(saga: &serde_json::Value) -> Vec<(String, String)> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn success_confirms_the_order(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    let (status, saga) = w
        .saga
        .post("/saga/execute", json!({"customer_id": "c1", "product_id": "p1", "quantity": 2, "total_amount": "59.98"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{saga}");
    assert_eq!(saga["status"], "completed", "{saga}");
    assert_eq!(
        step_statuses(&saga),
        pairs(&[
            ("create_order", "completed"),
            ("reserve_inventory", "completed"),
            ("process_payment", "completed"),
            ("confirm_order", "completed")
        ])
    );
    let order_id = saga["order_id"].as_str().unwrap();
    assert_eq!(w.order_status(order_id).await, "confirmed");
    assert_eq!(w.stock("p1").await, (8, 2));
    assert_eq!(w.payments(order_id).await, ["completed"]);
    let (status, fetched) = w
        .saga
        .get(&format!("/saga/{}", saga["saga_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, saga);
    w.cleanup().await;
}

async fn decline_compensates(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    for body in [
        json!({"customer_id": "decline-bob", "product_id": "p1", "quantity": 3, "total_amount": 30}),
        json!({"customer_id": "rich", "product_id": "p1", "quantity": 3, "total_amount": "10000.01"}),
    ] {
        let (status, saga) = w.saga.post("/saga/execute", body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(saga["status"], "compensated", "{saga}");
        assert_eq!(
            step_statuses(&saga),
            pairs(&[
                ("create_order", "compensated"),
                ("reserve_inventory", "compensated"),
                ("process_payment", "failed"),
                ("confirm_order", "pending")
            ])
        );
        assert!(
            saga["steps"][2]["error"]
                .as_str()
                .unwrap()
                .contains("payment_declined"),
            "{saga}"
        );
        let order_id = saga["order_id"].as_str().unwrap();
        assert_eq!(w.order_status(order_id).await, "cancelled");
        assert_eq!(w.stock("p1").await, (10, 0), "stock back");
        assert_eq!(w.payments(order_id).await, ["declined"], "no charge left");
    }
    w.cleanup().await;
}

async fn out_of_stock_compensates(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 1).await;
    let (_, saga) = w
        .saga
        .post(
            "/saga/execute",
            json!({"customer_id": "c1", "product_id": "p1", "quantity": 5, "total_amount": 5}),
        )
        .await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert_eq!(
        step_statuses(&saga),
        pairs(&[
            ("create_order", "compensated"),
            ("reserve_inventory", "failed"),
            ("process_payment", "pending"),
            ("confirm_order", "pending")
        ])
    );
    assert!(saga["error"]
        .as_str()
        .unwrap()
        .contains("insufficient_stock"));
    let order_id = saga["order_id"].as_str().unwrap();
    assert_eq!(w.order_status(order_id).await, "cancelled");
    assert_eq!(w.stock("p1").await, (1, 0));
    assert!(w.payments(order_id).await.is_empty());
    w.cleanup().await;
}

async fn failing_last_step_refunds_the_payment(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    let (faulty, _) = Faulty::new(w.http_services(), Fault::Reject("confirm"));
    let orch = w.orchestrator(faulty).await;
    let saga = orch.execute(request("c1", "p1", 4, "40")).await.unwrap();
    assert_eq!(saga.status.as_str(), "compensated");
    let order_id = saga.order_id.unwrap().to_string();
    assert_eq!(w.payments(&order_id).await, ["refunded"], "no charge left");
    assert_eq!(w.stock("p1").await, (10, 0));
    assert_eq!(w.order_status(&order_id).await, "cancelled");
    w.cleanup().await;
}

async fn lost_payment_answer_is_settled_and_refunded(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    // The charge happens but both forward attempts lose the answer (fast_retry: 2 attempts):
    // compensation replays the call under the same key, learns the payment and refunds it.
    let (faulty, _) = Faulty::new(w.http_services(), Fault::LoseAnswers("pay", 2));
    let orch = w.orchestrator(faulty).await;
    let saga = orch.execute(request("c1", "p1", 2, "20")).await.unwrap();
    assert_eq!(saga.status.as_str(), "compensated", "{saga:?}");
    let order_id = saga.order_id.unwrap().to_string();
    assert_eq!(
        w.payments(&order_id).await,
        ["refunded"],
        "charged once, refunded"
    );
    assert_eq!(w.stock("p1").await, (10, 0));
    assert_eq!(w.order_status(&order_id).await, "cancelled");
    w.cleanup().await;
}

async fn nothing_done_is_failed(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    let (faulty, _) = Faulty::new(w.http_services(), Fault::Reject("create_order"));
    let orch = w.orchestrator(faulty).await;
    let saga = orch.execute(request("c1", "p1", 1, "1")).await.unwrap();
    assert_eq!(saga.status.as_str(), "failed");
    assert_eq!(saga.order_id, None);
    w.cleanup().await;
}

async fn execute_honours_idempotency_key(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    let body = json!({"customer_id": "c1", "product_id": "p1", "quantity": 1, "total_amount": 10});
    let key = [("Idempotency-Key", "checkout-42")];
    let (_, a) = w
        .saga
        .call(
            http::Method::POST,
            "/saga/execute",
            Some(body.clone()),
            &key,
        )
        .await;
    let (_, b) = w
        .saga
        .call(http::Method::POST, "/saga/execute", Some(body), &key)
        .await;
    assert_eq!(a["status"], "completed");
    assert_eq!(a["saga_id"], b["saga_id"]);
    assert_eq!(w.order_count().await, 1);
    assert_eq!(w.stock("p1").await, (9, 1));
    w.cleanup().await;
}

services_common::backend_tests!(
    execute_honours_idempotency_key,
    success_confirms_the_order,
    decline_compensates,
    out_of_stock_compensates,
    failing_last_step_refunds_the_payment,
    lost_payment_answer_is_settled_and_refunded,
    nothing_done_is_failed,
);

#[tokio::test]
async fn bad_input_is_rejected_before_any_step() {
    let w = world(Backend::Memory).await.unwrap();
    let (status, err) = w
        .saga
        .post(
            "/saga/execute",
            json!({"customer_id": "c1", "product_id": "p1", "quantity": 0, "total_amount": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "validation_error");
    let (status, err) = w
        .saga
        .post("/saga/execute", json!({"customer_id": "c1"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");
    assert_eq!(w.order_count().await, 0);
    let (status, err) = w.saga.get(&format!("/saga/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "not_found");
    let (status, err) = w.saga.get("/saga/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_path");
}

#[tokio::test]
async fn unreachable_services_fail_cleanly() {
    let w = world(Backend::Memory).await.unwrap();
    // Nothing listens on port 9 (discard) on a test machine: every call is a connect error.
    let dead = saga_orchestrator::services::Endpoints::via_gateway("http://127.0.0.1:9");
    let orch = w
        .orchestrator(Arc::new(saga_orchestrator::services::HttpServices::new(
            dead,
        )))
        .await;
    let saga = orch.execute(request("c1", "p1", 1, "1")).await.unwrap();
    assert_eq!(saga.status.as_str(), "failed");
    assert!(saga.error.unwrap().contains("unavailable"));
}
