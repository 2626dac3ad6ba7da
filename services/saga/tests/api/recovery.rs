//! "Killed mid-saga and restarted": the orchestrator's task is aborted at a chosen point (its
//! progress so far persisted), then a new orchestrator on the same store resumes every saga in
//! flight; it must end completed or compensated, with nothing done twice.

use std::time::Duration;

use saga_orchestrator::domain::{Saga, SagaStatus};
use services_common::test_support::Backend;

use crate::helpers::{request, world, Fault, Faulty, World};

/// Runs a saga with `fault`, kills it where the fault triggers, restarts, and returns the result.
async fn crash_and_resume(w: &World, fault: Fault, customer: &str) -> Saga {
    let (faulty, reached) = Faulty::new(w.http_services(), fault);
    let doomed = w.orchestrator(faulty).await;
    let req = request(customer, "p1", 2, "20");
    let task = tokio::spawn(async move { doomed.execute(req).await });
    tokio::time::timeout(Duration::from_secs(20), reached.notified())
        .await
        .expect("the fault point was never reached");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    let restarted = w.orchestrator(w.http_services()).await;
    let in_flight = restarted.store().in_flight().await.unwrap();
    assert_eq!(in_flight.len(), 1, "the killed saga is left in flight");
    let mut resumed = tokio::time::timeout(
        Duration::from_secs(30),
        restarted.resume_when_ready(Duration::from_secs(10)),
    )
    .await
    .expect("resume took too long")
    .unwrap();
    assert_eq!(resumed.len(), 1);
    assert!(restarted.store().in_flight().await.unwrap().is_empty());
    resumed.remove(0)
}

async fn killed_before_payment_then_completes(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    let saga = crash_and_resume(&w, Fault::HangBefore("pay"), "c1").await;
    assert_eq!(saga.status, SagaStatus::Completed, "{saga:?}");
    let order_id = saga.order_id.unwrap().to_string();
    assert_eq!(w.order_status(&order_id).await, "confirmed");
    assert_eq!(w.stock("p1").await, (8, 2), "reserved once");
    assert_eq!(w.payments(&order_id).await, ["completed"]);
    assert_eq!(w.order_count().await, 1);
    w.cleanup().await;
}

async fn killed_after_charging_does_not_charge_twice(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    // The payment service charged, but the orchestrator died before saving that step.
    let saga = crash_and_resume(&w, Fault::HangAfter("pay"), "c1").await;
    assert_eq!(saga.status, SagaStatus::Completed);
    let order_id = saga.order_id.unwrap().to_string();
    assert_eq!(
        w.payments(&order_id).await,
        ["completed"],
        "charged exactly once"
    );
    assert_eq!(w.stock("p1").await, (8, 2));
    w.cleanup().await;
}

async fn killed_after_reserving_does_not_reserve_twice(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    let saga = crash_and_resume(&w, Fault::HangAfter("reserve"), "c1").await;
    assert_eq!(saga.status, SagaStatus::Completed);
    assert_eq!(w.stock("p1").await, (8, 2), "reserved exactly once");
    assert_eq!(w.order_count().await, 1, "one order");
    w.cleanup().await;
}

async fn killed_while_compensating_then_compensated(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    w.seed("p1", 10).await;
    // Declined, then killed while releasing the stock.
    let saga = crash_and_resume(&w, Fault::HangBefore("release"), "decline-dan").await;
    assert_eq!(saga.status, SagaStatus::Compensated, "{saga:?}");
    let order_id = saga.order_id.unwrap().to_string();
    assert_eq!(w.stock("p1").await, (10, 0));
    assert_eq!(w.order_status(&order_id).await, "cancelled");
    assert_eq!(w.payments(&order_id).await, ["declined"]);
    w.cleanup().await;
}

services_common::backend_tests!(
    killed_before_payment_then_completes,
    killed_after_charging_does_not_charge_twice,
    killed_after_reserving_does_not_reserve_twice,
    killed_while_compensating_then_compensated,
);
