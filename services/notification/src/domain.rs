//! Notifications: one per consumed event, with a human message derived from the event.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use services_common::Event;
use uuid::Uuid;

/// A recorded notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Server-assigned id.
    pub id: Uuid,
    /// The event it came from (unique: an event is recorded once).
    pub event_id: Uuid,
    /// The event type (`order.created`, ...).
    pub event_type: String,
    /// The order concerned, when the event names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// What a customer would be told.
    pub message: String,
    /// The full event, for audit.
    pub event: serde_json::Value,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

impl Notification {
    /// The notification for `event`.
    pub fn from_event(event: &Event) -> Self {
        let order_id = event.order_id();
        let subject = order_id
            .as_deref()
            .map(|o| format!("order {o}"))
            .unwrap_or_else(|| "your account".to_owned());
        let status = event
            .data
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        let message = match event.event_type.as_str() {
            "order.created" => format!("We received {subject}."),
            "order.updated" => format!("Status of {subject} is now {status}."),
            "payment.processed" => format!("Payment for {subject} went through."),
            "payment.declined" => format!("Payment for {subject} was declined."),
            "payment.refunded" => format!("Payment for {subject} was refunded."),
            "inventory.reserved" => format!("Items for {subject} are set aside."),
            "inventory.released" => format!("Items for {subject} were released."),
            "inventory.updated" => format!(
                "Stock of product {} is now {}.",
                event
                    .data
                    .get("product_id")
                    .and_then(|p| p.as_str())
                    .unwrap_or("?"),
                event
                    .data
                    .get("stock")
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
            "saga.failed" => format!("{subject} failed."),
            "saga.completed" => format!("{subject} is confirmed."),
            "saga.compensated" => format!("{subject} could not be completed and was rolled back."),
            other => format!("{other} for {subject}."),
        };
        let mut message = message;
        if let Some(first) = message.get(..1) {
            message = first.to_uppercase() + message.get(1..).unwrap_or("");
        }
        Self {
            id: Uuid::new_v4(),
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            order_id,
            message,
            event: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
            created_at: Utc::now().trunc_subsecs(6),
        }
    }
}
