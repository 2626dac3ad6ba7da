//! Pieces the services' storage layers share: the storage error.

use thiserror::Error;

/// Storage failures of a service backed by memory or PostgreSQL; the detail is for logs only.
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
