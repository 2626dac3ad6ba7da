//! Pieces the services' storage layers share: the storage error and a poison-tolerant lock.

use std::sync::{Mutex, MutexGuard};

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

/// Locks an in-memory store's state, recovering it if a holder panicked (the data stays usable).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
