//! `inventory-service`: serves the inventory API on `--listen`; backends from DATABASE_URL / AMQP_URL.

use services_common::run::{Binary, Serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "inventory-service",
        about: "The inventory service",
        listen_env: "INVENTORY_LISTEN",
        default_listen: "0.0.0.0:8003",
    };
    binary
        .main(|settings, bus| async move {
            let service = inventory_service::build(&settings, bus).await?;
            Ok(Serve::new(inventory_service::app(service.state)).relay(service.relay))
        })
        .await
}
