//! Integration tests: the real gateway on port 0 in front of in-process fake upstreams.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod admin;
mod balance;
mod errors;
mod h2_and_relay;
mod headers;
mod idle;
mod pool;
mod protocols;
mod reload;
mod requests;
mod responses;
mod routing;
mod shutdown;
mod stalls;
mod streaming;
mod upstream_h1;
mod workers;

use gateway_test_support::{within, FakeUpstream, TestGateway};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A raw connection to the gateway that has sent `bytes`.
pub(crate) async fn send_raw(gw: &TestGateway, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// An `[upstreams.NAME]` table listing the fakes, plus any extra settings.
pub(crate) fn upstream(name: &str, endpoints: &[&FakeUpstream], extra: &str) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|u| format!("\"{}\"", u.authority()))
        .collect();
    format!(
        "[upstreams.{name}]\nendpoints = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A gateway on one worker thread (so all requests share one upstream pool) in front
/// of `[upstreams.up]` at `authority`: `server` lines for `[server]`, `upstream_extra`
/// lines for the upstream, and `routes` (all routes to "up" when empty).
pub(crate) async fn one_worker_gateway(
    server: &str,
    authority: &str,
    upstream_extra: &str,
    routes: &str,
) -> TestGateway {
    let routes = if routes.is_empty() {
        route("all", "/", "up", "")
    } else {
        routes.to_owned()
    };
    let config = format!(
        "[server]\n{server}\n[upstreams.up]\nendpoints = [\"{authority}\"]\n{upstream_extra}\n\n{routes}"
    );
    TestGateway::start_with_workers(&config, 1).await
}

/// A gateway whose one route takes request bodies of at most 1,024 bytes, and the fake
/// upstream behind it.
pub(crate) async fn behind_a_1024_byte_limit() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start("up").await;
    let config = [
        upstream("up", &[&up], ""),
        route("all", "/", "up", "max_request_body = 1024"),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    (up, gw)
}

/// A `[[routes]]` table; `extra` adds lines such as `strip_prefix = true`.
pub(crate) fn route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// One h2c connection to the gateway.
pub(crate) async fn h2_connection(
    gw: &TestGateway,
) -> hyper::client::conn::http2::SendRequest<gateway_test_support::TestBody> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (send, conn) = within(
        "the HTTP/2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// The status and `x-gateway-error` of an HTTP/2 GET of `uri` (its authority becomes
/// `:authority`), with `host` as a Host field as well when given.
pub(crate) async fn h2_get(gw: &TestGateway, uri: &str, host: Option<&str>) -> (u16, String) {
    use gateway_test_support::empty;
    let mut send = h2_connection(gw).await;
    let mut req = http::Request::get(uri);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let req = req.body(empty()).unwrap();
    let r = within("an HTTP/2 response", send.send_request(req))
        .await
        .unwrap();
    let kind = r
        .headers()
        .get("x-gateway-error")
        .map_or("", |v| v.to_str().unwrap())
        .to_owned();
    (r.status().as_u16(), kind)
}
