//! Payments, the simulated card processor's decline rule, and the payment events.
//!
//! The processor is deterministic so tests and demos can force a decline: a charge is declined
//! when its amount is above `PAYMENT_DECLINE_ABOVE` (default 10000) or its customer id starts with
//! `decline-`. Declined attempts are stored too (status `declined`), so a retry with the same
//! `Idempotency-Key` gets the same answer.

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use services_common::Event;
use uuid::Uuid;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Charged.
    Completed,
    /// Refused by the processor; nothing charged.
    Declined,
    /// Charged, then given back.
    Refunded,
}

impl PaymentStatus {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "completed" => Self::Completed,
            "declined" => Self::Declined,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }
}

/// A payment as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Server-assigned id.
    pub id: Uuid,
    /// The order paid for.
    pub order_id: Uuid,
    /// The charged amount (> 0).
    pub amount: Decimal,
    /// Who pays, when given (the decline rule looks at it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Current status.
    pub status: PaymentStatus,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The body of `POST /payments`.
#[derive(Debug, Clone, Deserialize)]
pub struct NewPaymentRequest {
    /// The order paid for.
    pub order_id: Uuid,
    /// Amount, a JSON number or string.
    pub amount: Decimal,
    /// Optional payer.
    #[serde(default)]
    pub customer_id: Option<String>,
}

impl NewPaymentRequest {
    /// Checks `amount > 0`.
    pub fn validate(self) -> Result<Self, String> {
        if self.amount <= Decimal::ZERO {
            return Err("amount must be greater than 0".to_owned());
        }
        Ok(self)
    }
}

/// The simulated processor's deterministic decline rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclineRule {
    /// Charges strictly above this amount are declined.
    pub above: Decimal,
    /// Customers whose id starts with this are declined.
    pub customer_prefix: String,
}

/// Default `PAYMENT_DECLINE_ABOVE`.
pub const DEFAULT_DECLINE_ABOVE: Decimal = Decimal::from_parts(10000, 0, 0, false, 0);
/// Customer id prefix that is always declined.
pub const DECLINE_PREFIX: &str = "decline-";

impl Default for DeclineRule {
    fn default() -> Self {
        Self {
            above: DEFAULT_DECLINE_ABOVE,
            customer_prefix: DECLINE_PREFIX.to_owned(),
        }
    }
}

impl DeclineRule {
    /// Why the processor refuses this charge, if it does.
    pub fn decline_reason(&self, req: &NewPaymentRequest) -> Option<String> {
        if req.amount > self.above {
            return Some(format!(
                "amount {} is above the limit {}",
                req.amount, self.above
            ));
        }
        match &req.customer_id {
            Some(c) if c.starts_with(&self.customer_prefix) => {
                Some(format!("customer {c} is declined by the processor"))
            }
            _ => None,
        }
    }
}

impl Payment {
    /// A new payment in the processor's verdict `status`.
    pub fn new(req: &NewPaymentRequest, status: PaymentStatus) -> Self {
        let now = Utc::now().trunc_subsecs(6);
        Self {
            id: Uuid::new_v4(),
            order_id: req.order_id,
            amount: req.amount,
            customer_id: req.customer_id.clone(),
            status,
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether a retried request (same idempotency key) asks for the same charge.
    pub fn same_request(&self, req: &NewPaymentRequest) -> bool {
        self.order_id == req.order_id && self.amount == req.amount
    }

    /// `payment.processed` (charged) or `payment.declined`.
    pub fn processed_event(&self) -> Event {
        let kind = match self.status {
            PaymentStatus::Declined => "payment.declined",
            PaymentStatus::Completed | PaymentStatus::Refunded => "payment.processed",
        };
        self.event(kind)
    }

    /// `payment.refunded`.
    pub fn refunded_event(&self) -> Event {
        self.event("payment.refunded")
    }

    fn event(&self, kind: &str) -> Event {
        Event::new(
            kind,
            serde_json::json!({
                "payment_id": self.id,
                "order_id": self.order_id,
                "amount": self.amount,
                "status": self.status,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn req(amount: &str, customer: Option<&str>) -> NewPaymentRequest {
        NewPaymentRequest {
            order_id: Uuid::new_v4(),
            amount: Decimal::from_str(amount).unwrap(),
            customer_id: customer.map(str::to_owned),
        }
    }

    #[test]
    fn decline_rule_is_deterministic() {
        let rule = DeclineRule::default();
        assert_eq!(rule.decline_reason(&req("10000", None)), None);
        assert!(rule.decline_reason(&req("10000.01", None)).is_some());
        assert!(rule
            .decline_reason(&req("5", Some("decline-bob")))
            .is_some());
        assert_eq!(rule.decline_reason(&req("5", Some("bob"))), None);
    }
}
