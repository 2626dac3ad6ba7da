//! Shared plumbing for the domain services.
//!
//! Layout:
//! - [`config`]: settings from defaults layered under environment variables.
//! - [`telemetry`]: tracing subscriber set-up.
//! - [`run`]: the shared `main` of the service binaries (`--listen`, bind, serve until a signal).
//! - [`server`]: `serve(listener, router, shutdown)` and the process shutdown signal.
//! - [`http_error`]: the JSON error body and extractors that turn rejections into it.
//! - [`events`], [`bus`], [`rabbit`]: event types, the bus abstraction, the in-process and RabbitMQ buses.
//! - [`pg`], [`outbox`]: PostgreSQL pools per schema, the transactional outbox and its relay.
//! - [`store`]: the storage error the services' stores share.
//! - [`http_client`]: a small JSON client over hyper-util with timeouts.
//! - [`validation`]: business rules shared by services (the order fields).
//! - [`test_support`]: helpers the service test suites share (PostgreSQL schemas, AMQP URLs).

pub mod bus;
pub mod config;
pub mod events;
pub mod http_client;
pub mod http_error;
pub mod outbox;
pub mod pg;
pub mod rabbit;
pub mod run;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod test_support;
pub mod validation;

pub use bus::{EventBus, InProcessBus};
pub use events::Event;
pub use http_error::{ApiJson, ApiPath, ApiQuery, ErrorBody};
