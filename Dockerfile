# One image with every binary (gateway, the five services, stack); compose picks the command.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/gateway target/release/stack target/release/order-service \
       target/release/payment-service target/release/inventory-service \
       target/release/notification-service target/release/saga-orchestrator /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 app
COPY --from=build /out/ /usr/local/bin/
COPY config/ /etc/gateway/
USER app
WORKDIR /home/app
EXPOSE 8000 9000
CMD ["gateway", "--config", "/etc/gateway/gateway.docker.toml"]
