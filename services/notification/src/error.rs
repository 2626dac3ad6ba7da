//! The notification service's errors and their HTTP form.

use axum::response::{IntoResponse, Response};
use services_common::http_error::{logged_internal_error, validation_error};
use thiserror::Error;

/// Everything a request can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// A query parameter broke a rule (422).
    #[error("{0}")]
    Validation(String),
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
    /// The database migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Validation(m) => validation_error(m.clone()),
            Self::Store(e) => logged_internal_error(e, "notification storage failed"),
        }
    }
}
