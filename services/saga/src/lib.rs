//! The saga orchestrator: places an order across the order, inventory and payment services, and
//! compensates when a step fails; with PostgreSQL it finishes every saga a crash interrupted.
//!
//! Layout: [`domain`] (saga state machine), [`orchestrator`] (drive, compensate, resume),
//! [`services`] (HTTP calls with idempotency keys), [`store`] (memory / PostgreSQL + outbox),
//! [`routes`], [`error`]. [`app`] builds the router; [`build`] wires the backends.

pub mod domain;
pub mod error;
pub mod orchestrator;
mod routes;
pub mod services;
pub mod store;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use services_common::bus::EventBus;
use services_common::config::Settings;
use services_common::http_error;
use services_common::outbox::Relay;
use tokio::sync::Notify;

use crate::error::StoreError;
use crate::orchestrator::{Orchestrator, RetryPolicy};
use crate::services::{Endpoints, HttpServices};
use crate::store::{MemorySagaStore, PgSagaStore, SagaStore};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Runs sagas and reads them back.
    pub orchestrator: Orchestrator,
}

/// The orchestrator's router: its paths keep the `/saga` prefix (the gateway does not strip it).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(http_error::health))
        .route("/saga/execute", post(routes::execute))
        .route("/saga/{id}", get(routes::get))
        .fallback(http_error::not_found)
        .with_state(state)
}

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Connecting to PostgreSQL failed.
    #[error(transparent)]
    Pg(#[from] services_common::pg::PgError),
    /// Setting up the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A ready orchestrator: state, and on PostgreSQL the outbox relay to spawn.
pub struct Service {
    /// The handlers' state; call `state.orchestrator.resume_all()` once at start.
    pub state: AppState,
    /// The outbox relay (PostgreSQL only).
    pub relay: Option<Relay>,
}

/// Builds the orchestrator: PostgreSQL (schema `saga_svc`) + outbox or memory; services at
/// `endpoints`.
pub async fn build(
    settings: &Settings,
    bus: Arc<dyn EventBus>,
    endpoints: Endpoints,
) -> Result<Service, StartError> {
    let services = Arc::new(HttpServices::new(endpoints));
    let pool = services_common::pg::connect_configured(settings, store::SCHEMA, 10).await?;
    let (store, relay): (Arc<dyn SagaStore>, _) = match pool {
        Some(pool) => {
            let wake = Arc::new(Notify::new());
            let store = PgSagaStore::new(pool.clone(), wake.clone()).await?;
            (Arc::new(store), Some(Relay::new(pool, bus, wake)))
        }
        None => (Arc::new(MemorySagaStore::new(bus)), None),
    };
    Ok(Service {
        state: AppState {
            orchestrator: Orchestrator::new(store, services, RetryPolicy::default()),
        },
        relay,
    })
}
