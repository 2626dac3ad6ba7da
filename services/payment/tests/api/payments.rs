//! Charges, declines, idempotency, refunds and validation, on both backends.

use http::{Method, StatusCode};
use serde_json::json;
use services_common::test_support::Backend;
use uuid::Uuid;

use crate::helpers::spawn_app;

fn body(amount: serde_json::Value) -> serde_json::Value {
    json!({"order_id": Uuid::new_v4(), "amount": amount})
}

async fn charge_then_get(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    let req = body(json!("59.98"));
    let (status, p) = app.post("/payments", req.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["status"], "completed");
    assert_eq!(p["amount"], "59.98");
    assert_eq!(p["order_id"], req["order_id"]);
    let (status, got) = app
        .get(&format!("/payments/{}", p["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, p);
    let (_, list) = app
        .get(&format!(
            "/payments?order_id={}",
            req["order_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(list["payments"].as_array().unwrap().len(), 1);
    let e = app.next_event().await;
    assert_eq!(e.event_type, "payment.processed");
    assert_eq!(e.data["payment_id"], p["id"]);
    app.cleanup().await;
}

async fn declines_are_402_and_deterministic(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    let (status, err) = app.post("/payments", body(json!(10000.01))).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(err["error"], "payment_declined");
    let mut by_customer = body(json!(5));
    by_customer["customer_id"] = json!("decline-carol");
    let (status, err) = app.post("/payments", by_customer).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(err["error"], "payment_declined");
    let (status, _) = app.post("/payments", body(json!(10000))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.next_event().await.event_type, "payment.declined");
    app.cleanup().await;
}

async fn idempotency_key_never_charges_twice(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let req = body(json!("12.50"));
    let key = [("Idempotency-Key", "saga-x:process_payment")];
    let (s1, a) = app
        .call(Method::POST, "/payments", Some(req.clone()), &key)
        .await;
    let (s2, b) = app
        .call(Method::POST, "/payments", Some(req.clone()), &key)
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a["id"], b["id"]);
    let (_, list) = app
        .get(&format!(
            "/payments?order_id={}",
            req["order_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(list["payments"].as_array().unwrap().len(), 1);
    // The same key for a different charge is refused.
    let (status, err) = app
        .call(Method::POST, "/payments", Some(body(json!(1))), &key)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "idempotency_conflict");
    // A declined charge replays as declined.
    let dkey = [("Idempotency-Key", "saga-y:process_payment")];
    let big = body(json!(20000));
    let (s1, _) = app
        .call(Method::POST, "/payments", Some(big.clone()), &dkey)
        .await;
    let (s2, _) = app.call(Method::POST, "/payments", Some(big), &dkey).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::PAYMENT_REQUIRED, StatusCode::PAYMENT_REQUIRED)
    );
    app.cleanup().await;
}

async fn refund_is_idempotent(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    let (_, p) = app.post("/payments", body(json!(30))).await;
    let _processed = app.next_event().await;
    let path = format!("/payments/{}/refund", p["id"].as_str().unwrap());
    let (s1, r1) = app.call(Method::POST, &path, None, &[]).await;
    let (s2, r2) = app.call(Method::POST, &path, None, &[]).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(r1["status"], "refunded");
    assert_eq!(r1, r2);
    assert_eq!(app.next_event().await.event_type, "payment.refunded");
    // Exactly one refund event: the next publish we trigger is the next event seen.
    let (_, other) = app.post("/payments", body(json!(1))).await;
    let e = app.next_event().await;
    assert_eq!(e.event_type, "payment.processed");
    assert_eq!(e.data["payment_id"], other["id"]);
    app.cleanup().await;
}

async fn refund_errors(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, err) = app
        .call(
            Method::POST,
            &format!("/payments/{}/refund", Uuid::new_v4()),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "not_found");
    let (status, _) = app.post("/payments", body(json!(99999))).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    app.cleanup().await;
}

services_common::backend_tests!(
    charge_then_get,
    declines_are_402_and_deterministic,
    idempotency_key_never_charges_twice,
    refund_is_idempotent,
    refund_errors,
);

#[tokio::test]
async fn validation_errors_are_json() {
    let app = spawn_app(Backend::Memory).await.unwrap();
    for amount in [json!(0), json!("-1")] {
        let (status, err) = app.post("/payments", body(amount)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err["error"], "validation_error");
    }
    let (status, err) = app
        .post("/payments", json!({"order_id": "nope", "amount": 1}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");
    let (status, err) = app
        .raw(Method::POST, "/payments", "application/json", "[")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "malformed_json");
    let (status, err) = app.get("/payments/xyz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_path");
    let (status, err) = app.get("/payments").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_query");
}
