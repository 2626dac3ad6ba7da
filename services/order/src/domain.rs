//! Orders and their status machine.
//!
//! ```text
//! pending ──> confirmed ──> completed
//!    │  \         │  ^
//!    │   └> payment_processing ──> payment_completed ──┘ (confirm/complete)
//!    └──────────────┴───────────────┴──> cancelled | failed   (terminal)
//! ```
//! Setting the current status again is a no-op, so retried PATCHes are safe.

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use services_common::validation::check_order;
use uuid::Uuid;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, nothing reserved or charged yet.
    Pending,
    /// Stock reserved and payment taken: the saga's success state.
    Confirmed,
    /// A payment is under way.
    PaymentProcessing,
    /// The payment went through.
    PaymentCompleted,
    /// Delivered/closed.
    Completed,
    /// Given up on (the saga's compensation ends here).
    Cancelled,
    /// Failed for good.
    Failed,
}

impl OrderStatus {
    /// The snake_case name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::PaymentProcessing => "payment_processing",
            Self::PaymentCompleted => "payment_completed",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored name back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "confirmed" => Self::Confirmed,
            "payment_processing" => Self::PaymentProcessing,
            "payment_completed" => Self::PaymentCompleted,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether an order may move from `self` to `next` (same status: allowed, a no-op).
    pub fn can_become(self, next: Self) -> bool {
        use OrderStatus::*;
        if self == next {
            return true;
        }
        match self {
            Pending => matches!(next, Confirmed | PaymentProcessing | Cancelled | Failed),
            PaymentProcessing => matches!(next, PaymentCompleted | Cancelled | Failed),
            PaymentCompleted => matches!(next, Confirmed | Completed | Cancelled | Failed),
            Confirmed => matches!(next, PaymentProcessing | Completed | Cancelled | Failed),
            Completed | Cancelled | Failed => false,
        }
    }
}

/// A stored order as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Server-assigned id.
    pub id: Uuid,
    /// Who ordered.
    pub customer_id: String,
    /// What was ordered.
    pub product_id: String,
    /// How many units (> 0).
    pub quantity: i64,
    /// What it costs in total (> 0), a decimal.
    pub total_amount: Decimal,
    /// Current status.
    pub status: OrderStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The body of `POST /orders` before validation.
#[derive(Debug, Clone, Deserialize)]
pub struct NewOrderRequest {
    /// Who orders.
    pub customer_id: String,
    /// What is ordered.
    pub product_id: String,
    /// How many units.
    pub quantity: i64,
    /// Total price; a JSON number or a string.
    pub total_amount: Decimal,
}

/// A validated new order.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// Who orders (non-blank).
    pub customer_id: String,
    /// What is ordered (non-blank).
    pub product_id: String,
    /// Units, > 0.
    pub quantity: i64,
    /// Total price, > 0.
    pub total_amount: Decimal,
}

impl NewOrderRequest {
    /// Checks the business rules; the error lists what is wrong.
    pub fn validate(self) -> Result<NewOrder, String> {
        check_order(
            &self.customer_id,
            &self.product_id,
            self.quantity,
            self.total_amount,
        )?;
        Ok(NewOrder {
            customer_id: self.customer_id,
            product_id: self.product_id,
            quantity: self.quantity,
            total_amount: self.total_amount,
        })
    }
}

impl Order {
    /// A fresh pending order.
    pub fn new(new: NewOrder) -> Self {
        let now = Utc::now().trunc_subsecs(6);
        Self {
            id: Uuid::new_v4(),
            customer_id: new.customer_id,
            product_id: new.product_id,
            quantity: new.quantity,
            total_amount: new.total_amount,
            status: OrderStatus::Pending,
            created_at: now,
            updated_at: now,
        }
    }

    /// The `order.created` event payload.
    pub fn created_event(&self) -> services_common::Event {
        services_common::Event::new(
            "order.created",
            serde_json::json!({
                "order_id": self.id,
                "customer_id": self.customer_id,
                "product_id": self.product_id,
                "quantity": self.quantity,
                "total_amount": self.total_amount,
                "status": self.status,
            }),
        )
    }

    /// The `order.updated` event payload.
    pub fn updated_event(&self, previous: OrderStatus) -> services_common::Event {
        services_common::Event::new(
            "order.updated",
            serde_json::json!({
                "order_id": self.id,
                "status": self.status,
                "previous_status": previous,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use OrderStatus::*;
        assert!(Pending.can_become(Confirmed));
        assert!(Pending.can_become(Cancelled));
        assert!(Confirmed.can_become(Cancelled));
        assert!(Cancelled.can_become(Cancelled));
        assert!(!Cancelled.can_become(Completed));
        assert!(!Completed.can_become(Pending));
        assert!(!Failed.can_become(Confirmed));
        for s in [
            Pending,
            Confirmed,
            PaymentProcessing,
            PaymentCompleted,
            Completed,
            Cancelled,
            Failed,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn validation_lists_problems() {
        let req = NewOrderRequest {
            customer_id: " ".into(),
            product_id: "p".into(),
            quantity: 0,
            total_amount: Decimal::ZERO,
        };
        let err = req.validate().unwrap_err();
        assert!(
            err.contains("customer_id") && err.contains("quantity") && err.contains("total_amount")
        );
    }
}
