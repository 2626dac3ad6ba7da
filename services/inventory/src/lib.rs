//! The inventory service: product stock and reservations that never oversell.
//!
//! Layout: [`domain`] (products, reservations), [`store`] (memory and PostgreSQL with an outbox),
//! [`routes`] (handlers), [`error`] (errors -> JSON). [`app`] builds the router; [`build`] picks
//! the backends from [`Settings`].

pub mod domain;
pub mod error;
mod routes;
pub mod store;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use services_common::bus::EventBus;
use services_common::config::Settings;
use services_common::http_error;
use services_common::outbox::Relay;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::error::StoreError;
use crate::store::{InventoryStore, MemoryInventoryStore, PgInventoryStore};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Where stock and reservations live.
    pub store: Arc<dyn InventoryStore>,
}

/// The service's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(http_error::health))
        .route(
            "/products/{id}",
            get(routes::get_product).put(routes::put_product),
        )
        .route("/reservations", post(routes::reserve))
        .route(
            "/reservations/{id}",
            get(routes::get_reservation).delete(routes::release),
        )
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

/// A ready service: its state and, on PostgreSQL, the outbox relay to spawn.
pub struct Service {
    /// The handlers' state.
    pub state: AppState,
    /// The outbox relay (PostgreSQL only).
    pub relay: Option<Relay>,
}

/// Builds the service on the configured backends (PostgreSQL schema `inventory_svc` + outbox, or
/// memory); events go to `bus`.
pub async fn build(settings: &Settings, bus: Arc<dyn EventBus>) -> Result<Service, StartError> {
    // Reservations are short transactions; 20 connections absorb bursts of them.
    let pool = services_common::pg::connect_configured(settings, store::SCHEMA, 20).await?;
    Ok(build_on(pool, bus).await?)
}

/// Builds the service on `pool` (migrated, with an outbox relay) or, without one, in memory.
pub async fn build_on(pool: Option<PgPool>, bus: Arc<dyn EventBus>) -> Result<Service, StoreError> {
    match pool {
        Some(pool) => {
            let wake = Arc::new(Notify::new());
            let store = PgInventoryStore::new(pool.clone(), wake.clone()).await?;
            Ok(Service {
                state: AppState {
                    store: Arc::new(store),
                },
                relay: Some(Relay::new(pool, bus, wake)),
            })
        }
        None => Ok(Service {
            state: AppState {
                store: Arc::new(MemoryInventoryStore::new(bus)),
            },
            relay: None,
        }),
    }
}
