//! HTTP handlers: charge, read, list by order, refund, health.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use services_common::http_error::idempotency_key;
use services_common::{ApiJson, ApiPath, ApiQuery};
use uuid::Uuid;

use crate::domain::{NewPaymentRequest, Payment, PaymentStatus};
use crate::error::ApiError;
use crate::store::RefundOutcome;
use crate::AppState;

/// `POST /payments`: 201 charged, 402 declined; the same `Idempotency-Key` replays the answer.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewPaymentRequest>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let req = body.validate().map_err(ApiError::Validation)?;
    let verdict = state.decline.decline_reason(&req);
    let status = match verdict {
        Some(_) => PaymentStatus::Declined,
        None => PaymentStatus::Completed,
    };
    let (payment, created) = state
        .store
        .create(Payment::new(&req, status), idempotency_key(&headers))
        .await?;
    if !created && !payment.same_request(&req) {
        return Err(ApiError::IdempotencyConflict);
    }
    if payment.status == PaymentStatus::Declined {
        let reason = match (created, verdict) {
            (true, Some(r)) => r,
            _ => "declined by the processor".to_owned(),
        };
        return Err(ApiError::Declined {
            payment_id: payment.id,
            reason,
        });
    }
    Ok((StatusCode::CREATED, Json(payment)))
}

/// `GET /payments/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Payment>, ApiError> {
    state
        .store
        .get(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// Query of `GET /payments`.
#[derive(Debug, Deserialize)]
pub(crate) struct ByOrder {
    order_id: Uuid,
}

/// `GET /payments?order_id=`: every attempt for an order.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ByOrder>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let payments = state.store.by_order(q.order_id).await?;
    Ok(Json(serde_json::json!({ "payments": payments })))
}

/// `POST /payments/{id}/refund`: idempotent; refunding twice refunds once.
pub(crate) async fn refund(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Payment>, ApiError> {
    match state.store.refund(id).await? {
        RefundOutcome::Refunded(p, _) => Ok(Json(p)),
        RefundOutcome::NotFound => Err(ApiError::NotFound),
        RefundOutcome::NotRefundable(s) => Err(ApiError::NotRefundable(s.as_str())),
    }
}
