//! Happy paths, pagination, transitions, idempotency and events, on both backends.

use http::{Method, StatusCode};
use serde_json::json;
use services_common::test_support::Backend;

use crate::helpers::{order_body, spawn_app};

async fn create_returns_201_pending_and_emits_event(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    let (status, body) = app.post("/orders", order_body()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["customer_id"], "c1");
    assert_eq!(body["quantity"], 2);
    assert_eq!(body["total_amount"], "59.98");
    assert!(body["created_at"].is_string() && body["updated_at"].is_string());
    let id = body["id"].as_str().unwrap().to_owned();

    let (status, fetched) = app.get(&format!("/orders/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);

    let event = app.next_event().await;
    assert_eq!(event.event_type, "order.created");
    assert_eq!(event.order_id().as_deref(), Some(id.as_str()));
    app.cleanup().await;
}

async fn numeric_amounts_are_accepted_as_decimals(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut body = order_body();
    body["total_amount"] = json!(59.98);
    let (status, created) = app.post("/orders", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["total_amount"], "59.98");
    app.cleanup().await;
}

async fn list_is_paginated_newest_first(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, b) = app.post("/orders", order_body()).await;
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (status, page) = app.get("/orders?limit=2&offset=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 3);
    let got: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);
    let (_, page2) = app.get("/orders?limit=2&offset=2").await;
    assert_eq!(page2["orders"][0]["id"], ids[0].as_str());
    let (status, err) = app.get("/orders?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "validation_error");
    app.cleanup().await;
}

async fn legal_and_illegal_transitions(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    let (_, order) = app.post("/orders", order_body()).await;
    let path = format!("/orders/{}", order["id"].as_str().unwrap());
    let _created = app.next_event().await;

    let (status, confirmed) = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"status": "confirmed"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    assert_eq!(confirmed["status"], "confirmed");
    let event = app.next_event().await;
    assert_eq!(event.event_type, "order.updated");
    assert_eq!(event.data["status"], "confirmed");
    assert_eq!(event.data["previous_status"], "pending");

    let (status, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"status": "cancelled"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Repeating the current status is a no-op (a retried compensation).
    let (status, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"status": "cancelled"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"status": "completed"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"], "invalid_transition");
    let (_, still) = app.get(&path).await;
    assert_eq!(still["status"], "cancelled");
    app.cleanup().await;
}

async fn idempotency_key_returns_the_same_order(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let headers = [("idempotency-key", "saga-1:create_order")];
    let (s1, a) = app
        .call(Method::POST, "/orders", Some(order_body()), &headers)
        .await;
    let (s2, b) = app
        .call(Method::POST, "/orders", Some(order_body()), &headers)
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a["id"], b["id"]);
    let (_, page) = app.get("/orders").await;
    assert_eq!(page["total"], 1);
    app.cleanup().await;
}

async fn unknown_order_is_404(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, body) = app.get(&format!("/orders/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/orders/{}", uuid::Uuid::new_v4()),
            Some(json!({"status": "cancelled"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    app.cleanup().await;
}

services_common::backend_tests!(
    create_returns_201_pending_and_emits_event,
    numeric_amounts_are_accepted_as_decimals,
    list_is_paginated_newest_first,
    legal_and_illegal_transitions,
    idempotency_key_returns_the_same_order,
    unknown_order_is_404,
);
