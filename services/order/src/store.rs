//! Order storage: one trait, an in-memory implementation and a PostgreSQL one.
//!
//! Both publish the same events: memory publishes straight to the bus after the change (best
//! effort); PostgreSQL writes them to the outbox in the change's transaction (never lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use services_common::bus::{publish_logged, EventBus};
use services_common::outbox;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{NewOrder, Order, OrderStatus};
use crate::error::{StoreError, UpdateError};

/// One page of orders, newest first, and the total count.
#[derive(Debug, Clone)]
pub struct Page {
    /// The orders on this page.
    pub items: Vec<Order>,
    /// All orders stored.
    pub total: i64,
}

/// What the HTTP layer needs from storage.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores a new pending order; with a key seen before, returns that order and `false`.
    async fn create(&self, new: NewOrder, key: Option<String>)
        -> Result<(Order, bool), StoreError>;
    /// One order by id.
    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    /// A page of orders, newest first.
    async fn list(&self, limit: i64, offset: i64) -> Result<Page, StoreError>;
    /// Moves an order to `status` if the transition is legal (same status: no-op, no event).
    async fn set_status(&self, id: Uuid, status: OrderStatus) -> Result<Order, UpdateError>;
}

#[derive(Default)]
struct MemState {
    orders: HashMap<Uuid, Order>,
    /// Insertion order, for stable pagination.
    sequence: Vec<Uuid>,
    keys: HashMap<String, Uuid>,
}

/// In-memory orders: the embedded default.
pub struct MemoryOrderStore {
    state: Mutex<MemState>,
    bus: Arc<dyn EventBus>,
}

impl MemoryOrderStore {
    /// An empty store publishing to `bus`.
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            state: Mutex::default(),
            bus,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        services_common::store::lock(&self.state)
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn create(
        &self,
        new: NewOrder,
        key: Option<String>,
    ) -> Result<(Order, bool), StoreError> {
        let order = {
            let mut st = self.lock();
            if let Some(existing) = key
                .as_ref()
                .and_then(|k| st.keys.get(k))
                .and_then(|id| st.orders.get(id))
            {
                return Ok((existing.clone(), false));
            }
            let order = Order::new(new);
            st.orders.insert(order.id, order.clone());
            st.sequence.push(order.id);
            if let Some(k) = key {
                st.keys.insert(k, order.id);
            }
            order
        };
        publish_logged(self.bus.as_ref(), &order.created_event()).await;
        Ok((order, true))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        Ok(self.lock().orders.get(&id).cloned())
    }

    async fn list(&self, limit: i64, offset: i64) -> Result<Page, StoreError> {
        let st = self.lock();
        let items = st
            .sequence
            .iter()
            .rev()
            .skip(usize::try_from(offset).unwrap_or(0))
            .take(usize::try_from(limit).unwrap_or(0))
            .filter_map(|id| st.orders.get(id).cloned())
            .collect();
        Ok(Page {
            items,
            total: i64::try_from(st.sequence.len()).unwrap_or(i64::MAX),
        })
    }

    async fn set_status(&self, id: Uuid, status: OrderStatus) -> Result<Order, UpdateError> {
        let (order, previous) = {
            let mut st = self.lock();
            let order = st.orders.get_mut(&id).ok_or(UpdateError::NotFound)?;
            let previous = order.status;
            if !previous.can_become(status) {
                return Err(UpdateError::InvalidTransition(previous, status));
            }
            if previous == status {
                return Ok(order.clone());
            }
            order.status = status;
            order.updated_at = Utc::now().trunc_subsecs(6);
            (order.clone(), previous)
        };
        publish_logged(self.bus.as_ref(), &order.updated_event(previous)).await;
        Ok(order)
    }
}

/// PostgreSQL orders with a transactional outbox.
pub struct PgOrderStore {
    pool: PgPool,
    wake: Arc<Notify>,
}

/// The schema the order service owns when it runs on PostgreSQL.
pub const SCHEMA: &str = "order_svc";

impl PgOrderStore {
    /// Runs the embedded migrations on `pool` and returns the store; `wake` nudges the relay.
    pub async fn new(pool: PgPool, wake: Arc<Notify>) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, wake })
    }
}

const COLUMNS: &str =
    "id, customer_id, product_id, quantity, total_amount, status, created_at, updated_at";

fn order_from_row(row: &PgRow) -> Result<Order, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Order {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        product_id: row.try_get("product_id")?,
        quantity: row.try_get("quantity")?,
        total_amount: row.try_get("total_amount")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl OrderStore for PgOrderStore {
    async fn create(
        &self,
        new: NewOrder,
        key: Option<String>,
    ) -> Result<(Order, bool), StoreError> {
        let order = Order::new(new);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO orders ({COLUMNS}, idempotency_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(order.id)
        .bind(&order.customer_id)
        .bind(&order.product_id)
        .bind(order.quantity)
        .bind(order.total_amount)
        .bind(order.status.as_str())
        .bind(order.created_at)
        .bind(order.updated_at)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        match inserted {
            Some(row) => {
                let stored = order_from_row(&row)?;
                outbox::commit_with_event(tx, &stored.created_event(), &self.wake).await?;
                Ok((stored, true))
            }
            None => {
                // Only a key conflict skips the insert: return the order stored under that key.
                let row = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE idempotency_key = $1"
                ))
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok((order_from_row(&row)?, false))
            }
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    async fn list(&self, limit: i64, offset: i64) -> Result<Page, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM orders ORDER BY seq DESC LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.pool)
            .await?;
        Ok(Page {
            items: rows.iter().map(order_from_row).collect::<Result<_, _>>()?,
            total,
        })
    }

    async fn set_status(&self, id: Uuid, status: OrderStatus) -> Result<Order, UpdateError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .ok_or(UpdateError::NotFound)?;
        let mut order = order_from_row(&row)?;
        let previous = order.status;
        if !previous.can_become(status) {
            return Err(UpdateError::InvalidTransition(previous, status));
        }
        if previous == status {
            return Ok(order);
        }
        order.status = status;
        order.updated_at = Utc::now().trunc_subsecs(6);
        sqlx::query("UPDATE orders SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .bind(order.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        outbox::commit_with_event(tx, &order.updated_event(previous), &self.wake)
            .await
            .map_err(StoreError::from)?;
        Ok(order)
    }
}
