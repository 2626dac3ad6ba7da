//! Products, reservations, idempotency, never overselling, validation; on both backends.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use services_common::http_client::JsonClient;
use services_common::test_support::Backend;
use uuid::Uuid;

use crate::helpers::spawn_app;

async fn seed_read_reserve_release(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    let (status, p) = app
        .call(Method::PUT, "/products/p1", Some(json!({"stock": 10})), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(
        (p["stock"].as_i64(), p["reserved"].as_i64()),
        (Some(10), Some(0))
    );
    assert_eq!(app.next_event().await.event_type, "inventory.updated");

    let order_id = Uuid::new_v4();
    let (status, r) = app
        .post(
            "/reservations",
            json!({"product_id": "p1", "quantity": 3, "order_id": order_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["status"], "reserved");
    assert_eq!(r["quantity"], 3);
    let e = app.next_event().await;
    assert_eq!(e.event_type, "inventory.reserved");
    assert_eq!(e.order_id(), Some(order_id.to_string()));
    let (_, p) = app.get("/products/p1").await;
    assert_eq!(
        (p["stock"].as_i64(), p["reserved"].as_i64()),
        (Some(7), Some(3))
    );

    let path = format!("/reservations/{}", r["id"].as_str().unwrap());
    let (status, got) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, r);
    for _ in 0..2 {
        let (status, released) = app.call(Method::DELETE, &path, None, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(released["status"], "released");
    }
    let (_, p) = app.get("/products/p1").await;
    assert_eq!(
        (p["stock"].as_i64(), p["reserved"].as_i64()),
        (Some(10), Some(0)),
        "released once"
    );
    assert_eq!(app.next_event().await.event_type, "inventory.released");
    app.cleanup().await;
}

async fn short_stock_is_409_and_unknowns_404(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.call(Method::PUT, "/products/p2", Some(json!({"stock": 2})), &[])
        .await;
    let (status, err) = app
        .post("/reservations", json!({"product_id": "p2", "quantity": 3}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"], "insufficient_stock");
    let (status, err) = app
        .post(
            "/reservations",
            json!({"product_id": "ghost", "quantity": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "not_found");
    let (status, _) = app.get("/products/ghost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/reservations/{}", Uuid::new_v4()),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.cleanup().await;
}

async fn idempotency_key_reserves_once(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.call(Method::PUT, "/products/p3", Some(json!({"stock": 5})), &[])
        .await;
    let key = [("Idempotency-Key", "saga-z:reserve_inventory")];
    let body = json!({"product_id": "p3", "quantity": 4});
    let (s1, a) = app
        .call(Method::POST, "/reservations", Some(body.clone()), &key)
        .await;
    // Even with too little stock left, the replay answers the stored reservation.
    let (s2, b) = app
        .call(Method::POST, "/reservations", Some(body), &key)
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a["id"], b["id"]);
    let (_, p) = app.get("/products/p3").await;
    assert_eq!(p["stock"], 1);
    let (status, err) = app
        .call(
            Method::POST,
            "/reservations",
            Some(json!({"product_id": "p3", "quantity": 1})),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "idempotency_conflict");
    app.cleanup().await;
}

async fn never_oversells_under_concurrency(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.call(
        Method::PUT,
        "/products/hot",
        Some(json!({"stock": 50})),
        &[],
    )
    .await;
    let client = JsonClient::new(Duration::from_secs(5), Duration::from_secs(60));
    let url = Arc::new(format!("{}/reservations", app.base_url));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"product_id": "hot", "quantity": 1});
            client
                .send(Method::POST, &url, Some(&body), &[])
                .await
                .unwrap()
                .status
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap()
        {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, conflicts), (50, 150));
    let (_, p) = app.get("/products/hot").await;
    assert_eq!(
        (p["stock"].as_i64(), p["reserved"].as_i64()),
        (Some(0), Some(50))
    );
    app.cleanup().await;
}

services_common::backend_tests!(
    seed_read_reserve_release,
    short_stock_is_409_and_unknowns_404,
    idempotency_key_reserves_once,
    never_oversells_under_concurrency,
);

#[tokio::test]
async fn validation_errors_are_json() {
    let app = spawn_app(Backend::Memory).await.unwrap();
    app.call(Method::PUT, "/products/p1", Some(json!({"stock": 5})), &[])
        .await;
    for q in [0, -2] {
        let (status, err) = app
            .post("/reservations", json!({"product_id": "p1", "quantity": q}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err["error"], "validation_error");
    }
    let (status, err) = app
        .call(Method::PUT, "/products/p1", Some(json!({"stock": -1})), &[])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "validation_error");
    let (status, err) = app.post("/reservations", json!({"quantity": 1})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], "invalid_body");
    let (status, err) = app
        .raw(Method::POST, "/reservations", "application/json", "{")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "malformed_json");
    let (status, err) = app
        .call(Method::DELETE, "/reservations/zzz", None, &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_path");
}
