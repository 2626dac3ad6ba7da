//! Notification service tests: consumption and dedup on memory and PG, and over RabbitMQ.

mod helpers;
mod notifications;
mod rabbitmq;
