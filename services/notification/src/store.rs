//! Notification storage: record each event once (dedup by event id), list by order.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::Notification;
use crate::error::StoreError;

/// What the consumer and the HTTP layer need from storage.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Stores `n` unless its event was recorded before; returns whether it was new.
    async fn record(&self, n: Notification) -> Result<bool, StoreError>;
    /// Notifications, oldest first, optionally for one order only.
    async fn list(
        &self,
        order_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError>;
}

#[derive(Default)]
struct MemState {
    seen: HashSet<Uuid>,
    items: Vec<Notification>,
}

/// In-memory notifications: the embedded default.
#[derive(Default)]
pub struct MemoryNotificationStore {
    state: Mutex<MemState>,
}

impl MemoryNotificationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        services_common::store::lock(&self.state)
    }
}

#[async_trait]
impl NotificationStore for MemoryNotificationStore {
    async fn record(&self, n: Notification) -> Result<bool, StoreError> {
        let mut st = self.lock();
        if !st.seen.insert(n.event_id) {
            return Ok(false);
        }
        st.items.push(n);
        Ok(true)
    }

    async fn list(
        &self,
        order_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        let st = self.lock();
        Ok(st
            .items
            .iter()
            .filter(|n| order_id.is_none() || n.order_id.as_deref() == order_id)
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect())
    }
}

/// The schema the notification service owns on PostgreSQL.
pub const SCHEMA: &str = "notification_svc";

/// PostgreSQL notifications; a unique constraint on `event_id` deduplicates.
pub struct PgNotificationStore {
    pool: PgPool,
}

impl PgNotificationStore {
    /// Runs the embedded migrations and returns the store.
    pub async fn new(pool: PgPool) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn from_row(row: &PgRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        order_id: row.try_get("order_id")?,
        message: row.try_get("message")?,
        event: row.try_get("event")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl NotificationStore for PgNotificationStore {
    async fn record(&self, n: Notification) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO notifications (id, event_id, event_type, order_id, message, event, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(n.id)
        .bind(n.event_id)
        .bind(&n.event_type)
        .bind(&n.order_id)
        .bind(&n.message)
        .bind(&n.event)
        .bind(n.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list(
        &self,
        order_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, event_type, order_id, message, event, created_at FROM notifications
             WHERE ($1::text IS NULL OR order_id = $1) ORDER BY seq LIMIT $2",
        )
        .bind(order_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}
