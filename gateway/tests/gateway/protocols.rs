//! One port, two protocols: a connection that opens with the HTTP/2 preface is served
//! as h2c, any other as HTTP/1.1, however the first bytes are split into packets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use gateway_test_support::{empty, eventually, within, Client, FakeUpstream, TestGateway};
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::{route, upstream};

/// Long enough that the gateway has looked at the first piece before the next comes.
const PAUSE: Duration = Duration::from_millis(100);

async fn gateway(up: &FakeUpstream) -> TestGateway {
    let config = [upstream("up", &[up], ""), route("r", "/", "up", "")].concat();
    TestGateway::start(&config).await
}

/// A socket whose first `skip` bytes written were already sent by the test: the
/// client's writes of them are swallowed.
struct AlreadySent {
    inner: TcpStream,
    skip: usize,
}

impl AsyncRead for AlreadySent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AlreadySent {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 client connection whose preface goes out in two pieces, the first
/// `first` bytes, a pause, then the rest; and the task driving the connection.
async fn http2_split_after(
    gw: &TestGateway,
    first: usize,
) -> (
    hyper::client::conn::http2::SendRequest<gateway_test_support::TestBody>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..first])
        .await
        .unwrap();
    tokio::time::sleep(PAUSE).await;
    let io = AlreadySent {
        inner: stream,
        skip: first,
    };
    let (send, conn) = within("the HTTP/2 handshake", async {
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await
    })
    .await
    .unwrap_or_else(|e| panic!("preface split after {first} bytes: {e}"));
    (send, tokio::spawn(conn))
}

#[tokio::test]
async fn an_http2_preface_that_comes_in_pieces_is_still_http2() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    for first in [1, 5, 23] {
        let (mut send, _conn) = http2_split_after(&gw, first).await;
        let req = Request::get(gw.url("/split")).body(empty()).unwrap();
        let response = within("an HTTP/2 response", send.send_request(req))
            .await
            .unwrap_or_else(|e| panic!("preface split after {first} bytes: {e}"));
        assert_eq!(response.status(), 200, "split after {first} bytes");
        let body = within("the body", response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["path"], "/split");
    }
}

/// Sends `pieces` with a pause between them and returns all the gateway answers
/// before it closes.
async fn http1_in_pieces(gw: &TestGateway, pieces: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        stream.write_all(piece).await.unwrap();
    }
    let mut got = Vec::new();
    within("the response and the close", stream.read_to_end(&mut got))
        .await
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn http1_that_begins_like_the_http2_preface_reaches_hyper_whole() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    // "PRI " is also how the preface begins: those bytes are read off before the
    // protocol is known, and must still reach the HTTP/1 parser.
    let got = http1_in_pieces(
        &gw,
        &[
            b"PR",
            b"I /pri?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ],
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains(r#""method":"PRI""#), "{got}");
    assert!(got.contains(r#""path":"/pri?q=1""#), "{got}");
    // One byte, then the rest: the first byte already rules HTTP/2 out.
    let got = http1_in_pieces(
        &gw,
        &[
            b"G",
            b"ET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ],
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains(r#""path":"/g""#), "{got}");
    // An HTTP/1 request line with the preface's own start is no preface.
    let got = http1_in_pieces(
        &gw,
        &[b"PRI * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"],
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 "), "{got}");
}

#[tokio::test]
async fn a_client_that_closes_before_a_byte_leaves_nothing_open() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    for first in [&b""[..], b"PRI * HT"] {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(first).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        within("the gateway to close", stream.read_to_end(&mut got))
            .await
            .unwrap();
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    // Each one's task has ended: none is left counted as open.
    let c = Client::http1();
    eventually("no client connection left open", || async {
        let metrics = c.get(&gw.admin_url("/metrics")).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        text.lines()
            .any(|l| l == "gateway_open_connections 0")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_drain_closes_connections_whose_protocol_is_not_known_yet() {
    let up = FakeUpstream::start("up").await;
    // A grace period longer than any wait here: the drain must not need it.
    let config = [
        "[server]\nshutdown_grace = \"60s\"\n".to_owned(),
        upstream("up", &[&up], ""),
        route("r", "/", "up", ""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial.write_all(b"PRI * HT").await.unwrap();
    // Both are accepted before the drain starts: a request on a third is answered.
    let r = Client::http1().get(&gw.url("/a")).await;
    assert_eq!(r.status, 200);
    gw.shutdown().await;
    for s in [&mut silent, &mut partial] {
        let mut got = Vec::new();
        // A close with the preface's first bytes still unread on the gateway's side
        // (the drain can come before they are read) is a reset: closed all the same.
        match within("the gateway to close", s.read_to_end(&mut got)).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("not a close: {e}"),
        }
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
}

/// A gateway with a short `client_idle_timeout`.
async fn gateway_idle(up: &FakeUpstream) -> TestGateway {
    let config = [
        "[server]\nclient_idle_timeout = \"300ms\"\n".to_owned(),
        upstream("up", &[up], ""),
        route("r", "/", "up", ""),
    ]
    .concat();
    TestGateway::start(&config).await
}

#[tokio::test]
async fn a_preface_that_stops_halfway_is_cut_at_the_idle_timeout() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway_idle(&up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut got = Vec::new();
    within("the gateway to close", s.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}

/// The bytes read off while deciding go to hyper once, ahead of the rest: a body and
/// a second request on the same connection come through whole.
#[tokio::test]
async fn http1_read_off_while_deciding_keeps_its_body_and_next_request() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let got = http1_in_pieces(
        &gw,
        &[
            b"P",
            b"OST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ],
    )
    .await;
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
    assert!(got.contains(r#""path":"/a""#), "{got}");
    assert!(got.contains(r#""path":"/b""#), "{got}");
}

/// A preface read off in pieces still marks the connection HTTP/2: idle, it is told
/// GOAWAY and closed cleanly rather than cut.
#[tokio::test]
async fn an_idle_http2_connection_whose_preface_came_in_pieces_gets_goaway() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway_idle(&up).await;
    for first in [1, 23] {
        let (mut send, conn) = http2_split_after(&gw, first).await;
        let req = Request::get(gw.url("/a")).body(empty()).unwrap();
        let response = within("an HTTP/2 response", send.send_request(req))
            .await
            .unwrap();
        within("the body", response.into_body().collect())
            .await
            .unwrap();
        within("the gateway to end the idle connection", conn)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("split after {first} bytes: not a clean GOAWAY: {e}"));
        drop(send);
    }
}
