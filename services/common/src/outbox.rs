//! The transactional outbox: events are inserted in the same transaction as the state change, and
//! a relay publishes them afterwards, marking each sent only once the bus has accepted it.
//!
//! A broker outage therefore delays events but loses none: unsent rows stay in the table and the
//! relay retries with backoff. Delivery is at-least-once; consumers deduplicate on `event_id`.
//! Each service schema has its own `outbox` table (see [`OUTBOX_TABLE_SQL`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};
use thiserror::Error;
use tokio::sync::Notify;

use crate::bus::{BusError, EventBus};
use crate::events::Event;

/// DDL of the outbox table, embedded in each service's first migration.
pub const OUTBOX_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at TIMESTAMPTZ
)";

/// Rows published per relay round: bounds the transaction that holds their row locks.
const BATCH: i64 = 100;
/// Relay poll interval when nothing woke it: picks up rows written by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// First and longest wait after a failed publish (doubling in between).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long sent rows are kept (for audit and debugging) before the relay prunes them.
const RETENTION_SECS: i64 = 24 * 3600;
/// How often the relay prunes sent rows.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Why a relay round stopped early.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Reading or updating the outbox failed.
    #[error("outbox storage: {0}")]
    Db(#[from] sqlx::Error),
    /// The bus refused an event; it stays unsent.
    #[error("publish failed: {0}")]
    Bus(#[from] BusError),
    /// A stored payload is not an event (written by hand?).
    #[error("outbox row {seq} holds an invalid event: {source}")]
    Corrupt {
        /// The row's sequence number.
        seq: i64,
        /// The decode error.
        source: serde_json::Error,
    },
}

/// Inserts `event` into the outbox on `conn`: call it inside the state change's transaction.
pub async fn enqueue(conn: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (event_id, event_type, payload) VALUES ($1, $2, $3)")
        .bind(event.event_id)
        .bind(&event.event_type)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends a state change: enqueues `event` in `tx`, commits, then wakes the relay.
pub async fn commit_with_event(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    event: &Event,
    wake: &Notify,
) -> Result<(), sqlx::Error> {
    enqueue(&mut tx, event).await?;
    tx.commit().await?;
    wake.notify_one();
    Ok(())
}

/// Counts events not yet relayed (health checks and tests).
pub async fn unsent(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(pool)
        .await
}

/// Publishes a service's outbox rows to a bus, in order, forever.
pub struct Relay {
    pool: PgPool,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
}

impl Relay {
    /// A relay over `pool`'s outbox; `wake` is notified by the store after each commit.
    pub fn new(pool: PgPool, bus: Arc<dyn EventBus>, wake: Arc<Notify>) -> Self {
        Self { pool, bus, wake }
    }

    /// One round: publishes up to a batch of unsent rows; returns how many were sent.
    ///
    /// Rows are locked with `SKIP LOCKED`, so two relays on one schema do not send the same row.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT seq, payload FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut sent = 0;
        let mut failure = None;
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let payload: serde_json::Value = row.try_get("payload")?;
            let event: Event = match serde_json::from_value(payload) {
                Ok(e) => e,
                Err(source) => {
                    failure = Some(RelayError::Corrupt { seq, source });
                    break;
                }
            };
            if let Err(e) = self.bus.publish(&event).await {
                failure = Some(e.into());
                break;
            }
            sqlx::query("UPDATE outbox SET sent_at = now() WHERE seq = $1")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            sent += 1;
        }
        // Commit what was confirmed even when a later row failed.
        tx.commit().await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }

    /// Deletes rows sent longer than the retention ago; returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1::double precision)",
        )
        .bind(RETENTION_SECS as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Runs rounds until `shutdown` resolves: immediately while there is a backlog, on wake-up or
    /// poll otherwise, and with exponential backoff after failures.
    pub async fn run<F>(self, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_MIN;
        let mut last_prune = tokio::time::Instant::now();
        loop {
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning the outbox failed");
                }
            }
            let wait = match self.relay_once().await {
                Ok(n) if n as i64 >= BATCH => {
                    backoff = BACKOFF_MIN;
                    continue;
                }
                Ok(_) => {
                    backoff = BACKOFF_MIN;
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay round failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    Some(wait)
                }
            };
            match wait {
                None => {
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Some(d) => {
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }
}
