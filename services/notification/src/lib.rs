//! The notification service: consumes every event once and records a notification for it.
//!
//! Layout: [`domain`] (notifications), [`store`] (memory set / PostgreSQL unique constraint),
//! [`consumer`] (subscribe, record, ack), [`routes`], [`error`]. [`app`] builds the router;
//! [`build`] picks the backends from [`Settings`].

pub mod consumer;
pub mod domain;
pub mod error;
mod routes;
pub mod store;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use services_common::bus::EventBus;
use services_common::config::{non_empty, Settings};
use services_common::http_error;
use sqlx::PgPool;

use crate::consumer::{Consumer, DEFAULT_QUEUE};
use crate::error::StoreError;
use crate::store::{MemoryNotificationStore, NotificationStore, PgNotificationStore};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Where notifications live.
    pub store: Arc<dyn NotificationStore>,
}

/// The service's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(http_error::health))
        .route("/notifications", get(routes::list))
        .fallback(http_error::not_found)
        .with_state(state)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Connecting to PostgreSQL failed.
    #[error(transparent)]
    Pg(#[from] services_common::pg::PgError),
    /// Setting up the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A ready service: its state and the consumer to spawn.
pub struct Service {
    /// The handlers' state.
    pub state: AppState,
    /// The event consumer (already subscribed when the bus allowed it).
    pub consumer: Consumer,
}

/// Builds the service: PostgreSQL (schema `notification_svc`) or memory, consuming from `bus` on
/// the durable queue `NOTIFICATION_QUEUE` (default `notification-service`).
pub async fn build(settings: &Settings, bus: Arc<dyn EventBus>) -> Result<Service, StartError> {
    let pool = services_common::pg::connect_configured(settings, store::SCHEMA, 10).await?;
    let queue = non_empty(std::env::var("NOTIFICATION_QUEUE").ok())
        .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    Ok(build_on(pool, bus, &queue).await?)
}

/// Builds the service on `pool` (migrated) or, without one, in memory, consuming from `bus` on
/// the durable queue `queue`.
pub async fn build_on(
    pool: Option<PgPool>,
    bus: Arc<dyn EventBus>,
    queue: &str,
) -> Result<Service, StoreError> {
    let store: Arc<dyn NotificationStore> = match pool {
        Some(pool) => Arc::new(PgNotificationStore::new(pool).await?),
        None => Arc::new(MemoryNotificationStore::new()),
    };
    let consumer = Consumer::start(bus, queue, store.clone()).await;
    Ok(Service {
        state: AppState { store },
        consumer,
    })
}
