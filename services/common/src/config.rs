//! Settings shared by every service: compiled-in defaults, overridden by environment variables.
//!
//! Parsing is kept apart from the process environment: [`Settings::from_lookup`] takes any
//! key -> value lookup, so tests pass a map and `main` passes `std::env::var`.

use thiserror::Error;

/// Why settings could not be built from the environment.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A variable was set but its value could not be parsed.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable name.
        name: String,
        /// The raw value.
        value: String,
        /// What was expected.
        reason: String,
    },
}

/// Backends chosen from the environment: PostgreSQL and RabbitMQ when set, embedded defaults otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `DATABASE_URL`: PostgreSQL connection string; `None` means in-memory storage.
    pub database_url: Option<String>,
    /// `AMQP_URL`: RabbitMQ connection string; `None` means the in-process bus.
    pub amqp_url: Option<String>,
    /// `EVENTS_EXCHANGE`: the topic exchange events go to (default `events`).
    pub exchange: String,
}

/// Name of the topic exchange when `EVENTS_EXCHANGE` is unset.
pub const DEFAULT_EXCHANGE: &str = "events";

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            database_url: non_empty(lookup("DATABASE_URL")),
            amqp_url: non_empty(lookup("AMQP_URL")),
            exchange: non_empty(lookup("EVENTS_EXCHANGE"))
                .unwrap_or_else(|| DEFAULT_EXCHANGE.to_owned()),
        }
    }
}

/// Treats an empty or blank variable as unset, as shells often export `VAR=`.
pub fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Parses an optional variable with `FromStr`, naming the variable in the error.
pub fn parse_var<T>(name: &str, value: Option<String>) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match non_empty(value) {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                name: name.to_owned(),
                value: raw.clone(),
                reason: e.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_defaults_and_blank_is_unset() {
        let env: HashMap<&str, &str> = [("DATABASE_URL", "postgres://x"), ("AMQP_URL", " ")]
            .into_iter()
            .collect();
        let s = Settings::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(s.database_url.as_deref(), Some("postgres://x"));
        assert_eq!(s.amqp_url, None);
        assert_eq!(s.exchange, "events");
    }

    #[test]
    fn parse_var_names_the_variable() {
        let err = parse_var::<u32>("LIMIT", Some("abc".into())).unwrap_err();
        assert!(err.to_string().contains("LIMIT"));
        assert_eq!(parse_var::<u32>("LIMIT", None).unwrap(), None);
        assert_eq!(
            parse_var::<u32>("LIMIT", Some("7".into())).unwrap(),
            Some(7)
        );
    }
}
