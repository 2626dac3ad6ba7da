//! Every error the gateway makes itself: status, JSON body and the marker header.

use std::time::Duration;

use gateway_test_support::{within, Client, FakeUpstream, TestGateway, TestResponse};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{behind_a_1024_byte_limit, h2_get, route, send_raw, upstream};

fn assert_gateway_error(r: &TestResponse, status: u16, kind: &str) {
    assert_eq!(
        r.status,
        status,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("x-gateway-error"), kind);
    assert_eq!(r.header("content-type"), "application/json");
    let body = r.json();
    assert_eq!(body["error"], kind);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(body["request_id"], r.header("x-request-id"));
}

async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

#[tokio::test]
async fn no_route_no_endpoint_and_connect_failure() {
    let dead = closed_port().await;
    let config = format!(
        "[upstreams.empty]\nendpoints = []\n[upstreams.dead]\nendpoints = [\"{dead}\"]\n{}{}",
        route("empty", "/empty", "empty", ""),
        route("dead", "/dead", "dead", "")
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::default();
    assert_gateway_error(&c.get(&gw.url("/nowhere")).await, 404, "no_route");
    assert_gateway_error(&c.get(&gw.url("/empty/x")).await, 503, "no_endpoint");
    assert_gateway_error(&c.get(&gw.url("/dead/x")).await, 502, "connect_failed");
}

/// A gateway with a 200 ms response timeout in front of one upstream, which holds
/// `/hold` requests until released.
async fn behind_a_slow_upstream() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start("slow").await;
    let config = [
        upstream("slow", &[&up], "request_timeout = \"200ms\""),
        route("all", "/", "slow", ""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    (up, gw)
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504() {
    let (up, gw) = behind_a_slow_upstream().await;
    let r = Client::default().get(&gw.url("/hold")).await;
    assert_gateway_error(&r, 504, "upstream_timeout");
    up.hold().release(1);
}

/// The response timeout of a request with a body starts when the body has ended
/// (`the_response_timeout_starts_after_the_upload_so_slow_uploads_finish`), and does
/// start then: an upstream whose socket takes the whole upload (it never reads it)
/// and never answers gets a 504.
#[tokio::test]
async fn an_upstream_silent_after_an_upload_times_out_with_504() {
    let (up, gw) = behind_a_slow_upstream().await;
    let (tx, response) = gw.start_upload("/hold");
    for _ in 0..2 {
        tx.send(bytes::Bytes::from_static(&[1u8; 1024]))
            .await
            .expect("upload");
    }
    drop(tx);
    up.hold().arrived().await;
    let r = within("the timeout after the upload", response)
        .await
        .expect("client task");
    assert_gateway_error(&r, 504, "upstream_timeout");
    up.hold().release(1);
}

/// Each upstream connection keeps one timer for the response-head timeout of its
/// exchanges, moved for each: a reused connection times out each request on its own
/// deadline, whether its timer last fired while the connection idled or not.
#[tokio::test]
async fn a_reused_connection_times_out_each_request_on_its_own_deadline() {
    let up = FakeUpstream::start("slow").await;
    let config = [
        upstream("slow", &[&up], "request_timeout = \"300ms\""),
        route("all", "/", "slow", ""),
    ]
    .concat();
    let gw = TestGateway::start_with_workers(&config, 1).await;
    let c = Client::default();
    for idle in [Duration::ZERO, Duration::from_millis(600)] {
        assert_eq!(c.get(&gw.url("/fast")).await.status, 200);
        // Past the last deadline when idle is 600 ms: the timer fires while the
        // connection waits in the pool, and must be armed again by the next request.
        tokio::time::sleep(idle).await;
        let started = std::time::Instant::now();
        let r = c.get(&gw.url("/hold")).await;
        assert_gateway_error(&r, 504, "upstream_timeout");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "timed out after {waited:?}, before its own deadline"
        );
        // The gateway gave up the held request's connection; nothing to release.
    }
    // Each held request went on the connection its `/fast` opened (and the gateway
    // closed it after the timeout).
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_whether_announced_or_streamed() {
    let (up, gw) = behind_a_1024_byte_limit().await;
    let c = Client::default();

    let r = c
        .request(Method::POST, &gw.url("/upload"), &[], vec![0u8; 2048])
        .await;
    assert_gateway_error(&r, 413, "body_too_large");
    assert_eq!(
        up.hits(),
        0,
        "an announced oversize body never reaches the upstream"
    );

    // Chunked: the limit is only known to be passed midway.
    let (tx, pending) = gw.start_upload("/upload");
    tx.send(vec![0u8; 800].into()).await.unwrap();
    tx.send(vec![0u8; 800].into()).await.unwrap();
    drop(tx);
    let r = within("413 for a streamed body", pending).await.unwrap();
    assert_gateway_error(&r, 413, "body_too_large");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let up = FakeUpstream::start("up").await;
    let config = [
        "[server]\nmax_request_headers = \"4KiB\"\n".to_owned(),
        upstream("up", &[&up], ""),
        route("all", "/", "up", ""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let big = "x".repeat(6000);
    let r = Client::default()
        .request(Method::GET, &gw.url("/"), &[("x-big", &big)], "")
        .await;
    assert_gateway_error(&r, 431, "headers_too_large");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn http11_without_host_is_a_json_400() {
    let (out, hits) = raw_answer(b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("x-gateway-error: bad_request"), "{out}");
    assert!(out.contains("\"error\":\"bad_request\""), "{out}");
    assert_eq!(hits, 0);
}

/// What a gateway in front of one upstream answers to `request`, sent as raw bytes (it
/// must ask the gateway to close), and how many requests reached the upstream.
async fn raw_answer(request: &[u8]) -> (String, usize) {
    let up = FakeUpstream::start("up").await;
    let config = [upstream("up", &[&up], ""), route("all", "/", "up", "")].concat();
    let gw = TestGateway::start(&config).await;
    let mut s = send_raw(&gw, request).await;
    let mut out = String::new();
    within("raw response", s.read_to_string(&mut out))
        .await
        .unwrap();
    (out, up.hits())
}

/// Two Host headers: the gateway would route on one while the upstream might read the
/// other (RFC 9112 3.2 says 400).
#[tokio::test]
async fn two_host_headers_are_a_json_400() {
    let (out, hits) = raw_answer(
        b"GET /x HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("more than one Host header"), "{out}");
    assert_eq!(hits, 0);
}

/// hyper takes a request whose last transfer coding is `chunked` and decodes the
/// chunks; the gateway would pass the rest on undecoded, and unannounced, since
/// `Transfer-Encoding` is hop-by-hop. RFC 9112 6.1: a coding the server does not
/// understand is a 501.
#[tokio::test]
async fn a_request_with_a_transfer_coding_other_than_chunked_gets_501() {
    for codings in [
        "transfer-encoding: gzip, chunked\r\n",
        "transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked, chunked\r\n",
    ] {
        let request = format!(
            "POST /x HTTP/1.1\r\nhost: x\r\n{codings}connection: close\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\n"
        );
        let (out, hits) = raw_answer(request.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 501"), "{codings}: {out}");
        assert!(
            out.contains("x-gateway-error: unsupported_transfer_coding"),
            "{codings}: {out}"
        );
        assert!(
            out.contains("\"error\":\"unsupported_transfer_coding\""),
            "{codings}: {out}"
        );
        assert_eq!(hits, 0, "{codings}");
    }
    // Plain `chunked` goes through.
    let (out, hits) = raw_answer(
        b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(hits, 1);
}

/// An HTTP/2 request with a Host field that names another host than its `:authority`
/// is malformed (RFC 9113 8.3.1): the gateway would route on one while the upstream
/// might read the other. Both compared as an intermediary must: case aside, and the
/// scheme's default port aside.
#[tokio::test]
async fn an_http2_host_that_differs_from_the_authority_is_a_400() {
    let up = FakeUpstream::start("up").await;
    let config = [upstream("up", &[&up], ""), route("all", "/", "up", "")].concat();
    let gw = TestGateway::start(&config).await;
    for (uri, host) in [
        ("http://shop.example/x", "evil.example"),
        ("http://shop.example/x", "shop.example:8080"),
        ("http://shop.example:8080/x", "shop.example"),
    ] {
        let got = h2_get(&gw, uri, Some(host)).await;
        assert_eq!(got, (400, "bad_request".to_owned()), "{uri} with {host}");
    }
    assert_eq!(up.hits(), 0);
    for (uri, host) in [
        ("http://shop.example/x", "shop.example"),
        ("http://Shop.Example/x", "shop.EXAMPLE"),
        ("http://shop.example/x", "shop.example:80"),
        ("http://shop.example:80/x", "shop.example"),
        ("http://[::1]/x", "[::1]:80"),
    ] {
        let got = h2_get(&gw, uri, Some(host)).await;
        assert_eq!(got, (200, String::new()), "{uri} with {host}");
    }
}

#[tokio::test]
async fn dot_segments_and_connect_are_refused_with_400() {
    let up = FakeUpstream::start("up").await;
    let config = [
        upstream("up", &[&up], ""),
        route("order", "/order", "up", "strip_prefix = true"),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let c = Client::default();
    // Also what becomes a dot segment to a server that drops `;` parameters (Tomcat's
    // `..;/`) or splits at `%2f`, `%5c` or `\` (decoding first, or on Windows).
    for path in [
        "/order/../admin",
        "/order/%2e%2E/admin",
        "/order/./x",
        "/order/..;/admin",
        "/order/.;x/",
        "/order/%2e%2e%2fadmin",
        "/order/..%2Fadmin",
        "/order/..%5cadmin",
        "/order/.%5C",
        "/order/..\\admin",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        within("raw response", s.read_to_string(&mut out))
            .await
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(
            out.contains("x-gateway-error: bad_request"),
            "{path}: {out}"
        );
    }
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = within("CONNECT response", s.read(&mut buf)).await.unwrap();
    let out = String::from_utf8_lossy(&buf[..n]);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(up.hits(), 0);
    assert_eq!(
        c.get(&gw.url("/order/v1.2/x")).await.json()["path"],
        "/v1.2/x"
    );
    // Encoded slashes and parameters are no dot segments by themselves.
    for path in ["/a%2Fb", "/a;b/c", "/v1.2;x/..x", "/...%2f"] {
        let r = c.get(&gw.url(&format!("/order{path}"))).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["path"], path);
    }
}

#[tokio::test]
async fn an_upstream_that_drops_the_connection_gets_502() {
    // A "server" that accepts and closes at once.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let config = format!(
        "[upstreams.rude]\nendpoints = [\"{addr}\"]\n{}",
        route("all", "/", "rude", "")
    );
    let gw = TestGateway::start(&config).await;
    let r = within("502", Client::default().get(&gw.url("/x"))).await;
    assert_gateway_error(&r, 502, "upstream_failed");
    // The gateway keeps serving.
    tokio::time::timeout(Duration::from_secs(5), Client::default().get(&gw.url("/x")))
        .await
        .unwrap();
}
