//! An exchange that stops moving halfway is given up on, whoever stopped it, as
//! nginx's `proxy_send_timeout`, `proxy_read_timeout` and `client_body_timeout` do:
//! an upstream that stops reading an upload gets a 504, one that stops sending a
//! body has the response cut, a client that stops sending its body gets a 408, and
//! one that stops reading its response is cut off.
//! Each would otherwise hold a client connection and an upstream connection for as
//! long as the other side stays connected, and a drain for its whole grace period.

use std::time::Duration;

use bytes::Bytes;
use gateway_test_support::{
    answer, empty, eventually, within, Client, FakeUpstream, ScriptedUpstream, TestGateway,
};
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{route, send_raw};

/// Each side's timeout in these tests: the upstream's `request_timeout` and the
/// client's `client_idle_timeout` and `client_send_timeout`.
const STALL: Duration = Duration::from_millis(300);

/// A gateway with every timeout at [`STALL`] and one route `/` to `endpoint`, whose
/// bodies may be large.
async fn gateway_to(endpoint: &str) -> TestGateway {
    gateway_with(endpoint, STALL, STALL).await
}

/// [`gateway_to`] with the upstream's `request_timeout` and the client's
/// `client_idle_timeout` given (`client_send_timeout` is [`STALL`]): a test that
/// expects one side's timeout keeps the other's out of reach of a slow machine.
async fn gateway_with(endpoint: &str, upstream: Duration, client: Duration) -> TestGateway {
    gateway_with_server(endpoint, upstream, client, "").await
}

/// [`gateway_with`] with `server`'s settings added to `[server]`, one a line.
async fn gateway_with_server(
    endpoint: &str,
    upstream: Duration,
    client: Duration,
    server: &str,
) -> TestGateway {
    let (up, client, send) = (upstream.as_millis(), client.as_millis(), STALL.as_millis());
    let config = format!(
        "[server]\nclient_idle_timeout = \"{client}ms\"\nclient_send_timeout = \"{send}ms\"\n{server}\n\
         [upstreams.up]\nendpoints = [\"{endpoint}\"]\nrequest_timeout = \"{up}ms\"\n{}",
        route("r", "/", "up", "max_request_body = \"1GiB\"")
    );
    TestGateway::start(&config).await
}

/// Out of reach of a test's run.
const NEVER: Duration = Duration::from_secs(3600);

/// Until the request has reached `up` on a connection (which a cut closes).
async fn opened(up: &FakeUpstream) {
    eventually("the request to reach the upstream", || async {
        (up.connections() >= 1).then_some(())
    })
    .await;
}

/// Until the gateway has closed its connections to `up`: the exchange was given up.
async fn closed(up: &FakeUpstream) {
    eventually("the upstream connection to close", || async {
        (up.open_connections() == 0).then_some(())
    })
    .await;
}

/// Sends 1 MiB chunks until the body is let go or 512 MiB have gone: far more than
/// the socket buffers between the client and an upstream that does not read.
fn feed(tx: tokio::sync::mpsc::Sender<Bytes>) -> tokio::task::JoinHandle<()> {
    static CHUNK: [u8; 1 << 20] = [7; 1 << 20];
    tokio::spawn(async move {
        for _ in 0..512 {
            if tx.send(Bytes::from_static(&CHUNK)).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test]
async fn an_upstream_that_stops_reading_an_upload_gets_504() {
    let up = FakeUpstream::start("up").await;
    // A feeder descheduled for a moment must not read as a client that stopped.
    let gw = gateway_with(&up.authority(), STALL, NEVER).await;
    // `/hold` never reads the body: once the socket buffers are full, no byte moves.
    let (tx, response) = gw.start_upload("/hold");
    let feeder = feed(tx);
    let r = within("the 504", response).await.expect("client task");
    assert_eq!(
        r.status,
        504,
        "body: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("x-gateway-error"), "upstream_timeout");
    // The upstream's fault: counted against its endpoint.
    assert_eq!(endpoint_failures(&gw).await, 1);
    feeder.abort();
    up.hold().release(1);
}

/// The failures `/admin/upstreams` counts against the gateway's one endpoint.
async fn endpoint_failures(gw: &TestGateway) -> serde_json::Value {
    let ups = Client::default()
        .get(&gw.admin_url("/admin/upstreams"))
        .await
        .json();
    ups["upstreams"][0]["endpoints"][0]["failures"].clone()
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway_with(&up.authority(), NEVER, STALL).await;
    let mut s = send_raw(
        &gw,
        b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\nten bytes.",
    )
    .await;
    let mut uploaded = up.uploaded();
    within(
        "the upstream to get the first bytes",
        uploaded.wait_for(|n| *n == 10),
    )
    .await
    .expect("upstream");
    let mut got = Vec::new();
    within("the 408 and the close", s.read_to_end(&mut got))
        .await
        .expect("read");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408 "), "got {got:?}");
    assert!(got.contains("client_timeout"), "got {got:?}");
    // The client's fault, not the upstream's.
    assert_eq!(endpoint_failures(&gw).await, 0);
}

#[tokio::test]
async fn a_body_the_upstream_stops_sending_is_cut() {
    // A head and 5 of 100 bytes, then nothing, on a connection kept open.
    let up = ScriptedUpstream::start(vec![answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
    )])
    .await;
    let gw = gateway_to(&up.authority()).await;
    let req = Request::get(gw.url("/")).body(empty()).unwrap();
    let response = Client::default().send_streaming(req).await;
    assert_eq!(response.status(), 200);
    let body = within("the body to end", response.into_body().collect()).await;
    assert!(body.is_err(), "a body cut short must not end cleanly");
}

#[tokio::test]
async fn a_body_with_pauses_shorter_than_the_timeout_is_not_cut() {
    let up = FakeUpstream::start("up").await;
    // The silence is counted from the gateway's first read that found nothing, which
    // can come before this test has the first bytes: a margin for a slow machine.
    let timeout = Duration::from_millis(1500);
    let gw = gateway_with(&up.authority(), timeout, NEVER).await;
    let req = Request::get(gw.url("/stream-gated")).body(empty()).unwrap();
    let response = Client::default().send_streaming(req).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The first 64 KiB, then a pause: the timeout bounds a silence, not the body.
    let first = within("the first bytes", body.frame())
        .await
        .and_then(|f| f.ok())
        .and_then(|f| f.into_data().ok())
        .map_or(0, |d| d.len());
    assert!(first > 0);
    tokio::time::sleep(timeout / 3).await;
    up.hold().release(1);
    let rest = within("the rest", body.collect())
        .await
        .expect("whole body");
    assert_eq!(first + rest.to_bytes().len(), 128 * 1024);
}

/// An upstream that answers at once and never reads the upload: the upload, which
/// goes on in a task of its own after the answer, stops once it has stalled, and
/// lets go of the client's body; the client's connection then closes (before this,
/// it stayed open for as long as the client kept trying to send).
#[tokio::test]
async fn an_upload_the_upstream_answered_early_and_stopped_reading_is_let_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
            .await
            .unwrap();
        // Kept open, never read again.
        std::future::pending::<()>().await;
        drop(s);
    });
    let gw = gateway_to(&endpoint).await;
    let mut s = send_raw(
        &gw,
        b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000000000\r\n\r\n",
    )
    .await;
    let (mut read, mut write) = s.split();
    let writer = async {
        let chunk = vec![7u8; 1 << 20];
        while write.write_all(&chunk).await.is_ok() {}
    };
    let reader = async {
        let mut got = Vec::new();
        let _ = read.read_to_end(&mut got).await;
        got
    };
    let (got, ()) = within("the client connection to close", async {
        tokio::join!(reader, writer)
    })
    .await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200 ") && got.ends_with("early"),
        "got {got:?}"
    );
    upstream.abort();
}

/// A response the client asks for and then reads none of.
const UNREAD: usize = 64 << 20;

/// A connection to `gw` that has asked for [`UNREAD`] bytes of `up` and reads none of
/// them: with a small receive buffer, the gateway's writes soon block. Returns once the
/// request has reached the upstream.
async fn asked_and_not_reading(gw: &TestGateway, up: &FakeUpstream) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let mut s = socket.connect(gw.addr).await.unwrap();
    let req = format!("GET /stream/{UNREAD} HTTP/1.1\r\nHost: shop\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    opened(up).await;
    s
}

/// What the gateway sent on `s` before it cut the connection.
async fn read_up_to_the_cut(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = within("the rest, up to the cut", s.read_to_end(&mut got)).await;
    got
}

/// Reads `s` up to the cut and checks that the response began and was cut short.
async fn assert_cut_short(s: &mut TcpStream) {
    let got = read_up_to_the_cut(s).await;
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    assert!(
        got.len() < UNREAD,
        "the whole body came ({} bytes)",
        got.len()
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_cut_off() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway_to(&up.authority()).await;
    let mut s = asked_and_not_reading(&gw, &up).await;
    // Not read: the gateway's writes block, and once they have for the send timeout
    // it closes the client connection and, with the response, the upstream's.
    closed(&up).await;
    assert_cut_short(&mut s).await;
}

/// An HTTP/2 client can shut one stream's flow-control window and keep the connection
/// busy otherwise: no write of the gateway's blocks, yet the stream's response, and
/// the upstream connection it comes on, would wait for ever. The stream waiting for
/// `client_send_timeout` cuts the connection off, as a blocked write does.
#[tokio::test]
async fn an_http2_stream_whose_window_is_never_opened_is_cut_off() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway_to(&up.authority()).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.initial_stream_window_size(1024);
    let (mut send, conn) = builder.handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(gw.url("/stream/1048576"))
        .body(empty())
        .unwrap();
    let response = within("the head", send.send_request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    // The body is not read, so the client never opens its window again; its
    // connection task goes on reading the socket.
    opened(&up).await;
    closed(&up).await;
    let _ = within("the client connection to be closed", conn).await;
    drop(response);
}

/// A drain lets the requests in progress finish, for up to `shutdown_grace`. A client
/// that takes no byte of its response must not hold the drain (and an upstream
/// connection) that long: `client_send_timeout` still cuts it off, however far off
/// `client_idle_timeout` is (the connection's timer used to be looked at first at the
/// idle timeout: with the default 30 s, this drain waited for its grace).
#[tokio::test]
async fn a_client_that_stops_reading_during_a_drain_is_cut_off_long_before_the_grace_ends() {
    let up = FakeUpstream::start("up").await;
    let mut gw =
        gateway_with_server(&up.authority(), NEVER, NEVER, "shutdown_grace = \"30s\"").await;
    let mut s = asked_and_not_reading(&gw, &up).await;
    gw.begin_shutdown();
    // Bounded by `WAIT`, a third of the grace.
    gw.stopped().await;
    closed(&up).await;
    assert_cut_short(&mut s).await;
}

/// HTTP/2 frame types and flags these tests use.
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A whole GET of `path` on `stream`: a HEADERS frame that ends it (HPACK without
/// Huffman coding: `:method GET` and `:scheme http` from the static table, `:path`
/// and `:authority` as literals).
fn h2_get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    for (name, value) in [(4, path), (1, "shop")] {
        block.push(name);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    h2_frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
}

/// Reads frames up to one of type `kind` on `stream` with `flags` among its flags.
async fn h2_read_until(s: &mut TcpStream, kind: u8, flags: u8, stream: u32) {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        s.read_exact(&mut vec![0u8; len]).await.unwrap();
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if head[3] == kind && head[4] & flags == flags && id == stream {
            return;
        }
    }
}

/// An HTTP/2 connection told GOAWAY (here for idleness, as a drain tells it) goes on
/// until the client acknowledges, and until then the client may still open streams.
/// One that asks for a response and reads none of it is cut off after
/// `client_send_timeout`, like any other, so a drain does not wait for its grace (the
/// connection's timer used to stop at GOAWAY).
#[tokio::test]
async fn an_http2_client_that_asks_after_goaway_and_stops_reading_is_cut_off_before_the_drain_ends()
{
    let up = FakeUpstream::start("up").await;
    let mut gw =
        gateway_with_server(&up.authority(), NEVER, STALL, "shutdown_grace = \"30s\"").await;
    let mut s = send_raw(&gw, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    s.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await.unwrap();
    s.write_all(&h2_get(1, "/")).await.unwrap();
    within(
        "the first response",
        h2_read_until(&mut s, DATA, END_STREAM, 1),
    )
    .await;
    within("GOAWAY", h2_read_until(&mut s, GOAWAY, 0, 0)).await;
    // The PING that came with it is never answered, nor anything else read.
    s.write_all(&h2_get(3, &format!("/stream/{UNREAD}")))
        .await
        .unwrap();
    eventually("the second request to reach the upstream", || async {
        (up.hits() == 2).then_some(())
    })
    .await;
    gw.begin_shutdown();
    // Bounded by `WAIT`, a third of the grace.
    gw.stopped().await;
    closed(&up).await;
    let _ = read_up_to_the_cut(&mut s).await;
}

/// The most the kernel may hold of what the gateway writes on a connection: its send
/// buffer's ceiling, `tcp_wmem`'s maximum (4 MiB by default).
fn send_buffer_ceiling() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// `request_timeout` starts once the request has all been written upstream. Until
/// then, what the client has sent and the upstream has not taken (the upload's unsent
/// tail) is bounded as a stall, also once the client has sent all of it: an upstream
/// that stops taking it gets a 504. (The other upload tests' bodies were still
/// arriving when the upstream stopped.)
#[tokio::test]
async fn an_upstream_that_stops_taking_an_upload_the_client_has_sent_in_full_gets_504() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    // Takes the connection, and never a byte of it.
    let upstream = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(s);
    });
    // More than the kernel holds, so that part of the request still waits in the
    // gateway once all of it has come from the client. The head, since the gateway
    // reads a body only as it writes it: a body that large would not all have come.
    let head_len = send_buffer_ceiling() + (1 << 20);
    let limit = format!("max_request_headers = {}", 2 * head_len);
    let gw = gateway_with_server(&endpoint, STALL, NEVER, &limit).await;
    let mut request = b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n".to_vec();
    let pad = vec![b'p'; head_len / 64];
    for i in 0..64 {
        request.extend_from_slice(format!("x-pad-{i}: ").as_bytes());
        request.extend_from_slice(&pad);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\nhello");
    let mut s = send_raw(&gw, &request).await;
    let mut got = Vec::new();
    within("the 504", async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 504 "), "got {got:?}");
    assert!(got.contains("upstream_timeout"), "got {got:?}");
    upstream.abort();
}
