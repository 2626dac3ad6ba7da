//! Products with stock, and reservations that hold units until released.
//!
//! `stock` is what can still be reserved; `reserved` is what reservations hold. Reserving moves
//! units from `stock` to `reserved` atomically (never below zero); releasing moves them back, once.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use services_common::Event;
use uuid::Uuid;

/// A product's stock levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Caller-chosen id (`p1`).
    pub id: String,
    /// Units available to reserve.
    pub stock: i64,
    /// Units held by active reservations.
    pub reserved: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A reservation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Holding units.
    Reserved,
    /// Units given back.
    Released,
}

impl ReservationStatus {
    /// Stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Released => "released",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

/// Units of one product held for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Server-assigned id.
    pub id: Uuid,
    /// The product.
    pub product_id: String,
    /// Units held (> 0).
    pub quantity: i64,
    /// The order it is for, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// Current state.
    pub status: ReservationStatus,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Largest stock or quantity accepted: far above any real stock, far below i64 overflow even
/// when stock is reset while units are reserved.
pub const MAX_UNITS: i64 = 1_000_000_000_000;

/// Body of `PUT /products/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct SetStock {
    /// Units available (>= 0).
    pub stock: i64,
}

/// Body of `POST /reservations`.
#[derive(Debug, Clone, Deserialize)]
pub struct NewReservation {
    /// The product.
    pub product_id: String,
    /// Units (> 0).
    pub quantity: i64,
    /// The order it is for.
    #[serde(default)]
    pub order_id: Option<Uuid>,
}

impl NewReservation {
    /// Checks the business rules.
    pub fn validate(self) -> Result<Self, String> {
        let mut problems = Vec::new();
        if self.product_id.trim().is_empty() {
            problems.push("product_id must not be empty");
        }
        if self.quantity <= 0 {
            problems.push("quantity must be greater than 0");
        }
        if self.quantity > MAX_UNITS {
            problems.push("quantity is too large");
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Truncated to microseconds so memory and PostgreSQL give identical timestamps.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Reservation {
    /// A new active reservation.
    pub fn new(req: &NewReservation) -> Self {
        let now = now();
        Self {
            id: Uuid::new_v4(),
            product_id: req.product_id.clone(),
            quantity: req.quantity,
            order_id: req.order_id,
            status: ReservationStatus::Reserved,
            created_at: now,
            updated_at: now,
        }
    }

    /// `inventory.reserved` or `inventory.released`, by status.
    pub fn event(&self) -> Event {
        let kind = match self.status {
            ReservationStatus::Reserved => "inventory.reserved",
            ReservationStatus::Released => "inventory.released",
        };
        Event::new(
            kind,
            serde_json::json!({
                "reservation_id": self.id,
                "order_id": self.order_id,
                "product_id": self.product_id,
                "quantity": self.quantity,
            }),
        )
    }
}

impl Product {
    /// `inventory.updated` after the stock was set.
    pub fn updated_event(&self) -> Event {
        Event::new(
            "inventory.updated",
            serde_json::json!({ "product_id": self.id, "stock": self.stock, "reserved": self.reserved }),
        )
    }
}
