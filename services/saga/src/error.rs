//! The orchestrator's errors and their HTTP form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use services_common::http_error::{error_response, logged_internal_error, validation_error};
use thiserror::Error;

/// Everything a request can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The body broke a business rule (422).
    #[error("{0}")]
    Validation(String),
    /// No such saga (404).
    #[error("saga not found")]
    NotFound,
    /// Storage failed (500; logged, hidden from clients).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The saga task died (500; logged).
    #[error("saga task failed: {0}")]
    Task(String),
}

/// Storage failures; the detail is for logs only.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A database error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored saga could not be decoded.
    #[error("corrupt saga state: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The database migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Why a call to a service failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StepError {
    /// The service answered with a definitive refusal (4xx): do not retry, compensate.
    #[error("{service} refused ({status} {kind}): {message}")]
    Rejected {
        /// Which service.
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// The error kind from its JSON body.
        kind: String,
        /// Its message.
        message: String,
    },
    /// No definitive answer (transport error, timeout, 5xx, 429): safe to retry with the same key.
    #[error("{service} unavailable: {detail}")]
    Unavailable {
        /// Which service.
        service: &'static str,
        /// What happened.
        detail: String,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Validation(m) => validation_error(m.clone()),
            Self::NotFound => error_response(StatusCode::NOT_FOUND, "not_found", self.to_string()),
            Self::Store(_) | Self::Task(_) => logged_internal_error(&self, "saga request failed"),
        }
    }
}
