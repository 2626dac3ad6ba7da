//! Inventory storage: one trait, an in-memory implementation and a PostgreSQL one.
//!
//! Neither oversells: memory reserves under one lock; PostgreSQL decrements with a guarded
//! `UPDATE ... WHERE stock >= $n`, which row-locks the product, so concurrent reservations
//! serialise per product. PostgreSQL writes events to the outbox in the same transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use services_common::bus::{publish_logged, EventBus};
use services_common::outbox;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{now, NewReservation, Product, Reservation, ReservationStatus};
use crate::error::StoreError;

/// The outcome of a reservation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Held now (`true`) or earlier under the same idempotency key (`false`).
    Reserved(Reservation, bool),
    /// The product does not exist.
    NoProduct,
    /// Not enough stock; nothing was held.
    Insufficient {
        /// Units available at the time.
        available: i64,
    },
    /// The idempotency key belongs to a different reservation.
    KeyConflict,
}

/// What the HTTP layer needs from storage.
#[async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// Sets a product's available stock, creating the product if needed.
    async fn set_stock(&self, product_id: &str, stock: i64) -> Result<Product, StoreError>;
    /// One product.
    async fn product(&self, product_id: &str) -> Result<Option<Product>, StoreError>;
    /// Holds units if there are enough; honours the idempotency key.
    async fn reserve(
        &self,
        req: NewReservation,
        key: Option<String>,
    ) -> Result<ReserveOutcome, StoreError>;
    /// One reservation.
    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, StoreError>;
    /// Releases a reservation once; `None` when unknown, `bool` = released now.
    async fn release(&self, id: Uuid) -> Result<Option<(Reservation, bool)>, StoreError>;
}

fn same_request(r: &Reservation, req: &NewReservation) -> bool {
    r.product_id == req.product_id && r.quantity == req.quantity
}

#[derive(Default)]
struct MemState {
    products: HashMap<String, Product>,
    reservations: HashMap<Uuid, Reservation>,
    keys: HashMap<String, Uuid>,
}

/// In-memory inventory: the embedded default.
pub struct MemoryInventoryStore {
    state: Mutex<MemState>,
    bus: Arc<dyn EventBus>,
}

impl MemoryInventoryStore {
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
impl InventoryStore for MemoryInventoryStore {
    async fn set_stock(&self, product_id: &str, stock: i64) -> Result<Product, StoreError> {
        let product = {
            let mut st = self.lock();
            let p = st
                .products
                .entry(product_id.to_owned())
                .or_insert_with(|| Product {
                    id: product_id.to_owned(),
                    stock: 0,
                    reserved: 0,
                    updated_at: now(),
                });
            p.stock = stock;
            p.updated_at = now();
            p.clone()
        };
        publish_logged(self.bus.as_ref(), &product.updated_event()).await;
        Ok(product)
    }

    async fn product(&self, product_id: &str) -> Result<Option<Product>, StoreError> {
        Ok(self.lock().products.get(product_id).cloned())
    }

    async fn reserve(
        &self,
        req: NewReservation,
        key: Option<String>,
    ) -> Result<ReserveOutcome, StoreError> {
        let reservation = {
            let mut st = self.lock();
            if let Some(existing) = key
                .as_ref()
                .and_then(|k| st.keys.get(k))
                .and_then(|id| st.reservations.get(id))
            {
                return Ok(if same_request(existing, &req) {
                    ReserveOutcome::Reserved(existing.clone(), false)
                } else {
                    ReserveOutcome::KeyConflict
                });
            }
            let Some(product) = st.products.get_mut(&req.product_id) else {
                return Ok(ReserveOutcome::NoProduct);
            };
            if product.stock < req.quantity {
                return Ok(ReserveOutcome::Insufficient {
                    available: product.stock,
                });
            }
            product.stock -= req.quantity;
            product.reserved += req.quantity;
            product.updated_at = now();
            let reservation = Reservation::new(&req);
            st.reservations.insert(reservation.id, reservation.clone());
            if let Some(k) = key {
                st.keys.insert(k, reservation.id);
            }
            reservation
        };
        publish_logged(self.bus.as_ref(), &reservation.event()).await;
        Ok(ReserveOutcome::Reserved(reservation, true))
    }

    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, StoreError> {
        Ok(self.lock().reservations.get(&id).cloned())
    }

    async fn release(&self, id: Uuid) -> Result<Option<(Reservation, bool)>, StoreError> {
        let released = {
            let mut st = self.lock();
            let Some(r) = st.reservations.get_mut(&id) else {
                return Ok(None);
            };
            if r.status == ReservationStatus::Released {
                return Ok(Some((r.clone(), false)));
            }
            r.status = ReservationStatus::Released;
            r.updated_at = now();
            let r = r.clone();
            if let Some(p) = st.products.get_mut(&r.product_id) {
                p.stock += r.quantity;
                p.reserved -= r.quantity;
                p.updated_at = now();
            }
            r
        };
        publish_logged(self.bus.as_ref(), &released.event()).await;
        Ok(Some((released, true)))
    }
}

/// The schema the inventory service owns on PostgreSQL.
pub const SCHEMA: &str = "inventory_svc";

/// PostgreSQL inventory with a transactional outbox.
pub struct PgInventoryStore {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl PgInventoryStore {
    /// Runs the embedded migrations and returns the store; `wake` nudges the relay.
    pub async fn new(pool: PgPool, wake: Arc<Notify>) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, wake })
    }

    async fn by_key(&self, key: &str) -> Result<Option<Reservation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {R_COLUMNS} FROM reservations WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(reservation_from_row).transpose()
    }
}

const R_COLUMNS: &str = "id, product_id, quantity, order_id, status, created_at, updated_at";

fn product_from_row(row: &PgRow) -> Result<Product, StoreError> {
    Ok(Product {
        id: row.try_get("id")?,
        stock: row.try_get("stock")?,
        reserved: row.try_get("reserved")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn reservation_from_row(row: &PgRow) -> Result<Reservation, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Reservation {
        id: row.try_get("id")?,
        product_id: row.try_get("product_id")?,
        quantity: row.try_get("quantity")?,
        order_id: row.try_get("order_id")?,
        status: ReservationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl InventoryStore for PgInventoryStore {
    async fn set_stock(&self, product_id: &str, stock: i64) -> Result<Product, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO products (id, stock, reserved, updated_at) VALUES ($1, $2, 0, $3)
             ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock, updated_at = EXCLUDED.updated_at
             RETURNING id, stock, reserved, updated_at",
        )
        .bind(product_id)
        .bind(stock)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        let product = product_from_row(&row)?;
        outbox::commit_with_event(tx, &product.updated_event(), &self.wake).await?;
        Ok(product)
    }

    async fn product(&self, product_id: &str) -> Result<Option<Product>, StoreError> {
        let row = sqlx::query("SELECT id, stock, reserved, updated_at FROM products WHERE id = $1")
            .bind(product_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(product_from_row).transpose()
    }

    async fn reserve(
        &self,
        req: NewReservation,
        key: Option<String>,
    ) -> Result<ReserveOutcome, StoreError> {
        // A replay answers from the stored reservation, even if stock has run out since.
        if let Some(k) = &key {
            if let Some(existing) = self.by_key(k).await? {
                return Ok(if same_request(&existing, &req) {
                    ReserveOutcome::Reserved(existing, false)
                } else {
                    ReserveOutcome::KeyConflict
                });
            }
        }
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query(
            "UPDATE products SET stock = stock - $2, reserved = reserved + $2, updated_at = $3
             WHERE id = $1 AND stock >= $2 RETURNING stock",
        )
        .bind(&req.product_id)
        .bind(req.quantity)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            let available: Option<i64> =
                sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
                    .bind(&req.product_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match available {
                None => ReserveOutcome::NoProduct,
                Some(available) => ReserveOutcome::Insufficient { available },
            });
        }
        let reservation = Reservation::new(&req);
        let inserted = sqlx::query(&format!(
            "INSERT INTO reservations ({R_COLUMNS}, idempotency_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        ))
        .bind(reservation.id)
        .bind(&reservation.product_id)
        .bind(reservation.quantity)
        .bind(reservation.order_id)
        .bind(reservation.status.as_str())
        .bind(reservation.created_at)
        .bind(reservation.updated_at)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            // A concurrent request with the same key won: undo our hold, answer with theirs.
            tx.rollback().await?;
            let existing = match &key {
                Some(k) => self.by_key(k).await?,
                None => None,
            };
            return Ok(match existing {
                Some(r) if same_request(&r, &req) => ReserveOutcome::Reserved(r, false),
                _ => ReserveOutcome::KeyConflict,
            });
        }
        outbox::commit_with_event(tx, &reservation.event(), &self.wake).await?;
        Ok(ReserveOutcome::Reserved(reservation, true))
    }

    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {R_COLUMNS} FROM reservations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(reservation_from_row).transpose()
    }

    async fn release(&self, id: Uuid) -> Result<Option<(Reservation, bool)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {R_COLUMNS} FROM reservations WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let mut r = reservation_from_row(&row)?;
        if r.status == ReservationStatus::Released {
            return Ok(Some((r, false)));
        }
        r.status = ReservationStatus::Released;
        r.updated_at = now();
        sqlx::query("UPDATE reservations SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(r.status.as_str())
            .bind(r.updated_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE products SET stock = stock + $2, reserved = reserved - $2, updated_at = $3 WHERE id = $1",
        )
        .bind(&r.product_id)
        .bind(r.quantity)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await?;
        outbox::commit_with_event(tx, &r.event(), &self.wake).await?;
        Ok(Some((r, true)))
    }
}
