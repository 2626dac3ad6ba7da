//! The order service's errors and their HTTP form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use services_common::http_error::{error_response, internal_error};
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

/// Storage failures; the detail is for logs only.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A database error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored row could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
            Self::Validation(m) => error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                m.clone(),
            ),
            Self::NotFound => error_response(StatusCode::NOT_FOUND, "not_found", self.to_string()),
            Self::InvalidTransition { .. } => {
                error_response(StatusCode::CONFLICT, "invalid_transition", self.to_string())
            }
            Self::Store(e) => {
                tracing::error!(error = %e, "order storage failed");
                internal_error()
            }
        }
    }
}
