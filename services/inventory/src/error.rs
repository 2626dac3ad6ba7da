//! The inventory service's errors and their HTTP form.

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
    /// No such product or reservation (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Not enough stock (409).
    #[error("insufficient stock for {product_id}: {available} available, {requested} requested")]
    InsufficientStock {
        /// The product.
        product_id: String,
        /// Units available.
        available: i64,
        /// Units asked for.
        requested: i64,
    },
    /// The Idempotency-Key was used before for a different reservation (422).
    #[error("Idempotency-Key was already used for a different reservation")]
    IdempotencyConflict,
    /// Storage failed (500; logged, hidden from clients).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Validation(m) => validation_error(m.clone()),
            Self::NotFound(_) => {
                error_response(StatusCode::NOT_FOUND, "not_found", self.to_string())
            }
            Self::InsufficientStock { .. } => {
                error_response(StatusCode::CONFLICT, "insufficient_stock", self.to_string())
            }
            Self::IdempotencyConflict => error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_conflict",
                self.to_string(),
            ),
            Self::Store(e) => logged_internal_error(e, "inventory storage failed"),
        }
    }
}
