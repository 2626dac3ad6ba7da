//! How the saga reaches the order, inventory and payment services.
//!
//! [`Services`] is the seam: [`HttpServices`] calls them over HTTP (through the gateway by
//! default: `GATEWAY_URL` + `/order`, `/inventory`, `/payment`; `ORDER_URL`, `INVENTORY_URL`,
//! `PAYMENT_URL` override one each), and tests wrap it to inject hangs and crashes. Every call
//! carries an `Idempotency-Key`, so a retried or resumed call has the effect of one.

use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use rust_decimal::Decimal;
use services_common::config::non_empty;
use services_common::http_client::{ClientError, JsonClient, JsonResponse};
use uuid::Uuid;

use crate::domain::SagaRequest;
use crate::error::StepError;

/// The calls the saga makes; each is idempotent under its key.
#[async_trait]
pub trait Services: Send + Sync + 'static {
    /// Creates the order; returns its id.
    async fn create_order(&self, req: &SagaRequest, key: &str) -> Result<Uuid, StepError>;
    /// Reserves stock for the order; returns the reservation id.
    async fn reserve(
        &self,
        req: &SagaRequest,
        order_id: Uuid,
        key: &str,
    ) -> Result<Uuid, StepError>;
    /// Charges the order's total; returns the payment id.
    async fn pay(&self, req: &SagaRequest, order_id: Uuid, key: &str) -> Result<Uuid, StepError>;
    /// Moves the order to `status` (`confirmed`, `cancelled`).
    async fn set_order_status(
        &self,
        order_id: Uuid,
        status: &str,
        key: &str,
    ) -> Result<(), StepError>;
    /// Releases a reservation.
    async fn release(&self, reservation_id: Uuid, key: &str) -> Result<(), StepError>;
    /// Refunds a payment.
    async fn refund(&self, payment_id: Uuid, key: &str) -> Result<(), StepError>;

    /// Whether every service answers its health check right now.
    async fn ready(&self) -> bool {
        true
    }
}

/// Where the three services live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Base URL of the order service (`.../orders` is appended).
    pub order: String,
    /// Base URL of the inventory service.
    pub inventory: String,
    /// Base URL of the payment service.
    pub payment: String,
}

/// `GATEWAY_URL` when unset: the gateway on this host.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8000";

impl Endpoints {
    /// Through the gateway at `gateway` (its prefix routes strip `/order` etc.).
    pub fn via_gateway(gateway: &str) -> Self {
        let g = gateway.trim_end_matches('/');
        Self {
            order: format!("{g}/order"),
            inventory: format!("{g}/inventory"),
            payment: format!("{g}/payment"),
        }
    }

    /// From `lookup` (the environment): gateway default, per-service overrides.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let gateway =
            non_empty(lookup("GATEWAY_URL")).unwrap_or_else(|| DEFAULT_GATEWAY_URL.to_owned());
        let mut e = Self::via_gateway(&gateway);
        let trim = |s: String| s.trim_end_matches('/').to_owned();
        if let Some(u) = non_empty(lookup("ORDER_URL")) {
            e.order = trim(u);
        }
        if let Some(u) = non_empty(lookup("INVENTORY_URL")) {
            e.inventory = trim(u);
        }
        if let Some(u) = non_empty(lookup("PAYMENT_URL")) {
            e.payment = trim(u);
        }
        e
    }
}

/// Connect timeout per call: the services are local, a slow connect means they are down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-call timeout: above the gateway's own default so its retries can finish first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// [`Services`] over HTTP with hyper-util.
pub struct HttpServices {
    endpoints: Endpoints,
    client: JsonClient,
}

impl HttpServices {
    /// A client for `endpoints` with the default timeouts.
    pub fn new(endpoints: Endpoints) -> Self {
        Self {
            endpoints,
            client: JsonClient::new(CONNECT_TIMEOUT, REQUEST_TIMEOUT),
        }
    }

    async fn call(
        &self,
        service: &'static str,
        method: Method,
        url: String,
        body: Option<serde_json::Value>,
        key: &str,
    ) -> Result<JsonResponse, StepError> {
        let response = self
            .client
            .send(method, &url, body.as_ref(), &[("idempotency-key", key)])
            .await
            .map_err(|e: ClientError| StepError::Unavailable {
                service,
                detail: e.to_string(),
            })?;
        classify(service, response)
    }
}

/// 2xx: success; 408/429/5xx: no definitive answer (retry); other 4xx: a refusal (compensate).
fn classify(service: &'static str, r: JsonResponse) -> Result<JsonResponse, StepError> {
    let s = r.status;
    if s.is_success() {
        return Ok(r);
    }
    let text = |k: &str| {
        r.body
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS
    {
        return Err(StepError::Unavailable {
            service,
            detail: format!("{s} {}", text("message")),
        });
    }
    Err(StepError::Rejected {
        service,
        status: s.as_u16(),
        kind: text("error"),
        message: text("message"),
    })
}

fn id_of(service: &'static str, r: &JsonResponse) -> Result<Uuid, StepError> {
    r.body
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| StepError::Unavailable {
            service,
            detail: "answer without an id".to_owned(),
        })
}

fn amount(d: Decimal) -> serde_json::Value {
    serde_json::Value::String(d.to_string())
}

#[async_trait]
impl Services for HttpServices {
    async fn create_order(&self, req: &SagaRequest, key: &str) -> Result<Uuid, StepError> {
        let body = serde_json::json!({
            "customer_id": req.customer_id,
            "product_id": req.product_id,
            "quantity": req.quantity,
            "total_amount": amount(req.total_amount),
        });
        let r = self
            .call(
                "order",
                Method::POST,
                format!("{}/orders", self.endpoints.order),
                Some(body),
                key,
            )
            .await?;
        id_of("order", &r)
    }

    async fn reserve(
        &self,
        req: &SagaRequest,
        order_id: Uuid,
        key: &str,
    ) -> Result<Uuid, StepError> {
        let body = serde_json::json!({
            "product_id": req.product_id,
            "quantity": req.quantity,
            "order_id": order_id,
        });
        let url = format!("{}/reservations", self.endpoints.inventory);
        let r = self
            .call("inventory", Method::POST, url, Some(body), key)
            .await?;
        id_of("inventory", &r)
    }

    async fn pay(&self, req: &SagaRequest, order_id: Uuid, key: &str) -> Result<Uuid, StepError> {
        let body = serde_json::json!({
            "order_id": order_id,
            "amount": amount(req.total_amount),
            "customer_id": req.customer_id,
        });
        let url = format!("{}/payments", self.endpoints.payment);
        let r = self
            .call("payment", Method::POST, url, Some(body), key)
            .await?;
        id_of("payment", &r)
    }

    async fn set_order_status(
        &self,
        order_id: Uuid,
        status: &str,
        key: &str,
    ) -> Result<(), StepError> {
        let url = format!("{}/orders/{order_id}", self.endpoints.order);
        let body = serde_json::json!({ "status": status });
        self.call("order", Method::PATCH, url, Some(body), key)
            .await?;
        Ok(())
    }

    async fn release(&self, reservation_id: Uuid, key: &str) -> Result<(), StepError> {
        let url = format!("{}/reservations/{reservation_id}", self.endpoints.inventory);
        self.call("inventory", Method::DELETE, url, None, key)
            .await?;
        Ok(())
    }

    async fn refund(&self, payment_id: Uuid, key: &str) -> Result<(), StepError> {
        let url = format!("{}/payments/{payment_id}/refund", self.endpoints.payment);
        self.call("payment", Method::POST, url, None, key).await?;
        Ok(())
    }

    async fn ready(&self) -> bool {
        for base in [
            &self.endpoints.order,
            &self.endpoints.inventory,
            &self.endpoints.payment,
        ] {
            let url = format!("{base}/health");
            match self.client.send(Method::GET, &url, None, &[]).await {
                Ok(r) if r.status.is_success() => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn endpoints_default_to_the_gateway_with_overrides() {
        let env: HashMap<&str, &str> = [("PAYMENT_URL", "http://127.0.0.1:9/")]
            .into_iter()
            .collect();
        let e = Endpoints::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(e.order, "http://127.0.0.1:8000/order");
        assert_eq!(e.inventory, "http://127.0.0.1:8000/inventory");
        assert_eq!(e.payment, "http://127.0.0.1:9");
    }

    #[test]
    fn classification() {
        let r = |s: u16| JsonResponse {
            status: StatusCode::from_u16(s).unwrap(),
            body: serde_json::json!({"error": "payment_declined", "message": "no"}),
        };
        assert!(classify("p", r(201)).is_ok());
        assert!(matches!(
            classify("p", r(402)),
            Err(StepError::Rejected { status: 402, .. })
        ));
        assert!(matches!(
            classify("p", r(503)),
            Err(StepError::Unavailable { .. })
        ));
        assert!(matches!(
            classify("p", r(429)),
            Err(StepError::Unavailable { .. })
        ));
    }
}
