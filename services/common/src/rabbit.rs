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
    ConfirmSelectArguments, ConsumerMessage, ExchangeDeclareArguments, ExchangeDeleteArguments,
    QueueBindArguments, QueueDeclareArguments, QueueDeleteArguments,
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

    /// Deletes `queues` and this bus's exchange: tests clean up their unique names with it.
    pub async fn delete_topology(&self, queues: &[&str]) -> Result<(), BusError> {
        let (connection, channel) = self.open_connection().await?;
        for queue in queues {
            channel
                .queue_delete(QueueDeleteArguments::new(queue))
                .await
                .map_err(unavailable)?;
        }
        channel
            .exchange_delete(ExchangeDeleteArguments::new(&self.exchange))
            .await
            .map_err(unavailable)?;
        let _ = channel.close().await;
        let _ = connection.close().await;
        Ok(())
    }

    async fn open_connection(&self) -> Result<(Connection, Channel), BusError> {
        let args = parse_url(&self.url)?;
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

/// Parses `amqp://user:pass@host:port/vhost` (percent-decoded; vhost `%2f` is `/`, the default).
fn parse_url(url: &str) -> Result<OpenConnectionArguments, BusError> {
    let bad = |why: &str| BusError::Unavailable(format!("bad AMQP URL: {why}"));
    let rest = url
        .strip_prefix("amqp://")
        .ok_or_else(|| bad("only amqp:// is supported (no TLS)"))?;
    let (authority, vhost) = match rest.split_once('/') {
        Some((a, v)) => (a, v),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (percent_decode(user)?, percent_decode(pass)?),
            None => (percent_decode(u)?, String::new()),
        },
        None => ("guest".to_owned(), "guest".to_owned()),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
        None => 5672,
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let vhost = match vhost.split(['?', '#']).next().unwrap_or("") {
        "" => "/".to_owned(),
        v => percent_decode(v)?,
    };
    Ok(OpenConnectionArguments::new(host, port, &user, &password)
        .virtual_host(&vhost)
        .finish())
}

fn percent_decode(s: &str) -> Result<String, BusError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    BusError::Unavailable(format!("bad escape in AMQP URL part {s:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BusError::Unavailable("AMQP URL is not UTF-8".into()))
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
                Err(BusError::Unavailable(
                    "channel closed before confirm".into(),
                ))
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
    async fn close(
        &mut self,
        _channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::warn!(%close, "publisher channel closed by broker");
        // Dropping the senders fails every waiting publish; they are retried by their callers.
        lock(&self.pending).clear();
        Ok(())
    }
    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(
        &mut self,
        _channel: &Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let a = parse_url("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(a.get_virtual_host(), "/");
        assert_eq!(a.get_port(), 5672);
        let b = parse_url("amqp://u:p%40ss@rabbit/prod").unwrap();
        assert_eq!(b.get_virtual_host(), "prod");
        assert_eq!(b.get_host(), "rabbit");
        assert!(parse_url("amqps://x").is_err());
        assert!(parse_url("amqp://h:notaport/").is_err());
    }
}
