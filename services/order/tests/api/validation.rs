//! Bad input answers a clear 4xx with a JSON body; nothing panics.

use http::{Method, StatusCode};
use serde_json::json;
use services_common::test_support::Backend;

use crate::helpers::{order_body, spawn_app};

#[tokio::test]
async fn business_rules_are_422() {
    let app = spawn_app(Backend::Memory).await.unwrap();
    for (field, value) in [
        ("quantity", json!(0)),
        ("quantity", json!(-1)),
        ("total_amount", json!("0")),
        ("total_amount", json!(-5)),
        ("customer_id", json!("")),
    ] {
        let mut body = order_body();
        body[field] = value;
        let (status, err) = app.post("/orders", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(err["error"], "validation_error");
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
}

#[tokio::test]
async fn missing_fields_and_wrong_types_are_422_json() {
    let app = spawn_app(Backend::Memory).await.unwrap();
    let (status, err) = app.post("/orders", json!({"customer_id": "c1"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");
    let mut body = order_body();
    body["total_amount"] = json!("lots");
    let (status, err) = app.post("/orders", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");
}

#[tokio::test]
async fn malformed_json_is_400_json() {
    let app = spawn_app(Backend::Memory).await.unwrap();
    let (status, err) = app
        .raw(Method::POST, "/orders", "application/json", "{not json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "malformed_json");
    let (status, err) = app.raw(Method::POST, "/orders", "text/plain", "{}").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(err["error"], "unsupported_media_type");
}

#[tokio::test]
async fn bad_uuid_and_unknown_status_and_route() {
    let app = spawn_app(Backend::Memory).await.unwrap();
    let (status, err) = app.get("/orders/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_path");
    let (_, order) = app.post("/orders", order_body()).await;
    let path = format!("/orders/{}", order["id"].as_str().unwrap());
    let (status, err) = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"status": "shipped"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");
    let (status, err) = app.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "not_found");
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}
