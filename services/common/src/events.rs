//! The event envelope every service publishes: id, type, time, and the domain fields flattened in.
//!
//! On the wire: `{"event_id": "...", "type": "order.created", "occurred_at": "...", "order_id": ..., ...}`.
//! The routing key on the topic exchange is the `type`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One domain event; consumers deduplicate on `event_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Unique per event; the deduplication key for consumers.
    pub event_id: Uuid,
    /// Dotted type, also the routing key: `order.created`, `payment.refunded`, ...
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the state change happened.
    pub occurred_at: DateTime<Utc>,
    /// The domain fields (order_id, amount, status, ...), flattened into the envelope.
    #[serde(flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// Builds an event from any serializable payload whose JSON form is an object.
    ///
    /// A payload that is not an object (a bare number, say) is kept under a `data` key.
    pub fn new(event_type: &str, payload: impl Serialize) -> Self {
        let data = match serde_json::to_value(payload) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => {
                let mut map = serde_json::Map::new();
                map.insert("data".to_owned(), other);
                map
            }
            Err(e) => {
                let mut map = serde_json::Map::new();
                map.insert("encode_error".to_owned(), e.to_string().into());
                map
            }
        };
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            occurred_at: Utc::now(),
            data,
        }
    }

    /// The order this event concerns, when it names one (`order_id` field).
    pub fn order_id(&self) -> Option<String> {
        match self.data.get("order_id")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// Matches an AMQP-style topic pattern (`*` = one word, `#` = zero or more) against a routing key.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_flattened_fields() {
        let e = Event::new(
            "order.created",
            serde_json::json!({"order_id": "o1", "quantity": 2}),
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "order.created");
        assert_eq!(json["order_id"], "o1");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.order_id().as_deref(), Some("o1"));
    }

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("order.*", "order.created"));
        assert!(!topic_matches("order.*", "payment.processed"));
        assert!(!topic_matches("order.*", "order.created.extra"));
        assert!(topic_matches("#", "a.b.c"));
        assert!(topic_matches("saga.#", "saga"));
        assert!(topic_matches("order.created", "order.created"));
    }
}
