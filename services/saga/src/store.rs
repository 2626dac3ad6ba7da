//! Saga storage: the whole saga as one document, saved after every step.
//!
//! PostgreSQL writes `saga.*` events to the outbox in the same transaction as the state; memory
//! publishes them straight to the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use services_common::bus::{publish_logged, EventBus};
use services_common::{outbox, Event};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::Saga;
use crate::error::StoreError;

/// What the orchestrator needs from storage.
#[async_trait]
pub trait SagaStore: Send + Sync + 'static {
    /// Stores a new saga, unless `key` names an existing one: then returns that one and `false`.
    async fn create(&self, saga: &Saga, key: Option<&str>) -> Result<(Saga, bool), StoreError>;
    /// Inserts or overwrites the saga, and records `events` with it.
    async fn save(&self, saga: &Saga, events: &[Event]) -> Result<(), StoreError>;
    /// One saga.
    async fn get(&self, id: Uuid) -> Result<Option<Saga>, StoreError>;
    /// Every saga still running or compensating, oldest first: what a restart must finish.
    async fn in_flight(&self) -> Result<Vec<Saga>, StoreError>;
}

/// In-memory sagas: the embedded default (progress survives only as long as the process).
pub struct MemorySagaStore {
    sagas: Mutex<HashMap<Uuid, Saga>>,
    keys: Mutex<HashMap<String, Uuid>>,
    bus: Arc<dyn EventBus>,
}

impl MemorySagaStore {
    /// An empty store publishing to `bus`.
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            sagas: Mutex::default(),
            keys: Mutex::default(),
            bus,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Saga>> {
        services_common::store::lock(&self.sagas)
    }
}

#[async_trait]
impl SagaStore for MemorySagaStore {
    async fn create(&self, saga: &Saga, key: Option<&str>) -> Result<(Saga, bool), StoreError> {
        if let Some(k) = key {
            let mut keys = services_common::store::lock(&self.keys);
            if let Some(existing) = keys.get(k).and_then(|id| self.lock().get(id).cloned()) {
                return Ok((existing, false));
            }
            keys.insert(k.to_owned(), saga.saga_id);
            // Stored while the key lock is held, so a concurrent duplicate finds it.
            self.lock().insert(saga.saga_id, saga.clone());
            return Ok((saga.clone(), true));
        }
        self.lock().insert(saga.saga_id, saga.clone());
        Ok((saga.clone(), true))
    }

    async fn save(&self, saga: &Saga, events: &[Event]) -> Result<(), StoreError> {
        self.lock().insert(saga.saga_id, saga.clone());
        for e in events {
            publish_logged(self.bus.as_ref(), e).await;
        }
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Saga>, StoreError> {
        Ok(self.lock().get(&id).cloned())
    }

    async fn in_flight(&self) -> Result<Vec<Saga>, StoreError> {
        let mut v: Vec<Saga> = self
            .lock()
            .values()
            .filter(|s| s.status.in_flight())
            .cloned()
            .collect();
        v.sort_by_key(|s| s.created_at);
        Ok(v)
    }
}

/// The schema the orchestrator owns on PostgreSQL.
pub const SCHEMA: &str = "saga_svc";

/// PostgreSQL sagas with a transactional outbox.
pub struct PgSagaStore {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl PgSagaStore {
    /// Runs the embedded migrations and returns the store; `wake` nudges the relay.
    pub async fn new(pool: PgPool, wake: Arc<Notify>) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, wake })
    }
}

#[async_trait]
impl SagaStore for PgSagaStore {
    async fn create(&self, saga: &Saga, key: Option<&str>) -> Result<(Saga, bool), StoreError> {
        let state = serde_json::to_value(saga)?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sagas (id, status, state, created_at, updated_at, idempotency_key)
             VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(saga.saga_id)
        .bind(saga.status.as_str())
        .bind(state)
        .bind(saga.created_at)
        .bind(saga.updated_at)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
            return Ok((saga.clone(), true));
        }
        let existing: serde_json::Value =
            sqlx::query_scalar("SELECT state FROM sagas WHERE idempotency_key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((serde_json::from_value(existing)?, false))
    }

    async fn save(&self, saga: &Saga, events: &[Event]) -> Result<(), StoreError> {
        let state = serde_json::to_value(saga)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sagas (id, status, state, created_at, updated_at) VALUES ($1,$2,$3,$4,$5)
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, state = EXCLUDED.state,
             updated_at = EXCLUDED.updated_at",
        )
        .bind(saga.saga_id)
        .bind(saga.status.as_str())
        .bind(state)
        .bind(saga.created_at)
        .bind(saga.updated_at)
        .execute(&mut *tx)
        .await?;
        for e in events {
            outbox::enqueue(&mut tx, e).await?;
        }
        tx.commit().await?;
        if !events.is_empty() {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Saga>, StoreError> {
        let state: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT state FROM sagas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(state.map(serde_json::from_value).transpose()?)
    }

    async fn in_flight(&self) -> Result<Vec<Saga>, StoreError> {
        let states: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT state FROM sagas WHERE status IN ('running', 'compensating') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(states
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?)
    }
}
