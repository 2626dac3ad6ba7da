//! `payment-service`: serves the payment API on `--listen`; backends from DATABASE_URL / AMQP_URL.

use services_common::run::{Binary, Serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "payment-service",
        about: "The payment service",
        listen_env: "PAYMENT_LISTEN",
        default_listen: "0.0.0.0:8002",
    };
    binary
        .main(|settings, bus| async move {
            let service = payment_service::build(&settings, bus).await?;
            Ok(Serve::new(payment_service::app(service.state)).relay(service.relay))
        })
        .await
}
