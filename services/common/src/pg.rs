//! PostgreSQL pools scoped to one schema: each service (and each test) owns its schema.
//!
//! The schema is created if missing and set as `search_path` on every pooled connection, so the
//! services' SQL and migrations use unqualified table names.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool};
use thiserror::Error;

/// How long to wait for a pooled connection (and for the first connect) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a pool could not be set up.
#[derive(Debug, Error)]
pub enum PgError {
    /// The schema name is not a plain identifier (letters, digits, underscore).
    #[error("invalid schema name {0:?}")]
    InvalidSchema(String),
    /// The database refused or could not be reached.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

fn check_schema(schema: &str) -> Result<(), PgError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidSchema(schema.to_owned()))
    }
}

/// Opens a pool on `url` whose connections all use `schema` (created when missing).
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, PgError> {
    check_schema(schema)?;
    let base = PgConnectOptions::from_str(url)?;
    {
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, base.clone().connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        let created = conn
            .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
            .await;
        if let Err(e) = created {
            // Two processes creating the same schema at once race on the catalog; the loser's
            // unique violation means the schema exists, which is all we need.
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "23505" || c == "42P06");
            if !duplicate {
                return Err(e.into());
            }
        }
        conn.close().await?;
    }
    let options = base.options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Connects to `DATABASE_URL` when it is set (see [`connect`]); `None` means memory storage.
pub async fn connect_configured(
    settings: &crate::config::Settings,
    schema: &str,
    max_connections: u32,
) -> Result<Option<PgPool>, PgError> {
    match &settings.database_url {
        Some(url) => Ok(Some(connect(url, schema, max_connections).await?)),
        None => Ok(None),
    }
}

/// Drops a schema and everything in it (tests clean up their unique schemas with it).
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), PgError> {
    check_schema(schema)?;
    let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
    conn.execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
        .await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema("order_svc").is_ok());
        assert!(check_schema("t_0a1b").is_ok());
        assert!(check_schema("x\"; drop").is_err());
        assert!(check_schema("").is_err());
        assert!(check_schema("1abc").is_err());
    }
}
