//! Payment storage: one trait, an in-memory implementation and a PostgreSQL one.
//!
//! Both honour the idempotency key atomically (a retried charge returns the stored payment) and
//! refund at most once; PostgreSQL writes events to the outbox in the same transaction.

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

use crate::domain::{Payment, PaymentStatus};
use crate::error::StoreError;

/// The outcome of a refund request.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundOutcome {
    /// Refunded now (`true`) or already earlier (`false`).
    Refunded(Payment, bool),
    /// No such payment.
    NotFound,
    /// A declined payment has nothing to refund.
    NotRefundable(PaymentStatus),
}

/// What the HTTP layer needs from storage.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Stores `payment`, unless `key` was seen: then returns the stored one and `false`.
    async fn create(
        &self,
        payment: Payment,
        key: Option<String>,
    ) -> Result<(Payment, bool), StoreError>;
    /// One payment by id.
    async fn get(&self, id: Uuid) -> Result<Option<Payment>, StoreError>;
    /// The payments of one order, oldest first.
    async fn by_order(&self, order_id: Uuid) -> Result<Vec<Payment>, StoreError>;
    /// Refunds a completed payment once.
    async fn refund(&self, id: Uuid) -> Result<RefundOutcome, StoreError>;
}

#[derive(Default)]
struct MemState {
    payments: HashMap<Uuid, Payment>,
    order: Vec<Uuid>,
    keys: HashMap<String, Uuid>,
}

/// In-memory payments: the embedded default.
pub struct MemoryPaymentStore {
    state: Mutex<MemState>,
    bus: Arc<dyn EventBus>,
}

impl MemoryPaymentStore {
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
impl PaymentStore for MemoryPaymentStore {
    async fn create(
        &self,
        payment: Payment,
        key: Option<String>,
    ) -> Result<(Payment, bool), StoreError> {
        {
            let mut st = self.lock();
            if let Some(existing) = key
                .as_ref()
                .and_then(|k| st.keys.get(k))
                .and_then(|id| st.payments.get(id))
            {
                return Ok((existing.clone(), false));
            }
            st.payments.insert(payment.id, payment.clone());
            st.order.push(payment.id);
            if let Some(k) = key {
                st.keys.insert(k, payment.id);
            }
        }
        publish_logged(self.bus.as_ref(), &payment.processed_event()).await;
        Ok((payment, true))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Payment>, StoreError> {
        Ok(self.lock().payments.get(&id).cloned())
    }

    async fn by_order(&self, order_id: Uuid) -> Result<Vec<Payment>, StoreError> {
        let st = self.lock();
        Ok(st
            .order
            .iter()
            .filter_map(|id| st.payments.get(id))
            .filter(|p| p.order_id == order_id)
            .cloned()
            .collect())
    }

    async fn refund(&self, id: Uuid) -> Result<RefundOutcome, StoreError> {
        let payment = {
            let mut st = self.lock();
            let Some(p) = st.payments.get_mut(&id) else {
                return Ok(RefundOutcome::NotFound);
            };
            match p.status {
                PaymentStatus::Refunded => return Ok(RefundOutcome::Refunded(p.clone(), false)),
                PaymentStatus::Declined => return Ok(RefundOutcome::NotRefundable(p.status)),
                PaymentStatus::Completed => {}
            }
            p.status = PaymentStatus::Refunded;
            p.updated_at = Utc::now().trunc_subsecs(6);
            p.clone()
        };
        publish_logged(self.bus.as_ref(), &payment.refunded_event()).await;
        Ok(RefundOutcome::Refunded(payment, true))
    }
}

/// The schema the payment service owns on PostgreSQL.
pub const SCHEMA: &str = "payment_svc";

/// PostgreSQL payments with a transactional outbox.
pub struct PgPaymentStore {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl PgPaymentStore {
    /// Runs the embedded migrations and returns the store; `wake` nudges the relay.
    pub async fn new(pool: PgPool, wake: Arc<Notify>) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, wake })
    }
}

const COLUMNS: &str = "id, order_id, amount, customer_id, status, created_at, updated_at";

fn from_row(row: &PgRow) -> Result<Payment, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Payment {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        amount: row.try_get("amount")?,
        customer_id: row.try_get("customer_id")?,
        status: PaymentStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl PaymentStore for PgPaymentStore {
    async fn create(
        &self,
        payment: Payment,
        key: Option<String>,
    ) -> Result<(Payment, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO payments ({COLUMNS}, idempotency_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(payment.id)
        .bind(payment.order_id)
        .bind(payment.amount)
        .bind(&payment.customer_id)
        .bind(payment.status.as_str())
        .bind(payment.created_at)
        .bind(payment.updated_at)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        let result = match inserted {
            Some(row) => {
                let stored = from_row(&row)?;
                outbox::enqueue(&mut tx, &stored.processed_event()).await?;
                (stored, true)
            }
            None => {
                let row = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM payments WHERE idempotency_key = $1"
                ))
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
                (from_row(&row)?, false)
            }
        };
        tx.commit().await?;
        if result.1 {
            self.wake.notify_one();
        }
        Ok(result)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Payment>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    async fn by_order(&self, order_id: Uuid) -> Result<Vec<Payment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_at, id"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    async fn refund(&self, id: Uuid) -> Result<RefundOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(RefundOutcome::NotFound);
        };
        let mut payment = from_row(&row)?;
        match payment.status {
            PaymentStatus::Refunded => return Ok(RefundOutcome::Refunded(payment, false)),
            PaymentStatus::Declined => return Ok(RefundOutcome::NotRefundable(payment.status)),
            PaymentStatus::Completed => {}
        }
        payment.status = PaymentStatus::Refunded;
        payment.updated_at = Utc::now().trunc_subsecs(6);
        sqlx::query("UPDATE payments SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(payment.status.as_str())
            .bind(payment.updated_at)
            .execute(&mut *tx)
            .await?;
        outbox::commit_with_event(tx, &payment.refunded_event(), &self.wake).await?;
        Ok(RefundOutcome::Refunded(payment, true))
    }
}
