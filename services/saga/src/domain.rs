//! The order saga's state: its request, steps, progress and outcome.
//!
//! ```text
//! running ──(all steps done)──────────────────────────> completed
//!    │
//!    └─(a step fails)─> compensating ──(undo done steps)─> compensated
//!                                     └─(an undo fails / nothing was done)─> failed
//! ```
//! Forward steps: create_order -> reserve_inventory -> process_payment -> confirm_order.
//! Compensations, in reverse: refund payment, release stock, cancel order.

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use services_common::validation::check_order;
use uuid::Uuid;

/// The body of `POST /saga/execute`: the order to place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRequest {
    /// Who orders (a `decline-` prefix makes the simulated processor decline).
    pub customer_id: String,
    /// What is ordered.
    pub product_id: String,
    /// Units (> 0).
    pub quantity: i64,
    /// Total price (> 0), charged by the payment step.
    pub total_amount: Decimal,
}

impl SagaRequest {
    /// Checks the business rules before any step runs.
    pub fn validate(self) -> Result<Self, String> {
        check_order(
            &self.customer_id,
            &self.product_id,
            self.quantity,
            self.total_amount,
        )?;
        Ok(self)
    }
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Forward steps under way.
    Running,
    /// A step failed; undoing the done ones.
    Compensating,
    /// Every step done.
    Completed,
    /// A step failed and every done step was undone.
    Compensated,
    /// Nothing could be done, or an undo failed (needs a human).
    Failed,
}

impl SagaStatus {
    /// Whether the saga still needs driving (after a restart, say).
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

/// The forward steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// `POST /orders`.
    CreateOrder,
    /// `POST /reservations`.
    ReserveInventory,
    /// `POST /payments`.
    ProcessPayment,
    /// `PATCH /orders/{id}` -> confirmed.
    ConfirmOrder,
}

impl StepName {
    /// All steps in execution order.
    pub const ALL: [StepName; 4] = [
        Self::CreateOrder,
        Self::ReserveInventory,
        Self::ProcessPayment,
        Self::ConfirmOrder,
    ];

    /// The snake_case name, also part of the idempotency key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateOrder => "create_order",
            Self::ReserveInventory => "reserve_inventory",
            Self::ProcessPayment => "process_payment",
            Self::ConfirmOrder => "confirm_order",
        }
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not run yet.
    Pending,
    /// Done.
    Completed,
    /// Failed: triggers compensation.
    Failed,
    /// Done, then undone.
    Compensated,
    /// Done, and the undo failed.
    CompensationFailed,
}

/// One step in the saga's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Which step.
    pub name: StepName,
    /// Its state.
    pub status: StepStatus,
    /// Why it (or its undo) failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A failed step whose outcome is unknown (no definitive answer): the service may have acted,
    /// so compensation replays it under the same key to learn its result and undo it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
}

/// A saga instance: persisted after every step so a restarted orchestrator can finish it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    /// Also the prefix of every idempotency key it sends.
    pub saga_id: Uuid,
    /// Where it stands.
    pub status: SagaStatus,
    /// The order created by the first step.
    pub order_id: Option<Uuid>,
    /// The reservation held by the second step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
    /// The payment taken by the third step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    /// Each step's state, in order.
    pub steps: Vec<Step>,
    /// The first failure, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was asked for.
    pub request: SagaRequest,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// Last progress.
    pub updated_at: DateTime<Utc>,
}

impl Saga {
    /// A new running saga with every step pending.
    pub fn new(request: SagaRequest) -> Self {
        let now = Utc::now().trunc_subsecs(6);
        Self {
            saga_id: Uuid::new_v4(),
            status: SagaStatus::Running,
            order_id: None,
            reservation_id: None,
            payment_id: None,
            steps: StepName::ALL
                .iter()
                .map(|&name| Step {
                    name,
                    status: StepStatus::Pending,
                    error: None,
                    uncertain: false,
                })
                .collect(),
            error: None,
            request,
            created_at: now,
            updated_at: now,
        }
    }

    /// The idempotency key of a forward step: stable across retries and restarts.
    pub fn key(&self, step: StepName) -> String {
        format!("{}:{}", self.saga_id, step.as_str())
    }

    /// The idempotency key of a step's compensation.
    pub fn undo_key(&self, step: StepName) -> String {
        format!("{}:{}:compensate", self.saga_id, step.as_str())
    }

    /// The `saga.<status>` event for a finished saga.
    pub fn finished_event(&self) -> services_common::Event {
        services_common::Event::new(
            &format!("saga.{}", self.status.as_str()),
            serde_json::json!({
                "saga_id": self.saga_id,
                "order_id": self.order_id,
                "status": self.status,
                "error": self.error,
            }),
        )
    }
}
