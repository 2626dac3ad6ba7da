//! `order-service`: serves the order API on `--listen`; backends from DATABASE_URL / AMQP_URL.

use services_common::run::{Binary, Serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "order-service",
        about: "The order service",
        listen_env: "ORDER_LISTEN",
        default_listen: "0.0.0.0:8001",
    };
    binary
        .main(|settings, bus| async move {
            let service = order_service::build(&settings, bus).await?;
            Ok(Serve::new(order_service::app(service.state)).relay(service.relay))
        })
        .await
}
