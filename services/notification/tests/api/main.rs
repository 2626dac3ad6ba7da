//! Notification service tests: consumption and dedup on memory and PG, and over RabbitMQ.

// Tests may unwrap: a panic is the failure report (the workspace lint is for service code).
#![allow(clippy::unwrap_used)]

mod helpers;
mod notifications;
mod rabbitmq;
mod redelivery;
