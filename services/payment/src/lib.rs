//! The payment service: a simulated card processor with idempotent charges and refunds.
//!
//! Layout: [`domain`] (payments, the decline rule), [`store`] (memory and PostgreSQL with an
//! outbox), [`routes`] (handlers), [`error`] (errors -> JSON). [`app`] builds the router;
//! [`build`] picks the backends from [`Settings`].

pub mod domain;
pub mod error;
mod routes;
pub mod store;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use services_common::bus::EventBus;
use services_common::config::{parse_var, ConfigError, Settings};
use services_common::http_error;
use services_common::outbox::Relay;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::domain::{DeclineRule, DEFAULT_DECLINE_ABOVE};
use crate::error::StoreError;
use crate::store::{MemoryPaymentStore, PaymentStore, PgPaymentStore};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Where payments live.
    pub store: Arc<dyn PaymentStore>,
    /// The simulated processor's decline rule.
    pub decline: Arc<DeclineRule>,
}

/// The service's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(http_error::health))
        .route("/payments", get(routes::list).post(routes::create))
        .route("/payments/{id}", get(routes::get))
        .route("/payments/{id}/refund", post(routes::refund))
        .fallback(http_error::not_found)
        .with_state(state)
}

/// Reads the decline rule: `PAYMENT_DECLINE_ABOVE` (default 10000) and the `decline-` prefix.
pub fn decline_rule_from_env() -> Result<DeclineRule, ConfigError> {
    let above = parse_var(
        "PAYMENT_DECLINE_ABOVE",
        std::env::var("PAYMENT_DECLINE_ABOVE").ok(),
    )?
    .unwrap_or(DEFAULT_DECLINE_ABOVE);
    Ok(DeclineRule {
        above,
        ..DeclineRule::default()
    })
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
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A ready service: its state and, on PostgreSQL, the outbox relay to spawn.
pub struct Service {
    /// The handlers' state.
    pub state: AppState,
    /// The outbox relay (PostgreSQL only).
    pub relay: Option<Relay>,
}

/// Builds the service on the configured backends (PostgreSQL schema `payment_svc` + outbox, or
/// memory); the decline rule comes from the environment.
pub async fn build(settings: &Settings, bus: Arc<dyn EventBus>) -> Result<Service, StartError> {
    let decline = decline_rule_from_env()?;
    let pool = services_common::pg::connect_configured(settings, store::SCHEMA, 10).await?;
    Ok(build_on(pool, bus, decline).await?)
}

/// Builds the service on `pool` (migrated, with an outbox relay) or, without one, in memory.
pub async fn build_on(
    pool: Option<PgPool>,
    bus: Arc<dyn EventBus>,
    decline: DeclineRule,
) -> Result<Service, StoreError> {
    let decline = Arc::new(decline);
    match pool {
        Some(pool) => {
            let wake = Arc::new(Notify::new());
            let store = PgPaymentStore::new(pool.clone(), wake.clone()).await?;
            Ok(Service {
                state: AppState {
                    store: Arc::new(store),
                    decline,
                },
                relay: Some(Relay::new(pool, bus, wake)),
            })
        }
        None => Ok(Service {
            state: AppState {
                store: Arc::new(MemoryPaymentStore::new(bus)),
                decline,
            },
            relay: None,
        }),
    }
}
