//! How the gateway reads upstream responses (its own HTTP/1.1 client): framing by
//! chunks, length or close; interim answers; malformed heads and bodies; when a
//! connection is reused and when it is not; and when a request goes again on another
//! connection. The upstream is a script of raw bytes ([`ScriptedUpstream`]).

use std::time::Duration;

use gateway_test_support::{
    answer, answer_then_close, full, within, Answer, Client, ScriptedUpstream, TestGateway,
};
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{one_worker_gateway, send_raw};

/// The gateway on one worker thread: these tests count the upstream connections that
/// several client connections' requests share, and each worker has a pool of its own.
async fn gateway_for(authority: &str) -> TestGateway {
    one_worker_gateway("", authority, "", "").await
}

async fn scripted(script: Vec<Answer>) -> (ScriptedUpstream, TestGateway) {
    let up = ScriptedUpstream::start(script).await;
    let gw = gateway_for(&up.authority()).await;
    (up, gw)
}

/// Checks a response whose body breaks its framing after the head: the client sees
/// it cut short (or nothing, when the gateway had not flushed the head yet), never a
/// gateway error and never a clean end; and the connection is not used again.
async fn cut_short(what: &str, broken: Answer) {
    let (up, gw) = scripted(vec![broken, answer(OK_SHORT)]).await;
    let out = raw(
        &gw,
        b"GET /a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !out.contains("x-gateway-error"),
        "{what}: too late for a 502: {out}"
    );
    assert!(!out.ends_with("0\r\n\r\n"), "{what}: a clean end: {out:?}");
    if let Some((_, body)) = out.split_once("\r\n\r\n") {
        assert!(
            !out.contains("content-length: 10") || body.len() < 10,
            "{what}: {out:?}"
        );
    }
    assert_eq!(
        Client::default().get(&gw.url("/b")).await.body,
        "ok",
        "{what}"
    );
    assert_eq!(up.connections(), 2, "{what}: the connection was reused");
}

const OK_SHORT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Everything a raw client gets for `request` until the gateway closes (the request
/// asks it to).
async fn raw(gw: &TestGateway, request: &[u8]) -> String {
    let mut s = send_raw(gw, request).await;
    let mut out = Vec::new();
    // A reset after a broken response still leaves what came before it in `out`.
    let _ = within("raw response", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_chunked_response_with_extensions_and_trailers_arrives_whole_and_reuses_its_connection() {
    let (up, gw) = scripted(vec![
        answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-digest: abc\r\n\r\n",
        ),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    let r = c.get(&gw.url("/a")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello world");
    let r = c.get(&gw.url("/b")).await;
    assert_eq!(r.body, "ok");
    assert_eq!(up.connections(), 1, "the connection was reused");
}

#[tokio::test]
async fn a_length_delimited_response_reuses_its_connection() {
    let (up, gw) = scripted(vec![
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nx-a: 1\r\n\r\nhello world"),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    let r = c.get(&gw.url("/a")).await;
    assert_eq!(r.body, "hello world");
    assert_eq!(r.header("x-a"), "1");
    assert_eq!(r.header("content-length"), "11");
    assert_eq!(c.get(&gw.url("/b")).await.body, "ok");
    assert_eq!(up.connections(), 1);
}

/// `Content-Length: 5, 5` (or the field twice) is one length said twice: accepted,
/// and forwarded as a single value (RFC 9110 8.6), since a client may refuse the list.
#[tokio::test]
async fn a_content_length_said_twice_is_forwarded_once() {
    let (_up, gw) = scripted(vec![
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello"),
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ])
    .await;
    for _ in 0..2 {
        let out = raw(
            &gw,
            b"GET /a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let lengths: Vec<&str> = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths, ["content-length: 5"], "{out}");
        assert_eq!(body, "hello", "{out}");
    }
}

#[tokio::test]
async fn a_response_delimited_by_close_is_read_to_the_close_and_its_connection_not_reused() {
    let (up, gw) = scripted(vec![
        answer_then_close(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/a")).await.body, "until the end");
    assert_eq!(c.get(&gw.url("/b")).await.body, "ok");
    assert_eq!(up.connections(), 2);
}

/// Transfer-Encoding and Content-Length together: read by the chunks (RFC 9112 6.3),
/// and the connection is not trusted afterwards.
#[tokio::test]
async fn chunked_wins_over_content_length_and_the_connection_is_then_dropped() {
    let (up, gw) = scripted(vec![
        answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/a")).await.body, "hello");
    assert_eq!(c.get(&gw.url("/b")).await.body, "ok");
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (_up, gw) = scripted(vec![answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
          HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
    )])
    .await;
    let r = Client::default().get(&gw.url("/a")).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, "done");
}

#[tokio::test]
async fn bodiless_responses_to_head_204_and_304_return_their_connection_at_once() {
    let (up, gw) = scripted(vec![
        // A HEAD answer announces the length of the body it does not send.
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
        answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        answer(b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    let head = Request::head(gw.url("/a"))
        .body(gateway_test_support::empty())
        .unwrap();
    let r = c.send(head).await;
    assert_eq!(
        (r.status, r.header("content-length")),
        (StatusCode::OK, "10")
    );
    assert_eq!(c.get(&gw.url("/b")).await.status, 204);
    assert_eq!(c.get(&gw.url("/c")).await.status, 304);
    assert_eq!(c.get(&gw.url("/d")).await.body, "ok");
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn http_1_0_responses_keep_their_connection_only_when_they_ask_to() {
    let (up, gw) = scripted(vec![
        answer(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\na"),
        answer(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb"),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/a")).await.body, "a");
    assert_eq!(c.get(&gw.url("/b")).await.body, "b");
    assert_eq!(up.connections(), 1);
    assert_eq!(c.get(&gw.url("/c")).await.body, "ok");
    assert_eq!(
        up.connections(),
        2,
        "the HTTP/1.0 answer without keep-alive ended it"
    );
}

#[tokio::test]
async fn connection_close_from_the_upstream_ends_the_connection() {
    let (up, gw) = scripted(vec![
        answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na"),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    let r = c.get(&gw.url("/a")).await;
    assert_eq!(r.body, "a");
    assert_eq!(r.header("connection"), "", "hop-by-hop, not forwarded");
    assert_eq!(c.get(&gw.url("/b")).await.body, "ok");
    assert_eq!(up.connections(), 2);
}

/// Each of these heads is refused with the gateway's own 502 (the client has seen
/// nothing yet), and the connection is dropped.
#[tokio::test]
async fn malformed_response_heads_are_a_json_502() {
    let mut too_large = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..2000 {
        too_large.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(30)).as_bytes());
    }
    too_large.extend_from_slice(b"content-length: 0\r\n\r\n");
    let mut too_many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        too_many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    too_many.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"HTTX/1.1 200 OK\r\n\r\n".to_vec()),
        (
            "conflicting lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
        ),
        (
            "bad length",
            b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\na".to_vec(),
        ),
        (
            "chunked in 1.0",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "101 unasked",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec(),
        ),
        (
            "a coding before chunked",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "a coding before chunked, in two fields",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n\
              2\r\nab\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "chunked twice",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "a coding after chunked",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\nab".to_vec(),
        ),
        ("head too large", too_large),
        ("too many fields", too_many),
        ("cut head", b"HTTP/1.1 200 OK\r\ncontent-len".to_vec()),
    ];
    for (what, bytes) in cases {
        let (_up, gw) = scripted(vec![answer_then_close(&bytes)]).await;
        let r = Client::default().get(&gw.url("/a")).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{what}");
        assert_eq!(r.json()["error"], "upstream_failed", "{what}");
    }
}

/// Once the head is out, a broken body can only cut the response short: the client
/// sees it incomplete (or nothing, when the gateway had not flushed the head yet),
/// never a clean end; and the connection is not reused.
#[tokio::test]
async fn a_broken_body_cuts_the_response_short() {
    let cases: Vec<(&str, &[u8])> = vec![
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        ),
        (
            "no CRLF after chunk data",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        ),
        (
            "closed before the length",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
        ),
        (
            "closed mid-chunk",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\nhello",
        ),
    ];
    for (what, bytes) in cases {
        cut_short(what, answer_then_close(bytes)).await;
    }
}

/// An upstream that sends more than it was asked for (two answers to one request)
/// cannot be trusted with the next request.
#[tokio::test]
async fn bytes_after_the_response_end_the_connection() {
    let mut two = OK_SHORT.to_vec();
    two.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra");
    let (up, gw) = scripted(vec![answer(&two), answer(OK_SHORT)]).await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/a")).await.body, "ok");
    assert_eq!(c.get(&gw.url("/b")).await.body, "ok");
    assert_eq!(up.connections(), 2);
}

/// An idle connection the upstream closed is noticed when it is taken, not used.
#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let (up, gw) = scripted(vec![answer_then_close(OK_SHORT), answer(OK_SHORT)]).await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/a")).await.body, "ok");
    // Let the close arrive and the gateway's event loop see it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.get(&gw.url("/b")).await.body, "ok");
    assert_eq!(up.connections(), 2);
}

/// The keep-alive race: the upstream closes a reused connection after reading the
/// request, without a byte of answer (its idle timeout crossed the request). A GET
/// goes again on a new connection; a POST with a body does not (the upstream may have
/// acted on it), and gets a 502.
#[tokio::test]
async fn a_request_the_upstream_closed_under_goes_again_only_when_repeatable() {
    let (up, gw) = scripted(vec![
        answer(OK_SHORT),
        answer_then_close(b""),
        answer(OK_SHORT),
        answer_then_close(b""),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/warm")).await.body, "ok");
    assert_eq!(c.get(&gw.url("/again")).await.body, "ok");
    assert_eq!(up.connections(), 2);
    let post = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/once"))
        .body(full("payload"))
        .unwrap();
    let r = c.send(post).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "upstream_failed");
    let requests = up.requests();
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("POST")).count(),
        1,
        "sent once: {requests:?}"
    );
}

/// An interim answer is an answer: a close after `103 Early Hints` is not the silent
/// close of the keep-alive race, and the request does not go again (the upstream has
/// seen it and started on it).
#[tokio::test]
async fn a_close_after_an_interim_answer_is_not_replayed() {
    let (up, gw) = scripted(vec![
        answer(OK_SHORT),
        answer_then_close(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/warm")).await.body, "ok");
    let r = c.get(&gw.url("/hinted")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "upstream_failed");
    let requests = up.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("GET /hinted"))
            .count(),
        1,
        "sent once: {requests:?}"
    );
}

/// An interim answer marks only its own exchange: once its final answer has come, the
/// connection's next request that meets a silent close (the keep-alive race) goes
/// again, as on a connection that never saw a 1xx.
#[tokio::test]
async fn after_an_interim_answer_the_next_silent_close_is_replayed() {
    let (up, gw) = scripted(vec![
        answer(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        answer_then_close(b""),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    assert_eq!(c.get(&gw.url("/hinted")).await.body, "ok");
    assert_eq!(c.get(&gw.url("/again")).await.body, "ok");
    assert_eq!(up.connections(), 2);
}

/// What the upstream reads: origin-form, HTTP/1.1, a length for bodies the client
/// sized, chunks for those it did not, and no framing for a GET.
#[tokio::test]
async fn requests_are_framed_for_the_upstream() {
    let (up, gw) = scripted(vec![
        answer(OK_SHORT),
        answer(OK_SHORT),
        answer(OK_SHORT),
        answer(OK_SHORT),
    ])
    .await;
    let c = Client::default();
    c.get(&gw.url("/get?q=1")).await;
    let post = |body| {
        Request::builder()
            .method(Method::POST)
            .uri(gw.url("/post"))
            .body(body)
            .unwrap()
    };
    c.send(post(full("12345"))).await;
    c.send(post(gateway_test_support::empty())).await;
    let (tx, body) = gateway_test_support::chunked_body();
    let sent = tokio::spawn(async move {
        tx.send(bytes::Bytes::from_static(b"abc")).await.unwrap();
        tx.send(bytes::Bytes::from_static(b"defgh")).await.unwrap();
    });
    c.send(post(body)).await;
    sent.await.unwrap();
    let r = up.requests();
    assert!(r[0].starts_with("GET /get?q=1 HTTP/1.1\r\n"), "{}", r[0]);
    assert!(!r[0].contains("content-length") && !r[0].contains("transfer-encoding"));
    assert!(r[1].contains("content-length: 5\r\n") && r[1].ends_with("\r\n\r\n12345"));
    assert!(r[2].contains("content-length: 0\r\n"), "{}", r[2]);
    assert!(r[3].contains("transfer-encoding: chunked\r\n"), "{}", r[3]);
    assert!(!r[3].contains("content-length"), "{}", r[3]);
    let (_, chunks) = r[3].split_once("\r\n\r\n").unwrap();
    assert_eq!(dechunk(chunks), "abcdefgh", "{chunks:?}");
}

/// The data of a chunked body that ends with its last chunk (no trailers).
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            assert_eq!(rest, "\r\n");
            return data;
        }
        data.push_str(&rest[..size]);
        assert_eq!(&rest[size..size + 2], "\r\n");
        body = &rest[size + 2..];
    }
}

/// RFC 9112 7.1: `chunk = chunk-size [ chunk-ext ] CRLF`, `chunk-size = 1*HEXDIG`,
/// and a chunk extension holds no bare LF (or other control bytes). A size line
/// without digits is not a last chunk, and a bare LF inside an extension is not part
/// of it: a parser that reads either differently than the upstream's framer (or than
/// any other hop) desyncs on the connection. hyper's decoder refuses both; httparse's
/// `parse_chunk_size` accepts both (an empty line reads as size 0).
#[tokio::test]
async fn chunk_size_lines_need_digits_and_no_bare_lf() {
    let cases: Vec<(&str, &[u8])> = vec![
        (
            "empty size line read as the last chunk",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n\r\n",
        ),
        (
            "extension without a size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n;x\r\n\r\n",
        ),
        (
            "bare LF inside an extension",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "whitespace for a size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n \r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        cut_short(what, answer(bytes)).await;
    }
}

/// The trailer section ends with CRLF too (RFC 9112 7.1.2): httparse's
/// `parse_headers` takes a bare LF for a line end, so `0\r\n\n` read as a clean end
/// (hyper's decoder does not), and the connection went back to the pool.
#[tokio::test]
async fn a_trailer_section_ended_by_a_bare_lf_is_not_a_clean_end() {
    let cases: Vec<(&str, &[u8])> = vec![
        (
            "empty section ended by LF",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
        ),
        (
            "field ended by LF",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: y\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        cut_short(what, answer(bytes)).await;
    }
}

/// An upstream that refuses an upload early (413 with `connection: close`) and
/// closes without reading the rest: the gateway's next write fails (reset), but the
/// answer is already there to read. The client should get the upstream's 413, not a
/// gateway 502.
#[tokio::test]
async fn an_early_refusal_followed_by_a_close_reaches_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\
                          connection: close\r\n\r\nbig!",
                    )
                    .await;
                // Closed with unread request bytes: a reset.
                drop(s);
            });
        }
    });
    let gw = gateway_for(&addr.to_string()).await;
    let len = 32 * 1024 * 1024;
    let mut s = send_raw(
        &gw,
        format!("POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: {len}\r\n\r\n").as_bytes(),
    )
    .await;
    let (mut rd, mut wr) = s.split();
    let writer = async {
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..(len / block.len()) {
            if wr.write_all(&block).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let (out, ()) = within("early refusal", async {
        tokio::select! {
            out = reader => (out, ()),
            () = async { writer.await; std::future::pending::<()>().await } => unreachable!(),
        }
    })
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

/// An upstream that answers at once with a large body while it reads the upload on
/// its own (a progress stream, say), and a client that reads the answer only once it
/// has sent its whole body (as many clients do). hyper's client task pushed the
/// upload on its own; here it only moves while the response body is polled, which
/// stops as soon as the client's socket is full: neither side moves again.
#[tokio::test]
async fn an_upload_after_an_early_answer_does_not_wait_for_the_answer_to_be_read() {
    const LEN: usize = 48 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let block = vec![b'y'; 64 * 1024];
        tokio::spawn(async move {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {LEN}\r\n\r\n");
            wr.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..(LEN / block.len()) {
                if wr.write_all(&block).await.is_err() {
                    return;
                }
            }
        });
        // Reads the request, head and body, on its own.
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                return;
            }
        }
    });
    let gw = gateway_for(&addr.to_string()).await;
    let mut s = send_raw(
        &gw,
        format!(
            "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: {LEN}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let block = vec![b'x'; 64 * 1024];
    within("the whole upload, before reading the answer", async {
        for _ in 0..(LEN / block.len()) {
            s.write_all(&block).await.unwrap();
        }
    })
    .await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    within("the answer", async {
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got += n;
        }
    })
    .await;
    assert!(got > LEN, "{got}");
}

/// Request trailers go up after the last chunk, without the fields a trailer must not
/// carry (RFC 9110 6.5.1): a `content-length` or `host` there could reframe or
/// reroute the request for the upstream.
#[tokio::test]
async fn request_trailers_go_up_without_framing_or_routing_fields() {
    let (up, gw) = scripted(vec![answer(OK_SHORT)]).await;
    let out = raw(
        &gw,
        b"POST /t HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\
          connection: close\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 7\r\ncontent-length: 99\r\n\
          host: elsewhere\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let sent = &up.requests()[0];
    let (_, body) = sent.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "3\r\nabc\r\n0\r\nx-sum: 7\r\n\r\n", "{sent:?}");
}

/// An upstream that answers an upload early with `connection: close` has ended the
/// exchange: once its answer is through, the gateway lets go of the connection even
/// though the client has not sent (and may never send) the rest of its body. Before,
/// the upload's task held the write half (so the socket) for as long as the client
/// kept its connection open, with nothing ever to come of it.
#[tokio::test]
async fn an_upload_answered_early_with_close_lets_go_of_the_connection_at_the_answers_end() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        s.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!",
        )
        .await
        .unwrap();
        // Keeps reading (and dropping) whatever comes, until the gateway closes.
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let gw = gateway_for(&addr.to_string()).await;
    let mut s = send_raw(
        &gw,
        b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\nsome of it",
    )
    .await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    within("the early answer", async {
        while !out.ends_with(b"big!") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // The client keeps its connection open and sends nothing more.
    let closed = tokio::time::timeout(Duration::from_secs(3), closed_rx).await;
    assert!(closed.is_ok(), "the upstream connection is still open");
    drop(s);
}

/// `Proxy-*` fields are the client-to-gateway hop's own (credentials for the proxy,
/// say), and `X-Forwarded-*`, `Forwarded` and `X-Request-Id` are the gateway's to set:
/// the head has them stripped or set, and a trailer must not carry the client's up.
#[tokio::test]
async fn request_trailers_go_up_without_proxy_or_forwarding_fields() {
    let (up, gw) = scripted(vec![answer(OK_SHORT)]).await;
    let out = raw(
        &gw,
        b"POST /t HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\
          connection: close\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 7\r\n\
          proxy-authorization: Basic c2VjcmV0\r\nx-forwarded-for: 10.0.0.1\r\n\
          forwarded: for=10.0.0.1\r\nx-request-id: spoofed\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let sent = &up.requests()[0];
    let (_, body) = sent.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "3\r\nabc\r\n0\r\nx-sum: 7\r\n\r\n", "{sent:?}");
}
