//! Header hygiene: hop-by-hop removal both ways, X-Forwarded-*, X-Request-Id.

use gateway_test_support::{within, Client, FakeUpstream, ScriptedUpstream, TestGateway};
use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{route, upstream};

async fn gateway(server: &str, up: &FakeUpstream) -> TestGateway {
    TestGateway::start(
        &[
            server.to_owned(),
            upstream("up", &[up], ""),
            route("all", "/", "up", ""),
        ]
        .concat(),
    )
    .await
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_including_those_named_by_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway("", &up).await;
    let r = Client::default()
        .request(
            Method::GET,
            &gw.url("/echo"),
            &[
                ("connection", "keep-alive, x-private, x-forwarded-for"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("proxy-connection", "keep-alive"),
                ("upgrade", "websocket"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-custom", "kept"),
            ],
            "",
        )
        .await;
    let headers = &r.json()["headers"];
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    // hyper's client adds its own `connection` only when needed; never the client's value.
    assert!(headers
        .get("connection")
        .is_none_or(|v| !v.to_string().contains("x-private")));
    assert_eq!(headers["x-custom"][0], "kept");
    // Naming X-Forwarded-For in Connection does not let a client hide or forge it.
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");

    let r = Client::default().get(&gw.url("/hop")).await;
    assert_eq!(r.status, 200);
    for gone in ["x-upstream-private", "keep-alive", "proxy-authenticate"] {
        assert!(!r.headers.contains_key(gone), "{gone} reached the client");
    }
    assert_eq!(r.header("x-kept"), "yes");
}

/// The upstream gets exactly one Host: the client's, even when its `Connection`
/// header names `Host` (hop-by-hop removal takes it, the gateway puts it back).
#[tokio::test]
async fn the_upstream_gets_the_clients_host_once() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway("", &up).await;
    for extra in [&[][..], &[("connection", "host")][..]] {
        let mut headers = vec![("host", "shop.example")];
        headers.extend_from_slice(extra);
        let r = Client::default()
            .request(Method::GET, &gw.url("/echo"), &headers, "")
            .await;
        assert_eq!(r.status, 200, "{extra:?}");
        let h = &r.json()["headers"];
        assert_eq!(
            h["host"],
            serde_json::json!(["shop.example"]),
            "{extra:?}: {h}"
        );
    }
}

#[tokio::test]
async fn forwarding_headers_are_replaced_for_untrusted_peers() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway("", &up).await;
    let r = Client::default()
        .request(
            Method::GET,
            &gw.url("/echo"),
            &[
                ("host", "shop.example"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "for=6.6.6.6"),
            ],
            "",
        )
        .await;
    let h = &r.json()["headers"];
    // Each once: the gateway's values replace the client's.
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["shop.example"]));
    assert_eq!(h["host"], serde_json::json!(["shop.example"]));
    assert!(h.get("forwarded").is_none());
}

#[tokio::test]
async fn forwarding_headers_from_trusted_proxies_are_extended() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway("[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n", &up).await;
    let r = Client::default()
        .request(
            Method::GET,
            &gw.url("/echo"),
            &[
                ("host", "edge.internal"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "shop.example"),
            ],
            "",
        )
        .await;
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["shop.example"]));
}

#[tokio::test]
async fn request_ids_are_generated_passed_on_and_returned() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway("", &up).await;
    let c = Client::default();
    let r = c.get(&gw.url("/echo")).await;
    let id = r.header("x-request-id").to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(r.json()["headers"]["x-request-id"][0], id.as_str());
    assert_ne!(c.get(&gw.url("/echo")).await.header("x-request-id"), id);

    let r = c
        .request(
            Method::GET,
            &gw.url("/echo"),
            &[("x-request-id", "trace-42")],
            "",
        )
        .await;
    assert_eq!(r.header("x-request-id"), "trace-42");
    assert_eq!(
        r.json()["headers"]["x-request-id"],
        serde_json::json!(["trace-42"])
    );

    // An id unfit to pass on is replaced, not sent alongside the gateway's own.
    let long = "a".repeat(200);
    let r = c
        .request(
            Method::GET,
            &gw.url("/echo"),
            &[("x-request-id", long.as_str())],
            "",
        )
        .await;
    let id = r.header("x-request-id").to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(r.json()["headers"]["x-request-id"], serde_json::json!([id]));
}

#[tokio::test]
async fn trailers_reach_an_http1_client_that_accepts_them() {
    // A raw upstream: a chunked response that declares and sends a trailer field.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut head, mut b) = (Vec::new(), [0u8; 1024]);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&b[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
              5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n",
        )
        .await
        .unwrap();
        let _ = s.read(&mut b).await;
    });
    let config = format!(
        "[upstreams.up]\nendpoints = [\"{addr}\"]\n\n{}",
        route("all", "/", "up", "")
    );
    let gw = TestGateway::start(&config).await;
    let response = Client::default()
        .send_streaming(
            Request::get(gw.url("/t"))
                .header("te", "trailers")
                .body(gateway_test_support::empty())
                .unwrap(),
        )
        .await;
    let body = within("body", response.into_body().collect())
        .await
        .unwrap();
    let checksum = body.trailers().and_then(|t| t.get("x-checksum")).cloned();
    assert_eq!(body.to_bytes(), "hello");
    assert_eq!(checksum.unwrap(), "abc", "the trailer was dropped");
}

/// A gateway (one worker) with one route `/` to a scripted upstream that answers
/// `n` requests with an empty 200, and records the heads it got.
async fn behind_empty_answers(n: usize) -> (ScriptedUpstream, TestGateway) {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let up = ScriptedUpstream::start(vec![gateway_test_support::answer(OK); n]).await;
    let config = format!(
        "[upstreams.up]\nendpoints = [\"{}\"]\n\n{}",
        up.authority(),
        route("all", "/", "up", "")
    );
    let gw = TestGateway::start_with_workers(&config, 1).await;
    (up, gw)
}

/// An h2 client may send its cookies as several `cookie` fields (for compression);
/// HTTP/1.1 allows one, and RFC 9113 8.2.3 has them joined with "; " on the way. An
/// HTTP/1.1 client's fields go on as they came.
#[tokio::test]
async fn an_h2c_clients_cookie_fields_reach_the_upstream_as_one() {
    let (up, gw) = behind_empty_answers(3).await;
    let two = [("cookie", "a=1"), ("x-a", "1"), ("cookie", "b=2")];
    let r = Client::h2c()
        .request(Method::GET, &gw.url("/two"), &two, "")
        .await;
    assert_eq!(r.status, 200);
    let one = [("cookie", "a=1")];
    let r = Client::h2c()
        .request(Method::GET, &gw.url("/one"), &one, "")
        .await;
    assert_eq!(r.status, 200);
    let r = Client::http1()
        .request(Method::GET, &gw.url("/h1"), &two, "")
        .await;
    assert_eq!(r.status, 200);
    let cookies = |head: &str| -> Vec<String> {
        head.split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("cookie:"))
            .map(str::to_owned)
            .collect()
    };
    let heads = up.requests();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(cookies(&heads[0]), ["cookie: a=1; b=2"], "{}", heads[0]);
    assert_eq!(cookies(&heads[1]), ["cookie: a=1"], "{}", heads[1]);
    assert_eq!(
        cookies(&heads[2]),
        ["cookie: a=1", "cookie: b=2"],
        "{}",
        heads[2]
    );
}

/// An upstream's trailer section goes on without connection-specific fields, which
/// HTTP/2 forbids (h2 would reset the stream, and the client lose the whole body's
/// end), nor framing, routing or the gateway's own fields, as for request trailers.
#[tokio::test]
async fn response_trailers_reach_an_h2c_client_without_connection_fields() {
    let up = gateway_test_support::ScriptedUpstream::start(vec![gateway_test_support::answer(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
          5\r\nhello\r\n0\r\nx-checksum: abc\r\nconnection: x-checksum\r\n\
          keep-alive: timeout=5\r\nproxy-connection: close\r\ntransfer-encoding: chunked\r\n\
          upgrade: h2c\r\nte: gzip\r\ncontent-length: 5\r\nx-request-id: spoofed\r\n\r\n",
    )])
    .await;
    let config = format!(
        "[upstreams.up]\nendpoints = [\"{}\"]\n\n{}",
        up.authority(),
        route("all", "/", "up", "")
    );
    let gw = TestGateway::start(&config).await;
    let response = Client::h2c()
        .send_streaming(
            Request::get(gw.url("/t"))
                .body(gateway_test_support::empty())
                .unwrap(),
        )
        .await;
    let body = within("body", response.into_body().collect())
        .await
        .expect("the stream ends cleanly");
    let trailers = body.trailers().cloned().expect("trailers");
    assert_eq!(body.to_bytes(), "hello");
    let names: Vec<&str> = trailers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-checksum"], "{trailers:?}");
    assert_eq!(trailers["x-checksum"], "abc");
}

/// The upstream gets `Host` as the first field when the gateway supplies it (an
/// HTTP/1.0 request without one, an HTTP/2 request's `:authority`, a Host the client
/// named in `Connection`), as RFC 9112 3.2 asks of a client; and the client's own
/// Host where the client put it otherwise.
#[tokio::test]
async fn the_host_the_gateway_supplies_comes_first() {
    let (up, gw) = behind_empty_answers(4).await;
    for request in [
        &b"GET /old HTTP/1.0\r\nx-a: 1\r\n\r\n"[..],
        b"GET /named HTTP/1.1\r\nx-a: 1\r\nhost: shop.example\r\nconnection: host\r\n\r\n",
        b"GET /kept HTTP/1.1\r\nx-a: 1\r\nhost: shop.example\r\nconnection: keep-alive\r\n\r\n",
    ] {
        let mut s = crate::send_raw(&gw, request).await;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = within("response", s.read(&mut buf)).await.unwrap();
            assert!(n > 0, "closed before a response");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1."),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let r = Client::h2c().get(&gw.url("/h2")).await;
    assert_eq!(r.status, 200);

    let heads = up.requests();
    assert_eq!(heads.len(), 4, "{heads:?}");
    let fields = |head: &str| -> Vec<String> {
        head.split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.to_ascii_lowercase())
            .collect()
    };
    let authority = up.authority();
    for (head, host) in [
        (&heads[0], format!("host: {authority}")),
        (&heads[1], "host: shop.example".to_owned()),
        (&heads[3], format!("host: 127.0.0.1:{}", gw.addr.port())),
    ] {
        let f = fields(head);
        assert_eq!(f[0], host, "{head}");
        assert_eq!(
            f.iter().filter(|l| l.starts_with("host:")).count(),
            1,
            "{head}"
        );
    }
    let kept = fields(&heads[2]);
    assert_eq!(kept[0], "x-a: 1", "{}", heads[2]);
    assert_eq!(kept[1], "host: shop.example", "{}", heads[2]);
    assert_eq!(kept.iter().filter(|l| l.starts_with("host:")).count(), 1);
}
