//! The event bus abstraction: publish an event, subscribe with topic patterns, ack deliveries.
//!
//! Two implementations: [`InProcessBus`] (the embedded default: one per process, shared by every
//! service so the notification service sees all events) and [`crate::rabbit::RabbitBus`].
//! `publish` returns only once the event is safely handed over (for RabbitMQ: confirmed by the broker).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::events::{topic_matches, Event};

/// Why publishing, subscribing or acknowledging failed.
#[derive(Debug, Error)]
pub enum BusError {
    /// The broker could not be reached or the connection dropped.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (publisher confirm nack).
    #[error("broker rejected the message")]
    Nacked,
    /// Timed out waiting for the broker.
    #[error("timed out waiting for the broker")]
    Timeout,
    /// The event could not be encoded or decoded.
    #[error("event encoding: {0}")]
    Codec(#[from] serde_json::Error),
}

/// Acknowledges one delivery to its source (a broker ack, or nothing for the in-process bus).
#[async_trait]
pub trait Acker: Send {
    /// Marks the delivery as handled so it is not redelivered.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
}

/// One received event plus the means to acknowledge it after it has been handled.
pub struct Delivery {
    /// The received event.
    pub event: Event,
    acker: Option<Box<dyn Acker>>,
}

impl Delivery {
    /// A delivery with an acknowledgement handle (used by broker-backed buses).
    pub fn new(event: Event, acker: Option<Box<dyn Acker>>) -> Self {
        Self { event, acker }
    }

    /// Acknowledges the delivery; call it only once the event's effects are stored.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }
}

/// A stream of deliveries for one subscriber.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` when the bus is gone.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
}

/// Where services publish events and consumers subscribe to them.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes one event under its type as routing key; returns once the bus has accepted it.
    async fn publish(&self, event: &Event) -> Result<(), BusError>;

    /// Subscribes a named consumer (a durable queue for RabbitMQ) to the given topic patterns.
    async fn subscribe(
        &self,
        queue: &str,
        patterns: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError>;
}

struct Subscriber {
    patterns: Vec<String>,
    tx: mpsc::UnboundedSender<Event>,
}

/// The embedded bus: fan-out to in-process subscribers over unbounded channels (no loss, no lag).
#[derive(Clone, Default)]
pub struct InProcessBus {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

impl InProcessBus {
    /// A bus with no subscribers yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let mut subs = match self.subscribers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Drop subscribers whose receiving end is gone.
        subs.retain(|s| {
            if s.patterns
                .iter()
                .any(|p| topic_matches(p, &event.event_type))
            {
                s.tx.send(event.clone()).is_ok()
            } else {
                !s.tx.is_closed()
            }
        });
        Ok(())
    }

    async fn subscribe(
        &self,
        _queue: &str,
        patterns: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = match self.subscribers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        subs.push(Subscriber {
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            tx,
        });
        Ok(Box::new(InProcessSubscription { rx }))
    }
}

struct InProcessSubscription {
    rx: mpsc::UnboundedReceiver<Event>,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        self.rx.recv().await.map(|e| Ok(Delivery::new(e, None)))
    }
}

/// Publishes and logs a failure instead of returning it: for stores without an outbox (memory),
/// where the state change has already happened and the event is best effort.
pub async fn publish_logged(bus: &dyn EventBus, event: &Event) {
    if let Err(e) = bus.publish(event).await {
        tracing::warn!(error = %e, event_type = %event.event_type, event_id = %event.event_id, "event not published");
    }
}

/// The bus the settings ask for: RabbitMQ when `AMQP_URL` is set (connected lazily, so a service
/// starts while the broker is down and its outbox catches up), else a fresh in-process bus.
pub fn from_settings(settings: &crate::config::Settings) -> Arc<dyn EventBus> {
    match &settings.amqp_url {
        Some(url) => Arc::new(crate::rabbit::RabbitBus::lazy(url, &settings.exchange)),
        None => Arc::new(InProcessBus::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_bus_routes_by_pattern() {
        let bus = InProcessBus::new();
        let mut orders = bus.subscribe("q", &["order.*"]).await.unwrap();
        let mut all = bus.subscribe("q2", &["#"]).await.unwrap();
        bus.publish(&Event::new("payment.processed", serde_json::json!({})))
            .await
            .unwrap();
        bus.publish(&Event::new("order.created", serde_json::json!({})))
            .await
            .unwrap();
        let d = orders.next().await.unwrap().unwrap();
        assert_eq!(d.event.event_type, "order.created");
        d.ack().await.unwrap();
        assert_eq!(
            all.next().await.unwrap().unwrap().event.event_type,
            "payment.processed"
        );
        assert_eq!(
            all.next().await.unwrap().unwrap().event.event_type,
            "order.created"
        );
    }
}
