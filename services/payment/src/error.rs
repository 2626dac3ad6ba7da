//! The payment service's errors and their HTTP form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use services_common::http_error::{error_response, logged_internal_error, validation_error};
pub use services_common::store::StoreError;
use thiserror::Error;

/// Everything a request can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The body broke a business rule (422).
    #[error("{0}")]
    Validation(String),
    /// No such payment (404).
    #[error("payment not found")]
    NotFound,
    /// The processor declined the charge (402); the attempt is stored as `declined`.
    #[error("payment {payment_id} declined: {reason}")]
    Declined {
        /// The stored declined attempt.
        payment_id: uuid::Uuid,
        /// Why.
        reason: String,
    },
    /// Only completed (or already refunded) payments can be refunded (409).
    #[error("a {0} payment cannot be refunded")]
    NotRefundable(&'static str),
    /// The Idempotency-Key was used before for a different charge (422).
    #[error("Idempotency-Key was already used for a different payment")]
    IdempotencyConflict,
    /// Storage failed (500; logged, hidden from clients).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Validation(m) => validation_error(m.clone()),
            Self::NotFound => error_response(StatusCode::NOT_FOUND, "not_found", self.to_string()),
            Self::Declined { .. } => error_response(
                StatusCode::PAYMENT_REQUIRED,
                "payment_declined",
                self.to_string(),
            ),
            Self::NotRefundable(_) => {
                error_response(StatusCode::CONFLICT, "not_refundable", self.to_string())
            }
            Self::IdempotencyConflict => error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_conflict",
                self.to_string(),
            ),
            Self::Store(e) => logged_internal_error(e, "payment storage failed"),
        }
    }
}
