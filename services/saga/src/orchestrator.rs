//! Drives sagas: run the next pending step, persist, repeat; on failure undo the done steps in
//! reverse, persisting after each; on start-up, drive every saga left in flight.
//!
//! Crash safety rests on two rules: progress is saved after every step (so a restart knows what
//! was done), and every call carries a key derived from the saga id and step (so a step that ran
//! but was not yet saved is answered from the service's record, not done twice).

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use crate::domain::{Saga, SagaRequest, SagaStatus, StepName, StepStatus};
use crate::error::{StepError, StoreError};
use crate::services::Services;
use crate::store::SagaStore;

/// How often a call without a definitive answer is retried, and the first wait (doubling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per forward step, including the first.
    pub step_attempts: u32,
    /// Attempts per compensation: higher, since giving up leaves work for a human.
    pub undo_attempts: u32,
    /// Wait before the second attempt.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            step_attempts: 3,
            undo_attempts: 6,
            base_delay: Duration::from_millis(200),
        }
    }
}

/// What a forward step produced.
enum Output {
    Order(Uuid),
    Reservation(Uuid),
    Payment(Uuid),
    Confirmed,
}

/// Runs and resumes sagas against a store and the services.
#[derive(Clone)]
pub struct Orchestrator {
    store: Arc<dyn SagaStore>,
    services: Arc<dyn Services>,
    retry: RetryPolicy,
    /// Sagas created before this instant belong to an earlier process: only those are resumed,
    /// so a saga this process is already driving is never driven twice at once.
    started_at: chrono::DateTime<Utc>,
}

impl Orchestrator {
    /// An orchestrator over `store` calling `services`.
    pub fn new(store: Arc<dyn SagaStore>, services: Arc<dyn Services>, retry: RetryPolicy) -> Self {
        Self {
            store,
            services,
            retry,
            started_at: Utc::now(),
        }
    }

    /// The store (the HTTP layer reads sagas from it).
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.store
    }

    /// Persists a new saga for `request`, then drives it to the end.
    pub async fn execute(&self, request: SagaRequest) -> Result<Saga, StoreError> {
        self.execute_once(request, None).await
    }

    /// Like [`Orchestrator::execute`], but a `key` seen before returns that saga as it stands
    /// instead of starting another (a client or gateway retrying `POST /saga/execute`).
    pub async fn execute_once(
        &self,
        request: SagaRequest,
        key: Option<&str>,
    ) -> Result<Saga, StoreError> {
        let (saga, created) = self.store.create(&Saga::new(request), key).await?;
        if !created {
            tracing::info!(saga_id = %saga.saga_id, "saga replayed for a repeated Idempotency-Key");
            return Ok(saga);
        }
        tracing::info!(saga_id = %saga.saga_id, "saga started");
        self.drive(saga).await
    }

    /// Waits (at most `limit`) for the services to answer their health checks, then resumes
    /// every saga in flight: at start-up the gateway or a service may still be coming up, and
    /// resuming into a dead service would compensate sagas that could have completed.
    pub async fn resume_when_ready(&self, limit: Duration) -> Result<Vec<Saga>, StoreError> {
        // Health polling interval while waiting for the services.
        const POLL: Duration = Duration::from_millis(500);
        let deadline = tokio::time::Instant::now() + limit;
        while !self.services.ready().await {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(?limit, "services still not ready; resuming sagas anyway");
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        self.resume_all().await
    }

    /// Drives every saga a previous process left running or compensating; returns them finished.
    pub async fn resume_all(&self) -> Result<Vec<Saga>, StoreError> {
        let mut pending = self.store.in_flight().await?;
        pending.retain(|s| s.created_at < self.started_at);
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "resuming sagas left in flight");
        }
        let mut done = Vec::with_capacity(pending.len());
        for saga in pending {
            done.push(self.drive(saga).await?);
        }
        Ok(done)
    }

    /// Runs `saga` from wherever it stands to a final status, saving after every step.
    pub async fn drive(&self, mut saga: Saga) -> Result<Saga, StoreError> {
        loop {
            match saga.status {
                SagaStatus::Running => self.forward(&mut saga).await?,
                SagaStatus::Compensating => self.backward(&mut saga).await?,
                SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed => {
                    return Ok(saga)
                }
            }
        }
    }

    /// Runs the next pending step (or finishes the saga) and saves.
    async fn forward(&self, saga: &mut Saga) -> Result<(), StoreError> {
        let Some(idx) = saga
            .steps
            .iter()
            .position(|s| s.status == StepStatus::Pending)
        else {
            saga.status = SagaStatus::Completed;
            return self.save_final(saga).await;
        };
        let step = saga.steps[idx].name;
        let result = with_retry(self.retry.step_attempts, self.retry.base_delay, || {
            self.run_step(saga, step)
        })
        .await;
        match result {
            Ok(output) => {
                match output {
                    Output::Order(id) => saga.order_id = Some(id),
                    Output::Reservation(id) => saga.reservation_id = Some(id),
                    Output::Payment(id) => saga.payment_id = Some(id),
                    Output::Confirmed => {}
                }
                saga.steps[idx].status = StepStatus::Completed;
            }
            Err(e) => {
                tracing::warn!(saga_id = %saga.saga_id, step = step.as_str(), error = %e, "saga step failed; compensating");
                saga.steps[idx].status = StepStatus::Failed;
                saga.steps[idx].uncertain = matches!(e, StepError::Unavailable { .. });
                saga.steps[idx].error = Some(e.to_string());
                saga.error = Some(e.to_string());
                saga.status = SagaStatus::Compensating;
            }
        }
        self.save(saga).await
    }

    /// Undoes the last completed (or uncertain) step, or finishes the saga, and saves.
    async fn backward(&self, saga: &mut Saga) -> Result<(), StoreError> {
        let Some(idx) = saga.steps.iter().rposition(|s| {
            s.status == StepStatus::Completed || (s.status == StepStatus::Failed && s.uncertain)
        }) else {
            let undone = saga
                .steps
                .iter()
                .any(|s| s.status == StepStatus::Compensated);
            let stuck = saga
                .steps
                .iter()
                .any(|s| s.status == StepStatus::CompensationFailed);
            saga.status = if undone && !stuck {
                SagaStatus::Compensated
            } else {
                SagaStatus::Failed
            };
            return self.save_final(saga).await;
        };
        let step = saga.steps[idx].name;
        if saga.steps[idx].uncertain {
            return self.settle(saga, idx).await;
        }
        let result = with_retry(self.retry.undo_attempts, self.retry.base_delay, || {
            self.undo_step(saga, step)
        })
        .await;
        match result {
            Ok(()) => saga.steps[idx].status = StepStatus::Compensated,
            Err(e) => {
                tracing::error!(saga_id = %saga.saga_id, step = step.as_str(), error = %e, "compensation failed");
                saga.steps[idx].status = StepStatus::CompensationFailed;
                saga.steps[idx].error = Some(e.to_string());
            }
        }
        self.save(saga).await
    }

    /// Learns the outcome of a step that failed without a definitive answer by replaying it
    /// under the same idempotency key: if it took effect (now or before), it becomes a completed
    /// step that the next round undoes; if refused, there is nothing to undo.
    async fn settle(&self, saga: &mut Saga, idx: usize) -> Result<(), StoreError> {
        let step = saga.steps[idx].name;
        let result = with_retry(self.retry.undo_attempts, self.retry.base_delay, || {
            self.run_step(saga, step)
        })
        .await;
        saga.steps[idx].uncertain = false;
        match result {
            Ok(output) => {
                saga.steps[idx].status = StepStatus::Completed;
                match output {
                    Output::Order(id) => saga.order_id = Some(id),
                    Output::Reservation(id) => saga.reservation_id = Some(id),
                    Output::Payment(id) => saga.payment_id = Some(id),
                    Output::Confirmed => {}
                }
            }
            Err(StepError::Rejected { .. }) => {}
            Err(e) => {
                tracing::error!(saga_id = %saga.saga_id, step = step.as_str(), error = %e, "cannot learn a step's outcome");
                saga.steps[idx].status = StepStatus::CompensationFailed;
                saga.steps[idx].error = Some(format!("outcome unknown: {e}"));
            }
        }
        self.save(saga).await
    }

    async fn run_step(&self, saga: &Saga, step: StepName) -> Result<Output, StepError> {
        let key = saga.key(step);
        let req = &saga.request;
        let order = || {
            saga.order_id.ok_or_else(|| StepError::Unavailable {
                service: "saga",
                detail: "no order id recorded".to_owned(),
            })
        };
        match step {
            StepName::CreateOrder => self
                .services
                .create_order(req, &key)
                .await
                .map(Output::Order),
            StepName::ReserveInventory => self
                .services
                .reserve(req, order()?, &key)
                .await
                .map(Output::Reservation),
            StepName::ProcessPayment => self
                .services
                .pay(req, order()?, &key)
                .await
                .map(Output::Payment),
            StepName::ConfirmOrder => self
                .services
                .set_order_status(order()?, "confirmed", &key)
                .await
                .map(|()| Output::Confirmed),
        }
    }

    async fn undo_step(&self, saga: &Saga, step: StepName) -> Result<(), StepError> {
        let key = saga.undo_key(step);
        let missing = |what: &str| StepError::Unavailable {
            service: "saga",
            detail: format!("no {what} recorded"),
        };
        match step {
            StepName::CreateOrder => {
                let id = saga.order_id.ok_or_else(|| missing("order id"))?;
                self.services.set_order_status(id, "cancelled", &key).await
            }
            StepName::ReserveInventory => {
                let id = saga
                    .reservation_id
                    .ok_or_else(|| missing("reservation id"))?;
                self.services.release(id, &key).await
            }
            StepName::ProcessPayment => {
                let id = saga.payment_id.ok_or_else(|| missing("payment id"))?;
                self.services.refund(id, &key).await
            }
            // Confirming has no undo of its own: cancelling the order (create_order's undo)
            // moves a confirmed order to cancelled.
            StepName::ConfirmOrder => Ok(()),
        }
    }

    async fn save(&self, saga: &mut Saga) -> Result<(), StoreError> {
        saga.updated_at = Utc::now().trunc_subsecs(6);
        self.store.save(saga, &[]).await
    }

    async fn save_final(&self, saga: &mut Saga) -> Result<(), StoreError> {
        saga.updated_at = Utc::now().trunc_subsecs(6);
        tracing::info!(saga_id = %saga.saga_id, status = saga.status.as_str(), "saga finished");
        let event = saga.finished_event();
        self.store.save(saga, &[event]).await
    }
}

/// Retries `call` while it fails without a definitive answer, with doubling waits.
async fn with_retry<T, F, Fut>(attempts: u32, base: Duration, mut call: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StepError>>,
{
    let mut delay = base;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(StepError::Unavailable { service, detail }) if attempt < attempts.max(1) => {
                tracing::warn!(service, %detail, attempt, "retrying with the same idempotency key");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}
