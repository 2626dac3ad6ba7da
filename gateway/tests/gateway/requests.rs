//! Adversarial client requests on the listener, sent as raw bytes where hyper's
//! client would normalise them: Host and request-target, hop-by-hop fields, framing,
//! `Expect`, pipelining and header limits.

use gateway_test_support::{answer, within, ScriptedUpstream, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{h2_get, one_worker_gateway, route, send_raw};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A gateway (one worker) with `server` settings and `routes` to `[upstreams.up]`, a
/// scripted upstream that answers `n` requests with `ok` and records what it read.
async fn scripted(n: usize, server: &str, routes: &str) -> (ScriptedUpstream, TestGateway) {
    let up = ScriptedUpstream::start(vec![answer(OK); n]).await;
    let gw = one_worker_gateway(server, &up.authority(), "", routes).await;
    (up, gw)
}

/// A gateway whose one route `/` goes to an upstream answering `n` requests.
async fn behind(n: usize) -> (ScriptedUpstream, TestGateway) {
    scripted(n, "", &route("all", "/", "up", "")).await
}

/// Routes for `Host: shop.example` only (a request for another host finds none).
fn shop_only() -> String {
    [
        route("shop", "/", "up", "host = \"shop.example\""),
        route("other", "/none", "up", ""),
    ]
    .concat()
}

/// Everything the gateway sends on `s` until it closes the connection.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    // A reset still leaves what came before it in `out`.
    let _ = within("the gateway to close", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// What the gateway answers to `request` (which asks it to close) before it closes.
async fn exchange(gw: &TestGateway, request: &[u8]) -> String {
    let mut s = send_raw(gw, request).await;
    until_closed(&mut s).await
}

/// The next `n` final responses on `s` (interim 1xx ones are skipped, and so is the
/// rest once the gateway closes), each head and body as text; bodies are framed by
/// `content-length`, as every answer in these tests is.
async fn responses(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    while out.len() < n {
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        let Some(end) = head_end else {
            if closed {
                break;
            }
            match within("a response", s.read(&mut chunk)).await {
                Ok(0) | Err(_) => closed = true,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < end + len && !closed {
            match within("a response body", s.read(&mut chunk)).await {
                Ok(0) | Err(_) => closed = true,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let whole = (end + len).min(buf.len());
        let text = String::from_utf8_lossy(&buf[..whole]).into_owned();
        buf.drain(..whole);
        if !head.starts_with("http/1.1 1") {
            out.push(text);
        }
    }
    out
}

/// The head fields of a request as the upstream read it, lowercased, without the
/// request line.
fn fields(request: &str) -> Vec<String> {
    request
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The request line the upstream read.
fn request_line(request: &str) -> &str {
    request.split("\r\n").next().unwrap_or_default()
}

/// Asserts a JSON error of the gateway's own with `status` and `kind`.
fn assert_json_error(out: &str, status: u16, kind: &str, what: &str) {
    assert!(
        out.starts_with(&format!("HTTP/1.1 {status} ")),
        "{what}: {out}"
    );
    assert!(
        out.contains(&format!("x-gateway-error: {kind}\r\n")),
        "{what}: {out}"
    );
    assert!(
        out.contains(&format!("\"error\":\"{kind}\"")),
        "{what}: {out}"
    );
}

/// RFC 9112 3.2: a Host field with an invalid value is a 400. Host is
/// `uri-host [":" port]` (RFC 9110 7.2): no userinfo, no path, digits for a port, and
/// not empty for an `http` target (RFC 9110 4.2.1). The gateway routes on the value
/// up to its last colon, so `shop.example:x@evil.example` takes the `shop.example`
/// route while an upstream that reads it as a URI authority sees host `evil.example`.
#[tokio::test]
async fn a_host_with_an_invalid_value_is_a_json_400() {
    let (up, gw) = scripted(8, "", &shop_only()).await;
    for host in [
        "shop.example:x@evil.example",
        "user@shop.example",
        "shop.example:abc",
        "shop.example/evil",
        "",
    ] {
        let request = format!("GET /x HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        let out = exchange(&gw, request.as_bytes()).await;
        assert_json_error(&out, 400, "bad_request", &format!("host {host:?}"));
    }
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// An absolute-form target's host is held to the same rule as a Host field: it is
/// what the request is routed on and what goes upstream as Host.
#[tokio::test]
async fn an_absolute_form_target_with_an_invalid_host_is_a_json_400() {
    let (up, gw) = scripted(2, "", &shop_only()).await;
    for target in ["http://x@shop.example/x", "http://shop.example:abc/x"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n");
        let out = exchange(&gw, request.as_bytes()).await;
        assert_json_error(&out, 400, "bad_request", target);
    }
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// The same over h2c, where the host comes as `:authority`: RFC 9113 8.3.1 forbids
/// userinfo in it for `http` URIs (the request is malformed).
#[tokio::test]
async fn an_http2_authority_with_userinfo_is_a_400() {
    let (up, gw) = scripted(2, "", &shop_only()).await;
    let got = h2_get(&gw, "http://shop.example:x@evil.example/x", None).await;
    assert_eq!(got, (400, "bad_request".to_owned()), "{:#?}", up.requests());
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// RFC 9112 3.2.2: a server that gets an absolute-form target MUST ignore Host and
/// use the target's authority, and a proxy MUST send a Host made from the target,
/// not the one received. The gateway routes on Host and sends it on.
#[tokio::test]
async fn an_absolute_form_target_overrides_the_host_field() {
    let (up, gw) = scripted(2, "", &shop_only()).await;
    let out = exchange(
        &gw,
        b"GET http://shop.example/x HTTP/1.1\r\nhost: other.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let sent = &up.requests()[0];
    assert_eq!(request_line(sent), "GET /x HTTP/1.1");
    assert!(
        fields(sent).contains(&"host: shop.example".to_owned()),
        "{sent}"
    );
}

/// RFC 9112 3.2: HTTP/1.1 without a Host field is a 400, even when its absolute-form
/// target names the host (nginx refuses it too).
#[tokio::test]
async fn an_http11_request_without_host_is_a_400_even_in_absolute_form() {
    let (up, gw) = behind(2).await;
    for request in [
        &b"GET http://a.example/x HTTP/1.1\r\nconnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n",
    ] {
        let out = exchange(&gw, request).await;
        assert_json_error(&out, 400, "bad_request", "no Host");
    }
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// RFC 9112 3.2.3-3.2.4: authority-form is for CONNECT only and asterisk-form for
/// OPTIONS only. `GET example.com:80` must not go on as `GET /`, nor `GET *` as it
/// is; and no route stands for the server-wide `OPTIONS *` (a route's rewrite would
/// make it a resource's `OPTIONS /v2/*`): the gateway refuses it, as nginx does.
#[tokio::test]
async fn request_targets_the_gateway_does_not_serve_are_refused() {
    let (up, gw) = behind(4).await;
    for target in ["example.com:80", "*"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n");
        let out = exchange(&gw, request.as_bytes()).await;
        assert_json_error(&out, 400, "bad_request", target);
    }
    assert!(up.requests().is_empty(), "{:#?}", up.requests());

    let (up, gw) = scripted(2, "", &route("all", "/", "up", "rewrite = \"/v2\"")).await;
    let out = exchange(
        &gw,
        b"OPTIONS * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_json_error(&out, 400, "bad_request", "OPTIONS *");
    let out = exchange(
        &gw,
        b"GET ftp://x/a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_json_error(&out, 400, "bad_request", "an ftp target");
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// README: hyper's parser takes at most 100 request fields (HAProxy's default limit
/// is 101); more get its own 431, without a JSON body, however small. Raising it
/// would cost every request a heap allocation (hyper keeps 100 slots on the stack).
#[tokio::test]
async fn a_hundred_request_fields_are_forwarded_and_more_get_431() {
    let (up, gw) = behind(2).await;
    // With `host` and `connection`: 100 fields, then 101.
    for (extra, ok) in [(98, true), (99, false)] {
        let many: String = (0..extra).map(|i| format!("x-h{i}: v\r\n")).collect();
        let request = format!("GET /x HTTP/1.1\r\nhost: x\r\n{many}connection: close\r\n\r\n");
        let out = exchange(&gw, request.as_bytes()).await;
        if ok {
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        } else {
            assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        }
    }
    let sent = up.requests();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(
        fields(&sent[0]).contains(&"x-h97: v".to_owned()),
        "{sent:#?}"
    );
}

/// `Connection` tokens in any case, with spaces or tabs around them, over several
/// lines (`keep-alive` on one, `close` on a later one) all name fields to remove;
/// the fixed hop-by-hop fields go whatever their value.
#[tokio::test]
async fn connection_tokens_in_any_case_spacing_and_lines_remove_their_fields() {
    let (up, gw) = behind(2).await;
    let out = exchange(
        &gw,
        b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: Keep-Alive , X-Foo\t\r\n\
          connection: X-BAR,,HTTP2-Settings\r\nx-foo: 1\r\nx-bar: 2\r\nx-kept: 3\r\n\
          te: gzip, trailers\r\nproxy-connection: keep-alive\r\nkeep-alive: timeout=5\r\n\
          upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\
          connection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    let sent = fields(&up.requests()[0]);
    for gone in [
        "connection:",
        "x-foo:",
        "x-bar:",
        "te:",
        "proxy-connection:",
        "keep-alive:",
        "upgrade:",
        "http2-settings:",
    ] {
        assert!(!sent.iter().any(|f| f.starts_with(gone)), "{gone} {sent:?}");
    }
    assert!(sent.contains(&"x-kept: 3".to_owned()), "{sent:?}");
}

/// An HTTP/1.0 client that asks for keep-alive keeps its connection and gets
/// HTTP/1.0 answers; the next request without it closes the connection, and an
/// upstream's chunked answer reaches it close-delimited (HTTP/1.0 has no chunks).
#[tokio::test]
async fn an_http10_client_gets_keep_alive_when_asked_and_no_chunks() {
    let up = ScriptedUpstream::start(vec![
        answer(OK),
        answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ])
    .await;
    let config = format!(
        "[upstreams.up]\nendpoints = [\"{}\"]\n\n{}",
        up.authority(),
        route("all", "/", "up", "")
    );
    let gw = TestGateway::start_with_workers(&config, 1).await;
    let out = exchange(
        &gw,
        b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = out.split("HTTP/1.0 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 2, "{out}");
    assert!(answers[0].contains("connection: keep-alive\r\n"), "{out}");
    assert!(!answers[1].contains("transfer-encoding"), "{out}");
    assert!(answers[1].ends_with("\r\n\r\nhello"), "{out}");
    let sent = up.requests();
    assert_eq!(request_line(&sent[0]), "GET /a HTTP/1.1");
    assert_eq!(request_line(&sent[1]), "GET /b HTTP/1.1");
    assert!(!fields(&sent[0])
        .iter()
        .any(|f| f.starts_with("connection:")));
}

/// RFC 9112 6.1: a request with both Content-Length and Transfer-Encoding is framed
/// by the chunks alone, and the connection closes after the answer: what follows on
/// it is never read as a request. It goes up chunked without the length.
#[tokio::test]
async fn content_length_beside_chunked_goes_up_chunked_and_the_connection_closes() {
    let (up, gw) = behind(3).await;
    for (lines, what) in [
        (
            "content-length: 3\r\ntransfer-encoding: chunked\r\n",
            "length first",
        ),
        (
            "transfer-encoding: chunked\r\ncontent-length: 30\r\n",
            "length last",
        ),
    ] {
        let request = format!(
            "POST /x HTTP/1.1\r\nhost: x\r\n{lines}\r\n3\r\nabc\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let out = exchange(&gw, request.as_bytes()).await;
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{what}: {out}");
        assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
        assert!(out.contains("connection: close\r\n"), "{what}: {out}");
    }
    for sent in up.requests() {
        let f = fields(&sent);
        assert!(!f.iter().any(|l| l.starts_with("content-length")), "{sent}");
        assert!(sent.ends_with("3\r\nabc\r\n0\r\n\r\n"), "{sent}");
        assert!(!sent.contains("smuggled"), "{sent}");
    }
    assert_eq!(up.requests().len(), 2);
}

/// A length given twice with one value goes up once; two different lengths, or a
/// list, are refused and never reach the upstream.
#[tokio::test]
async fn repeated_content_lengths_go_up_once_or_are_refused() {
    let (up, gw) = behind(2).await;
    let out = exchange(
        &gw,
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 3\r\n\
          connection: close\r\n\r\nabc",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let sent = &up.requests()[0];
    let lengths: Vec<String> = fields(sent)
        .into_iter()
        .filter(|f| f.starts_with("content-length"))
        .collect();
    assert_eq!(lengths, ["content-length: 3"], "{sent}");
    assert!(sent.ends_with("\r\n\r\nabc"), "{sent}");
    for lengths in [
        "content-length: 3\r\ncontent-length: 4\r\n",
        "content-length: 3, 3\r\n",
        "content-length: +3\r\n",
    ] {
        let request = format!(
            "POST /x HTTP/1.1\r\nhost: x\r\n{lengths}\r\nabcdGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let out = exchange(&gw, request.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{lengths}: {out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{lengths}: {out}");
    }
    assert_eq!(up.requests().len(), 1, "{:#?}", up.requests());
}

/// `Expect: 100-continue` with a body the gateway refuses by its head (too large,
/// no route): no `100 Continue`, the answer says `connection: close`, and the body
/// a client sends anyway is never read as a request of its own.
#[tokio::test]
async fn a_body_refused_before_100_continue_is_never_read_as_a_request() {
    let routes = route("o", "/order", "up", "max_request_body = 16");
    let (up, gw) = scripted(2, "", &routes).await;
    let smuggled = b"GET /order/smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    for (path, status) in [("/order/x", "413"), ("/other", "404")] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            smuggled.len()
        );
        let mut s = send_raw(&gw, head.as_bytes()).await;
        let first = responses(&mut s, 1).await;
        assert_eq!(first.len(), 1, "{path}");
        assert!(
            first[0].starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {first:?}"
        );
        assert!(first[0].contains("connection: close\r\n"), "{first:?}");
        // The client sends its body anyway, as RFC 9110 10.1.1 allows.
        let _ = s.write_all(smuggled).await;
        let rest = until_closed(&mut s).await;
        assert_eq!(rest, "", "{path}");
    }
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// A chunked body that passes the limit midway gets its 413 at once, and the
/// connection closes rather than waiting for (or reading as requests) the rest.
#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_and_the_connection_closes() {
    let (up, gw) = scripted(2, "", &route("all", "/", "up", "max_request_body = 16")).await;
    let mut s = send_raw(
        &gw,
        b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
          a\r\n0123456789\r\na\r\n0123456789\r\n",
    )
    .await;
    let out = until_closed(&mut s).await;
    assert_json_error(&out, 413, "body_too_large", "mid-stream");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    // The head may have gone up before the limit was passed; never a whole body.
    for sent in up.requests() {
        assert!(!sent.ends_with("0\r\n\r\n"), "{sent}");
    }
}

/// Pipelined requests, one refused by the gateway (two Hosts) and one by hyper's
/// parser (obs-fold, RFC 9112 5.2): answered in order, the one after the gateway's
/// 400 still served, nothing after the parse error read.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_around_bad_ones() {
    let (up, gw) = behind(4).await;
    let out = exchange(
        &gw,
        b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /2 HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n\
          GET /3 HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /4 HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n\
          GET /5 HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "400", "200", "400"], "{out}");
    assert!(out.contains("more than one Host header"), "{out}");
    let lines: Vec<String> = up
        .requests()
        .iter()
        .map(|r| request_line(r).to_owned())
        .collect();
    assert_eq!(lines, ["GET /1 HTTP/1.1", "GET /3 HTTP/1.1"]);
}

/// A GET's body goes up with its length; a chunked body's extensions are dropped (the
/// gateway chunks afresh); unknown methods go up as they came.
#[tokio::test]
async fn bodies_of_any_method_and_chunk_extensions_go_up_framed() {
    let (up, gw) = behind(3).await;
    for request in [
        &b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"[..],
        b"PURGE /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          3;name=\"v\"\r\nabc\r\n0;x\r\n\r\n",
    ] {
        let out = exchange(&gw, request).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let sent = up.requests();
    assert_eq!(request_line(&sent[0]), "GET /a HTTP/1.1");
    assert!(sent[0].contains("content-length: 3\r\n") && sent[0].ends_with("\r\n\r\nabc"));
    assert_eq!(request_line(&sent[1]), "PURGE /b HTTP/1.1");
    assert!(
        sent[1].ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "{}",
        sent[1]
    );
}

/// A `/../` in the query is no dot segment; the prefix's trailing slash strips to
/// `/`; a URI over `max_request_headers` is a JSON 431, one past hyper's buffer its
/// bare 414.
#[tokio::test]
async fn queries_prefixes_and_long_uris() {
    let routes = route("o", "/order", "up", "strip_prefix = true");
    let (up, gw) = scripted(2, "", &routes).await;
    for request in [
        &b"GET /order/?a=/../admin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"[..],
        b"GET /order/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    ] {
        let out = exchange(&gw, request).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let lines: Vec<String> = up
        .requests()
        .iter()
        .map(|r| request_line(r).to_owned())
        .collect();
    assert_eq!(lines, ["GET /?a=/../admin HTTP/1.1", "GET / HTTP/1.1"]);
    let long = format!(
        "GET /order/{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let out = exchange(&gw, long.as_bytes()).await;
    assert_json_error(&out, 431, "headers_too_large", "20 KB URI");
    let huge = format!(
        "GET /order/{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let out = exchange(&gw, huge.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414"), "{out}");
    assert_eq!(up.requests().len(), 2);
}
