//! The order service's errors and their HTTP form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use services_common::http_error::{error_response, logged_internal_error, validation_error};
pub use services_common::store::StoreError;
use thiserror::Error;

use crate::domain::OrderStatus;

/// Everything a request can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The body broke a business rule (422).
    #[error("{0}")]
    Validation(String),
    /// No such order (404).
    #[error("order not found")]
    NotFound,
    /// The status change is not allowed (409).
    #[error("cannot change status from {from} to {to}")]
    InvalidTransition {
        /// The current status.
        from: &'static str,
        /// The requested status.
        to: &'static str,
    },
    /// Storage failed (500; logged, hidden from clients).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Why a status update was refused.
#[derive(Debug, Error)]
pub enum UpdateError {
    /// No such order.
    #[error("not found")]
    NotFound,
    /// Not a legal transition.
    #[error("invalid transition")]
    InvalidTransition(OrderStatus, OrderStatus),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::NotFound => Self::NotFound,
            UpdateError::InvalidTransition(from, to) => Self::InvalidTransition {
                from: from.as_str(),
                to: to.as_str(),
            },
            UpdateError::Store(s) => Self::Store(s),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Validation(m) => validation_error(m.clone()),
            Self::NotFound => error_response(StatusCode::NOT_FOUND, "not_found", self.to_string()),
            Self::InvalidTransition { .. } => {
                error_response(StatusCode::CONFLICT, "invalid_transition", self.to_string())
            }
            Self::Store(e) => logged_internal_error(e, "order storage failed"),
        }
    }
}
