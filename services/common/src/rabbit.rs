//! The RabbitMQ bus: a durable topic exchange, publisher confirms, durable queues with manual acks.
//!
//! Publishing waits for the broker's confirm, so a caller (the outbox relay) marks an event sent only
//! once RabbitMQ has taken responsibility for it. The publisher connection is opened lazily and
//! reopened after a failure; the consumer side is reopened by its owner when a subscription ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage, ExchangeDeclareArguments, QueueBindArguments,
    QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Acker, BusError, Delivery, EventBus, Subscription};
use crate::events::Event;

/// How long a publish waits for the broker's confirm before giving up (the relay retries later).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a connection may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacked deliveries a consumer may hold: enough to keep a store busy, small enough to bound memory.
const PREFETCH: u16 = 64;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>>;

struct Publisher {
    _connection: Connection,
    channel: Channel,
    next_tag: u64,
    pending: Pending,
}

/// RabbitMQ-backed [`EventBus`] on one durable topic exchange.
pub struct RabbitBus {
    url: String,
    exchange: String,
    publisher: tokio::sync::Mutex<Option<Publisher>>,
}

impl RabbitBus {
    /// Connects once to check the URL and declares the exchange; later failures reconnect lazily.
    pub async fn connect(url: &str, exchange: &str) -> Result<Self, BusError> {
        let bus = Self {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            publisher: tokio::sync::Mutex::new(None),
        };
        let publisher = bus.open_publisher().await?;
        *bus.publisher.lock().await = Some(publisher);
        Ok(bus)
    }

    /// A bus that connects on first use (for a relay started while the broker is still down).
    pub fn lazy(url: &str, exchange: &str) -> Self {
        Self {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            publisher: tokio::sync::Mutex::new(None),
        }
    }

    async fn open_connection(&self) -> Result<(Connection, Channel), BusError> {
        let args = OpenConnectionArguments::try_from(self.url.as_str())
            .map_err(|e| BusError::Unavailable(format!("bad AMQP URL: {e}")))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(&args))
            .await
            .map_err(|_| BusError::Timeout)?
            .map_err(unavailable)?;
        let channel = connection.open_channel(None).await.map_err(unavailable)?;
        let mut declare = ExchangeDeclareArguments::new(&self.exchange, "topic");
        declare.durable = true;
        channel
            .exchange_declare(declare)
            .await
            .map_err(unavailable)?;
        Ok((connection, channel))
    }

    async fn open_publisher(&self) -> Result<Publisher, BusError> {
        let (connection, channel) = self.open_connection().await?;
        let pending: Pending = Arc::default();
        channel
            .register_callback(ConfirmCallback {
                pending: pending.clone(),
            })
            .await
            .map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(unavailable)?;
        Ok(Publisher {
            _connection: connection,
            channel,
            // Confirm mode numbers deliveries from 1 on each channel.
            next_tag: 1,
            pending,
        })
    }
}

fn unavailable(e: amqprs::error::Error) -> BusError {
    BusError::Unavailable(e.to_string())
}

#[async_trait]
impl EventBus for RabbitBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let body = serde_json::to_vec(event)?;
        let confirmed = {
            let mut guard = self.publisher.lock().await;
            let usable = guard.as_ref().is_some_and(|p| p.channel.is_open());
            if !usable {
                *guard = Some(self.open_publisher().await?);
            }
            let Some(publisher) = guard.as_mut() else {
                return Err(BusError::Unavailable("no publisher".into()));
            };
            let tag = publisher.next_tag;
            let (tx, rx) = oneshot::channel();
            lock(&publisher.pending).insert(tag, tx);
            let props = BasicProperties::default()
                .with_content_type("application/json")
                .with_persistence(true)
                .with_message_id(&event.event_id.to_string())
                .with_message_type(&event.event_type)
                .finish();
            let args = BasicPublishArguments::new(&self.exchange, &event.event_type);
            if let Err(e) = publisher.channel.basic_publish(props, body, args).await {
                lock(&publisher.pending).remove(&tag);
                *guard = None;
                return Err(unavailable(e));
            }
            publisher.next_tag += 1;
            rx
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirmed).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(BusError::Nacked),
            Ok(Err(_)) => {
                // The callback dropped our sender: the channel closed before confirming.
                *self.publisher.lock().await = None;
                Err(BusError::Unavailable("channel closed before confirm".into()))
            }
            Err(_) => {
                *self.publisher.lock().await = None;
                Err(BusError::Timeout)
            }
        }
    }

    async fn subscribe(
        &self,
        queue: &str,
        patterns: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let (connection, channel) = self.open_connection().await?;
        channel
            .queue_declare(QueueDeclareArguments::durable_client_named(queue))
            .await
            .map_err(unavailable)?;
        for pattern in patterns {
            channel
                .queue_bind(QueueBindArguments::new(queue, &self.exchange, pattern))
                .await
                .map_err(unavailable)?;
        }
        channel
            .basic_qos(BasicQosArguments::new(0, PREFETCH, false))
            .await
            .map_err(unavailable)?;
        let mut consume = BasicConsumeArguments::new(queue, "");
        consume.manual_ack(true);
        let (_tag, rx) = channel
            .basic_consume_rx(consume.finish())
            .await
            .map_err(unavailable)?;
        Ok(Box::new(RabbitSubscription {
            _connection: connection,
            channel,
            rx,
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

struct ConfirmCallback {
    pending: Pending,
}

impl ConfirmCallback {
    fn settle(&self, tag: u64, multiple: bool, ok: bool) {
        let mut pending = lock(&self.pending);
        let tags: Vec<u64> = if multiple {
            pending.keys().copied().filter(|t| *t <= tag).collect()
        } else {
            vec![tag]
        };
        for t in tags {
            if let Some(tx) = pending.remove(&t) {
                let _ = tx.send(ok);
            }
        }
    }
}

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        tracing::warn!(%close, "publisher channel closed by broker");
        // Dropping the senders fails every waiting publish; they are retried by their callers.
        lock(&self.pending).clear();
        Ok(())
    }
    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _channel: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), true);
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), false);
    }
    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _ret: Return,
        _props: BasicProperties,
        _content: Vec<u8>,
    ) {
    }
}

struct RabbitSubscription {
    _connection: Connection,
    channel: Channel,
    rx: mpsc::UnboundedReceiver<ConsumerMessage>,
}

struct RabbitAcker {
    channel: Channel,
    delivery_tag: u64,
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.channel
            .basic_ack(BasicAckArguments::new(self.delivery_tag, false))
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let msg = self.rx.recv().await?;
            let (Some(deliver), Some(content)) = (msg.deliver, msg.content) else {
                continue;
            };
            let delivery_tag = deliver.delivery_tag();
            match serde_json::from_slice::<Event>(&content) {
                Ok(event) => {
                    let acker = RabbitAcker {
                        channel: self.channel.clone(),
                        delivery_tag,
                    };
                    return Some(Ok(Delivery::new(event, Some(Box::new(acker)))));
                }
                Err(e) => {
                    // A message that is not an event can never be handled: ack it away, loudly.
                    tracing::error!(error = %e, "discarding a message that is not an event");
                    if let Err(e) = self
                        .channel
                        .basic_ack(BasicAckArguments::new(delivery_tag, false))
                        .await
                    {
                        return Some(Err(unavailable(e)));
                    }
                }
            }
        }
    }
}
