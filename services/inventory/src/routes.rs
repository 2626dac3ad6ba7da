//! HTTP handlers: products (seed/read), reservations (create/read/release), health.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use services_common::http_error::idempotency_key;
use services_common::{ApiJson, ApiPath};
use uuid::Uuid;

use crate::domain::{NewReservation, Product, Reservation, SetStock, MAX_UNITS};
use crate::error::ApiError;
use crate::store::ReserveOutcome;
use crate::AppState;

/// `PUT /products/{id}` {stock}: sets the available stock (creating the product).
pub(crate) async fn put_product(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetStock>,
) -> Result<Json<Product>, ApiError> {
    if !(0..=MAX_UNITS).contains(&body.stock) {
        return Err(ApiError::Validation(format!(
            "stock must be between 0 and {MAX_UNITS}"
        )));
    }
    if id.trim().is_empty() {
        return Err(ApiError::Validation(
            "product id must not be empty".to_owned(),
        ));
    }
    Ok(Json(state.store.set_stock(&id, body.stock).await?))
}

/// `GET /products/{id}`.
pub(crate) async fn get_product(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Product>, ApiError> {
    state
        .store
        .product(&id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("product"))
}

/// `POST /reservations`: 201, or 409 when stock is short; `Idempotency-Key` replays.
pub(crate) async fn reserve(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewReservation>,
) -> Result<(StatusCode, Json<Reservation>), ApiError> {
    let req = body.validate().map_err(ApiError::Validation)?;
    let product_id = req.product_id.clone();
    let requested = req.quantity;
    match state.store.reserve(req, idempotency_key(&headers)).await? {
        ReserveOutcome::Reserved(r, _) => Ok((StatusCode::CREATED, Json(r))),
        ReserveOutcome::NoProduct => Err(ApiError::NotFound("product")),
        ReserveOutcome::Insufficient { available } => Err(ApiError::InsufficientStock {
            product_id,
            available,
            requested,
        }),
        ReserveOutcome::KeyConflict => Err(ApiError::IdempotencyConflict),
    }
}

/// `GET /reservations/{id}`.
pub(crate) async fn get_reservation(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Reservation>, ApiError> {
    state
        .store
        .reservation(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("reservation"))
}

/// `DELETE /reservations/{id}`: releases once; repeating answers the released reservation.
pub(crate) async fn release(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Reservation>, ApiError> {
    state
        .store
        .release(id)
        .await?
        .map(|(r, _)| Json(r))
        .ok_or(ApiError::NotFound("reservation"))
}
