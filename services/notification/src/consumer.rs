//! The event consumer: subscribes to every event family, records each event once, then acks.
//!
//! Ack only after the store has the notification, so a crash in between redelivers the event
//! and the event-id dedup makes the second delivery a no-op. A lost subscription (broker restart)
//! is re-established with backoff until shutdown.

use std::sync::Arc;
use std::time::Duration;

use services_common::bus::{EventBus, Subscription};
use services_common::server::Shutdown;

use crate::domain::Notification;
use crate::store::NotificationStore;

/// The topic patterns the service consumes.
pub const PATTERNS: [&str; 4] = ["order.*", "payment.*", "inventory.*", "saga.*"];
/// The durable queue name when `NOTIFICATION_QUEUE` is unset.
pub const DEFAULT_QUEUE: &str = "notification-service";

/// Waits between resubscription or store retries: start small, cap so recovery stays prompt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Consumes events from a bus into a store.
pub struct Consumer {
    bus: Arc<dyn EventBus>,
    queue: String,
    store: Arc<dyn NotificationStore>,
    current: Option<Box<dyn Subscription>>,
}

impl Consumer {
    /// Subscribes right away (so in-process events published from now on are seen); if the broker
    /// is down, [`Consumer::run`] keeps retrying.
    pub async fn start(
        bus: Arc<dyn EventBus>,
        queue: &str,
        store: Arc<dyn NotificationStore>,
    ) -> Self {
        let current = match bus.subscribe(queue, &PATTERNS).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe yet; will retry");
                None
            }
        };
        Self {
            bus,
            queue: queue.to_owned(),
            store,
            current,
        }
    }

    /// Runs until `shutdown`: record, then ack, each delivery; resubscribe when the stream ends.
    pub async fn run(mut self, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut sub = match self.current.take() {
                Some(s) => s,
                None => match self.bus.subscribe(&self.queue, &PATTERNS).await {
                    Ok(s) => {
                        backoff = BACKOFF_MIN;
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "subscribe failed");
                        tokio::select! {
                            () = &mut stop => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            loop {
                let next = tokio::select! {
                    () = &mut stop => return,
                    next = sub.next() => next,
                };
                match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "subscription failed");
                        break;
                    }
                    Some(Ok(delivery)) => {
                        let notification = Notification::from_event(&delivery.event);
                        let mut wait = BACKOFF_MIN;
                        // Keep the delivery unacked until it is stored: never drop an event.
                        loop {
                            match self.store.record(notification.clone()).await {
                                Ok(new) => {
                                    if !new {
                                        tracing::debug!(event_id = %delivery.event.event_id, "duplicate event ignored");
                                    }
                                    break;
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, retry_in = ?wait, "cannot record notification");
                                    tokio::select! {
                                        () = &mut stop => return,
                                        () = tokio::time::sleep(wait) => {}
                                    }
                                    wait = (wait * 2).min(BACKOFF_MAX);
                                }
                            }
                        }
                        if let Err(e) = delivery.ack().await {
                            tracing::warn!(error = %e, "ack failed; the event will be redelivered and deduplicated");
                            break;
                        }
                    }
                }
            }
        }
    }
}
