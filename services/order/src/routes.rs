//! HTTP handlers: `/orders` create/list, `/orders/{id}` get/patch, `/health`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use services_common::http_error::idempotency_key;
use services_common::{ApiJson, ApiPath, ApiQuery};
use uuid::Uuid;

use crate::domain::{NewOrderRequest, Order, OrderStatus};
use crate::error::ApiError;
use crate::AppState;

/// Default and largest page size for `GET /orders`.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;

/// `POST /orders`: 201 with the new pending order (or the one already stored under the
/// `Idempotency-Key`).
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewOrderRequest>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let new = body.validate().map_err(ApiError::Validation)?;
    let (order, _created) = state.store.create(new, idempotency_key(&headers)).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// `GET /orders/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Order>, ApiError> {
    state
        .store
        .get(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// Query of `GET /orders`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /orders?limit=&offset=`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let offset = q.offset.unwrap_or(0);
    if !(1..=MAX_LIMIT).contains(&limit) || offset < 0 {
        return Err(ApiError::Validation(format!(
            "limit must be 1..={MAX_LIMIT} and offset >= 0"
        )));
    }
    let page = state.store.list(limit, offset).await?;
    Ok(Json(serde_json::json!({
        "orders": page.items,
        "total": page.total,
        "limit": limit,
        "offset": offset,
    })))
}

/// Body of `PATCH /orders/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StatusUpdate {
    status: OrderStatus,
}

/// `PATCH /orders/{id}` {status}: 409 on an illegal transition.
pub(crate) async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<StatusUpdate>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(state.store.set_status(id, body.status).await?))
}
