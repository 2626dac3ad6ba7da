//! A small world: order, inventory and payment services on port 0 sharing one in-process bus,
//! the orchestrator calling them directly (no gateway), and fault-injecting service wrappers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use saga_orchestrator::domain::SagaRequest;
use saga_orchestrator::error::StepError;
use saga_orchestrator::orchestrator::{Orchestrator, RetryPolicy};
use saga_orchestrator::services::{Endpoints, HttpServices, Services};
use saga_orchestrator::store::{MemorySagaStore, PgSagaStore, SagaStore};
use saga_orchestrator::AppState;
use services_common::bus::{EventBus, InProcessBus};
use services_common::test_support::{test_db, Backend, TestDb, TestServer};
use tokio::sync::Notify;
use uuid::Uuid;

pub(crate) struct World {
    pub(crate) order: TestServer,
    pub(crate) inventory: TestServer,
    pub(crate) payment: TestServer,
    pub(crate) saga: TestServer,
    pub(crate) endpoints: Endpoints,
    pub(crate) db: Option<TestDb>,
    /// Memory sagas survive the simulated restart: one store per world.
    memory: Arc<MemorySagaStore>,
}

pub(crate) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        step_attempts: 2,
        undo_attempts: 2,
        base_delay: Duration::from_millis(10),
    }
}

pub(crate) async fn world(backend: Backend) -> Option<World> {
    let db = match backend {
        Backend::Memory => None,
        Backend::Postgres => Some(test_db().await?),
    };
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new());
    let order = TestServer::spawn(order_service::app(order_service::AppState {
        store: Arc::new(order_service::store::MemoryOrderStore::new(bus.clone())),
    }))
    .await;
    let inventory = TestServer::spawn(inventory_service::app(inventory_service::AppState {
        store: Arc::new(inventory_service::store::MemoryInventoryStore::new(
            bus.clone(),
        )),
    }))
    .await;
    let payment = TestServer::spawn(payment_service::app(payment_service::AppState {
        store: Arc::new(payment_service::store::MemoryPaymentStore::new(bus.clone())),
        decline: Arc::new(payment_service::domain::DeclineRule::default()),
    }))
    .await;
    let endpoints = Endpoints {
        order: order.base_url.clone(),
        inventory: inventory.base_url.clone(),
        payment: payment.base_url.clone(),
    };
    let mut w = World {
        order,
        inventory,
        payment,
        saga: TestServer::spawn(axum::Router::new()).await,
        endpoints,
        db,
        memory: Arc::new(MemorySagaStore::new(bus.clone())),
    };
    let orch = w
        .orchestrator(Arc::new(HttpServices::new(w.endpoints.clone())))
        .await;
    w.saga = TestServer::spawn(saga_orchestrator::app(AppState { orchestrator: orch })).await;
    Some(w)
}

impl World {
    /// A fresh store on the world's backend: for PostgreSQL, a new store on the same schema, as
    /// a restarted process would open.
    pub(crate) async fn store(&self) -> Arc<dyn SagaStore> {
        match &self.db {
            None => self.memory.clone(),
            Some(db) => Arc::new(
                PgSagaStore::new(db.pool.clone(), Arc::new(Notify::new()))
                    .await
                    .unwrap(),
            ),
        }
    }

    pub(crate) async fn orchestrator(&self, services: Arc<dyn Services>) -> Orchestrator {
        Orchestrator::new(self.store().await, services, fast_retry())
    }

    pub(crate) fn http_services(&self) -> Arc<dyn Services> {
        Arc::new(HttpServices::new(self.endpoints.clone()))
    }

    pub(crate) async fn seed(&self, product: &str, stock: i64) {
        let (status, body) = self
            .inventory
            .call(
                Method::PUT,
                &format!("/products/{product}"),
                Some(serde_json::json!({"stock": stock})),
                &[],
            )
            .await;
        assert!(status.is_success(), "{body}");
    }

    /// (stock, reserved) of a product.
    pub(crate) async fn stock(&self, product: &str) -> (i64, i64) {
        let (_, p) = self.inventory.get(&format!("/products/{product}")).await;
        (
            p["stock"].as_i64().unwrap(),
            p["reserved"].as_i64().unwrap(),
        )
    }

    pub(crate) async fn order_status(&self, order_id: &str) -> String {
        let (_, o) = self.order.get(&format!("/orders/{order_id}")).await;
        o["status"].as_str().unwrap().to_owned()
    }

    /// Statuses of every payment attempt for an order.
    pub(crate) async fn payments(&self, order_id: &str) -> Vec<String> {
        let (_, body) = self
            .payment
            .get(&format!("/payments?order_id={order_id}"))
            .await;
        body["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap().to_owned())
            .collect()
    }

    pub(crate) async fn order_count(&self) -> i64 {
        self.order.get("/orders").await.1["total"].as_i64().unwrap()
    }

    pub(crate) async fn cleanup(self) {
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}

pub(crate) fn request(customer: &str, product: &str, quantity: i64, amount: &str) -> SagaRequest {
    SagaRequest {
        customer_id: customer.to_owned(),
        product_id: product.to_owned(),
        quantity,
        total_amount: amount.parse().unwrap(),
    }
}

/// Where a [`Faulty`] wrapper stops the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Hang before calling the named operation (the process "dies" before it).
    HangBefore(&'static str),
    /// Call the named operation, then hang (it "dies" after the service acted, before saving).
    HangAfter(&'static str),
    /// The named operation is refused with a 4xx.
    Reject(&'static str),
    /// The named operation runs, but its first `n` answers are lost (a timeout, say).
    LoseAnswers(&'static str, usize),
}

/// Wraps the real services and injects one fault; `reached` fires when the fault triggers.
pub(crate) struct Faulty {
    pub(crate) inner: Arc<dyn Services>,
    pub(crate) fault: Fault,
    pub(crate) reached: Arc<Notify>,
    calls: std::sync::atomic::AtomicUsize,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<dyn Services>, fault: Fault) -> (Arc<Self>, Arc<Notify>) {
        let reached = Arc::new(Notify::new());
        (
            Arc::new(Self {
                inner,
                fault,
                reached: reached.clone(),
                calls: std::sync::atomic::AtomicUsize::new(0),
            }),
            reached,
        )
    }

    async fn around<T: Send>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, StepError>> + Send,
    ) -> Result<T, StepError> {
        match self.fault {
            Fault::HangBefore(o) if o == op => {
                self.reached.notify_one();
                std::future::pending().await
            }
            Fault::HangAfter(o) if o == op => {
                let _ = call.await;
                self.reached.notify_one();
                std::future::pending().await
            }
            Fault::LoseAnswers(o, n) if o == op => {
                let result = call.await;
                if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    let _ = result;
                    return Err(StepError::Unavailable {
                        service: "test",
                        detail: format!("{op}: answer lost"),
                    });
                }
                result
            }
            Fault::Reject(o) if o == op => {
                self.reached.notify_one();
                Err(StepError::Rejected {
                    service: "test",
                    status: 409,
                    kind: "injected".into(),
                    message: format!("{op} refused by the test"),
                })
            }
            _ => call.await,
        }
    }
}

#[async_trait]
impl Services for Faulty {
    async fn create_order(&self, req: &SagaRequest, key: &str) -> Result<Uuid, StepError> {
        self.around("create_order", self.inner.create_order(req, key))
            .await
    }
    async fn reserve(
        &self,
        req: &SagaRequest,
        order_id: Uuid,
        key: &str,
    ) -> Result<Uuid, StepError> {
        self.around("reserve", self.inner.reserve(req, order_id, key))
            .await
    }
    async fn pay(&self, req: &SagaRequest, order_id: Uuid, key: &str) -> Result<Uuid, StepError> {
        self.around("pay", self.inner.pay(req, order_id, key)).await
    }
    async fn set_order_status(
        &self,
        order_id: Uuid,
        status: &str,
        key: &str,
    ) -> Result<(), StepError> {
        let op = if status == "confirmed" {
            "confirm"
        } else {
            "cancel"
        };
        self.around(op, self.inner.set_order_status(order_id, status, key))
            .await
    }
    async fn release(&self, reservation_id: Uuid, key: &str) -> Result<(), StepError> {
        self.around("release", self.inner.release(reservation_id, key))
            .await
    }
    async fn refund(&self, payment_id: Uuid, key: &str) -> Result<(), StepError> {
        self.around("refund", self.inner.refund(payment_id, key))
            .await
    }
}
