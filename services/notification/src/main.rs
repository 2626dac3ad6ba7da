//! `notification-service`: consumes events and serves `/notifications` on `--listen`.

use services_common::run::{Binary, Serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "notification-service",
        about: "The notification service",
        listen_env: "NOTIFICATION_LISTEN",
        default_listen: "0.0.0.0:8004",
    };
    binary
        .main(|settings, bus| async move {
            let service = notification_service::build(&settings, bus).await?;
            let consumer = service.consumer;
            Ok(Serve::new(notification_service::app(service.state))
                .spawn_awaited(|shutdown| consumer.run(shutdown)))
        })
        .await
}
