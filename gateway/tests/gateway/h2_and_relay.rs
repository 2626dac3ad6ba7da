//! Adversarial h2c clients and how upstream responses reach clients: limits on a
//! streamed h2 body, a stalled stream among others, a stream reset mid-response,
//! connection fields from the upstream, repeated `Set-Cookie`.

use bytes::Bytes;
use gateway_test_support::{
    answer, answer_then_close, chunked_body, empty, within, Answer, Client, FakeUpstream,
    ScriptedUpstream, TestGateway,
};
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    behind_a_1024_byte_limit, h2_connection as h2, one_worker_gateway, route, send_raw, upstream,
};

async fn scripted(script: Vec<Answer>, route_extra: &str) -> (ScriptedUpstream, TestGateway) {
    let up = ScriptedUpstream::start(script).await;
    let routes = route("all", "/", "up", route_extra);
    let gw = one_worker_gateway("", &up.authority(), "", &routes).await;
    (up, gw)
}

/// An h2c body over `max_request_body`, streamed without a content-length, gets a
/// 413 (or its stream reset), and never reaches the upstream whole.
#[tokio::test]
async fn an_h2c_body_streamed_over_the_limit_is_refused() {
    let (up, gw) = behind_a_1024_byte_limit().await;
    let mut send = h2(&gw).await;
    let (tx, body) = chunked_body();
    let req = Request::post(gw.url("/upload")).body(body).unwrap();
    let pending = tokio::spawn(send.send_request(req));
    for _ in 0..4 {
        if tx.send(Bytes::from(vec![b'x'; 800])).await.is_err() {
            break;
        }
    }
    drop(tx);
    match within("the answer", pending).await.unwrap() {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.to_string().contains("reset") || e.is_canceled(), "{e:?}"),
    }
    assert!(*up.uploaded().borrow() <= 1024, "the upstream got it all");
}

/// A stream whose upstream never answers does not hold up the other streams of the
/// same h2c connection.
#[tokio::test]
async fn a_stalled_h2c_stream_does_not_block_its_siblings() {
    let silent = ScriptedUpstream::start(vec![answer(b"")]).await;
    let fast = FakeUpstream::start("fast").await;
    let config = format!(
        "[upstreams.silent]\nendpoints = [\"{}\"]\nrequest_timeout = \"30s\"\n\n{}{}{}",
        silent.authority(),
        upstream("fast", &[&fast], ""),
        route("stall", "/stall", "silent", ""),
        route("fast", "/", "fast", ""),
    );
    let gw = TestGateway::start(&config).await;
    let mut send = h2(&gw).await;
    let stalled =
        tokio::spawn(send.send_request(Request::get(gw.url("/stall")).body(empty()).unwrap()));
    let mut others = Vec::new();
    for i in 0..20 {
        let req = Request::get(gw.url(&format!("/f{i}")))
            .body(empty())
            .unwrap();
        others.push(send.send_request(req));
    }
    for r in others {
        let r = within("a sibling stream", r).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(!stalled.is_finished());
    stalled.abort();
}

/// A client that resets its stream mid-response leaves no dirty upstream connection
/// behind: the next request gets its own answer, on a new connection.
#[tokio::test]
async fn an_h2c_stream_reset_mid_response_does_not_leak_into_the_next_request() {
    let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100_000));
    let (up, gw) = scripted(
        vec![
            answer(&big),
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"),
        ],
        "",
    )
    .await;
    let mut send = h2(&gw).await;
    let r = within(
        "the first head",
        send.send_request(Request::get(gw.url("/a")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    let mut body = r.into_body();
    within("a first frame", body.frame())
        .await
        .unwrap()
        .unwrap();
    drop(body); // RST_STREAM(CANCEL)
    let r = within(
        "the second head",
        send.send_request(Request::get(gw.url("/b")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    let b = within("the second body", r.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(b, "second");
    assert_eq!(up.connections(), 2);
}

/// Connection-specific fields of an upstream head (RFC 9113 8.2.2) never reach an
/// h2c client, whose h2 would treat the response as malformed.
#[tokio::test]
async fn upstream_connection_fields_do_not_reach_an_h2c_client() {
    let (_up, gw) = scripted(
        vec![answer(
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\n\
              x-hop: 1\r\nproxy-connection: keep-alive\r\nupgrade: h2c\r\nte: trailers\r\n\
              transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )],
        "",
    )
    .await;
    let r = Client::h2c().get(&gw.url("/a")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
    for name in [
        "connection",
        "keep-alive",
        "x-hop",
        "proxy-connection",
        "upgrade",
        "te",
        "transfer-encoding",
    ] {
        assert!(r.headers.get(name).is_none(), "{name}: {:?}", r.headers);
    }
}

/// Repeated `Set-Cookie` fields stay separate (RFC 9110 5.3: they cannot be joined),
/// for HTTP/1.1 and h2c clients.
#[tokio::test]
async fn repeated_set_cookie_fields_stay_separate() {
    let head: &[u8] =
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\n\
        set-cookie: b=2\r\ncontent-length: 0\r\n\r\n";
    let (_up, gw) = scripted(vec![answer(head), answer(head)], "").await;
    let mut s = send_raw(
        &gw,
        b"GET /a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    let mut out = Vec::new();
    within("the response", s.read_to_end(&mut out))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(
        out.contains("\r\nset-cookie: a=1; expires=wed, 21 oct 2037 07:28:00 gmt\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nset-cookie: b=2\r\n"), "{out}");
    let r = Client::h2c().get(&gw.url("/b")).await;
    let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2, "{:?}", r.headers);
}

/// An h2c request with trailers goes up chunked with its trailers, and the answer
/// comes back.
#[tokio::test]
async fn an_h2c_request_with_trailers_goes_up_whole() {
    let (up, gw) = scripted(
        vec![answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")],
        "",
    )
    .await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sum", "abc".parse().unwrap());
    let (tx, body) = chunked_body();
    tx.send(Bytes::from_static(b"hello")).await.unwrap();
    drop(tx);
    let body = body.with_trailers(async move { Some(Ok(trailers)) });
    let mut send = h2(&gw).await;
    let req = Request::post(gw.url("/t"))
        .body(BodyExt::boxed(body))
        .unwrap();
    let r = within("the answer", send.send_request(req)).await.unwrap();
    assert_eq!(r.status(), 200);
    let request = up.requests().pop().unwrap().to_ascii_lowercase();
    assert!(
        request.contains("hello\r\n0\r\nx-sum: abc\r\n\r\n"),
        "{request}"
    );
}

/// An h2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal field without indexing, with a new name (no Huffman; short).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0, u8::try_from(name.len()).unwrap()];
    b.extend_from_slice(name.as_bytes());
    b.push(u8::try_from(value.len()).unwrap());
    b.extend_from_slice(value.as_bytes());
    b
}

/// The client preface, an empty SETTINGS, and a HEADERS block for stream 1 with
/// `method` (an HPACK static index: 0x82 GET, 0x83 POST), scheme http, path `/x`,
/// authority `t` and `extra` fields.
fn h2_request(method: u8, extra: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let mut block = vec![method, 0x86, 0x04, 2, b'/', b'x', 0x01, 1, b't'];
    for (n, v) in extra {
        block.extend(literal(n, v));
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(1, if end_stream { 0x5 } else { 0x4 }, 1, &block));
    out
}

/// What the gateway does with stream 1: `Ok(first header block byte)` for a
/// response head (0x88 is `:status 200`), `Err(code)` for a RST_STREAM or GOAWAY.
async fn stream_1_outcome(s: &mut tokio::net::TcpStream) -> Result<u8, u32> {
    let mut buf = Vec::new();
    within("an answer on stream 1", async {
        loop {
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let kind = buf[3];
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match (kind, stream) {
                    (1, 1) => return Ok(payload[0]),
                    (3, 1) => return Err(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                    (7, 0) => return Err(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                    _ => {}
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed without an answer on stream 1");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// RFC 9113 8.2.2: `te` may only be `trailers`; `te: gzip` makes the request
/// malformed, so it is refused and never forwarded. `te: trailers` goes through.
#[tokio::test]
async fn an_h2c_te_other_than_trailers_is_refused() {
    let (up, gw) = scripted(
        vec![answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")],
        "",
    )
    .await;
    let mut s = send_raw(&gw, &h2_request(0x82, &[("te", "gzip")], true)).await;
    let outcome = stream_1_outcome(&mut s).await;
    assert_ne!(outcome, Ok(0x88), "a malformed request was answered 200");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    let mut s = send_raw(&gw, &h2_request(0x82, &[("te", "trailers")], true)).await;
    assert_eq!(stream_1_outcome(&mut s).await, Ok(0x88));
}

/// RFC 9113 8.1.1: DATA that disagrees with `content-length` makes the request
/// malformed; the upstream must not get it as a complete request, nor have its
/// connection reused, and the next request gets its own answer.
#[tokio::test]
async fn an_h2c_content_length_longer_than_the_data_is_not_a_whole_request() {
    let (up, gw) = scripted(
        vec![answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond",
        )],
        "",
    )
    .await;
    let mut bytes = h2_request(0x83, &[("content-length", "10")], false);
    bytes.extend(frame(0, 0x1, 1, b"hello"));
    let mut s = send_raw(&gw, &bytes).await;
    let outcome = stream_1_outcome(&mut s).await;
    assert_ne!(outcome, Ok(0x88), "a short body was answered 200");
    let r = Client::h2c().get(&gw.url("/b")).await;
    assert_eq!(r.body, "second");
    let requests = up.requests();
    assert!(
        requests.last().unwrap().starts_with("GET /b"),
        "{requests:?}"
    );
}

/// Reads one response off a keep-alive HTTP/1.1 connection: the head, then a body of
/// its `content-length` or chunks (the test's own answers are small).
async fn one_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, bodiless: bool) -> String {
    within("a response", async {
        loop {
            let text = String::from_utf8_lossy(buf).into_owned();
            if let Some(at) = text.find("\r\n\r\n") {
                let head = text[..at].to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.trim().parse::<usize>().unwrap());
                let end = if bodiless {
                    Some(at + 4)
                } else if head.contains("transfer-encoding: chunked") {
                    text[at..].find("\r\n0\r\n\r\n").map(|e| at + e + 7)
                } else {
                    len.map(|n| at + 4 + n).filter(|e| *e <= buf.len())
                };
                if let Some(end) = end {
                    let out = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    return out;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-response: {text:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// RFC 9110 2.5: an intermediary "MUST send its own HTTP-version in forwarded
/// messages". An HTTP/1.0 upstream answer reaches an HTTP/1.1 client as HTTP/1.1,
/// framed so that the client's connection stays open (RFC 9112 9.3).
#[tokio::test]
async fn an_http10_upstream_answer_reaches_an_http11_client_as_http11() {
    let (_up, gw) = scripted(
        vec![
            answer(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 3\r\n\r\nold"),
            answer_then_close(b"HTTP/1.0 200 OK\r\n\r\nold-style"),
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"),
        ],
        "",
    )
    .await;
    let mut s = send_raw(&gw, b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let mut buf = Vec::new();
    let first = one_response(&mut s, &mut buf, false).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"GET /b HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let second = one_response(&mut s, &mut buf, false).await;
    assert!(
        second.starts_with("HTTP/1.1 200") && second.contains("old-style"),
        "{second}"
    );
    s.write_all(b"GET /c HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let last = one_response(&mut s, &mut buf, false).await;
    assert!(last.ends_with("last"), "{last:?}");
}

/// Upstream answers an HTTP/1.1 client gets on one keep-alive connection, each its
/// own: a HEAD answer that wrongly carries a body loses it; a 304 keeps its
/// `content-length` but sends no body (RFC 9110 8.6, 15.4.5; RFC 9112 6.3).
#[tokio::test]
async fn a_head_answer_with_a_body_and_a_304_with_a_length_leave_the_next_answer_alone() {
    let (_up, gw) = scripted(
        vec![
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
            answer(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\netag: \"e\"\r\n\r\n"),
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"),
        ],
        "",
    )
    .await;
    let mut s = send_raw(&gw, b"HEAD /b HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let mut buf = Vec::new();
    let head = one_response(&mut s, &mut buf, true).await;
    assert!(
        head.to_ascii_lowercase().contains("content-length: 5"),
        "{head}"
    );
    s.write_all(b"GET /c HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let not_modified = one_response(&mut s, &mut buf, true).await;
    assert!(not_modified.starts_with("HTTP/1.1 304"), "{not_modified}");
    s.write_all(b"GET /d HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let last = one_response(&mut s, &mut buf, false).await;
    assert!(
        last.starts_with("HTTP/1.1 200") && last.ends_with("last"),
        "{last:?}"
    );
}

/// An upstream that closes before the `content-length` it announced has the h2c
/// client's stream reset, never ended cleanly with END_STREAM.
#[tokio::test]
async fn an_upstream_body_cut_short_resets_the_h2c_stream() {
    let (_up, gw) = scripted(
        vec![answer_then_close(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
        )],
        "",
    )
    .await;
    let mut send = h2(&gw).await;
    let r = within(
        "the head",
        send.send_request(Request::get(gw.url("/a")).body(empty()).unwrap()),
    )
    .await;
    // A reset before the head went out is as good: no clean end either way.
    if let Ok(r) = r {
        let body = within("the body", r.into_body().collect()).await;
        assert!(
            body.is_err(),
            "a clean end: {:?}",
            body.map(|b| b.to_bytes())
        );
    }
}
