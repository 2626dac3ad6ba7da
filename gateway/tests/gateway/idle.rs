//! Client connections: idle and slow-loris connections are closed after
//! `client_idle_timeout`; a request in progress, however slow, is not cut.

use std::time::Duration;

use bytes::Bytes;
use gateway_test_support::{empty, within, Client, FakeUpstream, TestGateway};
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{route, send_raw, upstream};

const IDLE: Duration = Duration::from_millis(300);

async fn gateway(up: &FakeUpstream) -> TestGateway {
    gateway_to(upstream("up", &[up], "")).await
}

/// A gateway with the short idle timeout and one route `/` to `[upstreams.up]`.
async fn gateway_to(upstream_up: String) -> TestGateway {
    let config = [
        format!(
            "[server]\nclient_idle_timeout = \"{}ms\"\n",
            IDLE.as_millis()
        ),
        upstream_up,
        route("r", "/", "up", ""),
    ]
    .concat();
    TestGateway::start(&config).await
}

/// Everything the gateway sends until it closes the connection.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    got
}

#[tokio::test]
async fn a_client_that_sends_half_a_head_is_cut_off() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let mut s = send_raw(&gw, b"GET / HTTP/1.1\r\nHost: shop\r\n").await;
    let got = within("the gateway to close", read_until_closed(&mut s)).await;
    assert!(got.is_empty(), "no response to half a head: {got:?}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_head_dribbled_a_byte_at_a_time_does_not_keep_the_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let mut s = send_raw(&gw, b"GET / HTTP/1.1\r\nHost: shop\r\nX-Pad: ").await;
    within("the gateway to close a slow loris", async {
        // A byte every 50 ms is progress, but never a whole head: writes start
        // failing once the gateway has closed.
        while s.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let mut s = send_raw(&gw, b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let got = within("the response, then the close", read_until_closed(&mut s)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
}

#[tokio::test]
async fn a_response_slower_than_the_idle_timeout_is_not_cut() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let url = gw.url("/hold");
    let in_flight = tokio::spawn(async move { Client::default().get(&url).await });
    up.hold().arrived().await;
    // The subject of the test is time passing while a request is in progress.
    tokio::time::sleep(IDLE * 3).await;
    up.hold().release(1);
    let r = within("the held response", in_flight).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "released");
}

#[tokio::test]
async fn a_response_body_streaming_longer_than_the_idle_timeout_is_not_cut() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let req = Request::get(gw.url("/stream-gated")).body(empty()).unwrap();
    let response = Client::default().send_streaming(req).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within("the first chunk", body.frame()).await;
    let first = first
        .expect("a frame")
        .expect("no error")
        .into_data()
        .unwrap();
    // The head went out long ago; the body is still being sent.
    tokio::time::sleep(IDLE * 3).await;
    up.hold().release(1);
    let rest: Bytes = within("the rest of the body", body.collect())
        .await
        .expect("the body completes")
        .to_bytes();
    // The upstream's chunk of `a`s, then, after the wait, its chunk of `b`s.
    let all = [first, rest].concat();
    assert_eq!(all.first(), Some(&b'a'));
    assert_eq!(all.last(), Some(&b'b'));
    assert!(all
        .windows(2)
        .all(|w| w[0] <= w[1] && matches!(w[1], b'a' | b'b')));
}

#[tokio::test]
async fn an_idle_http2_connection_is_told_goaway_and_closed() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(gw.url("/a")).body(empty()).unwrap();
    let response = within("an HTTP/2 response", send.send_request(req))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    within("the body", response.into_body().collect())
        .await
        .unwrap();
    // `send` stays alive, so it is the gateway that ends the connection, cleanly.
    let ended = within("the gateway to end the idle connection", conn).await;
    ended
        .unwrap()
        .expect("a GOAWAY and a clean close, not a cut");
    drop(send);
}

#[tokio::test]
async fn a_client_that_pauses_reading_still_gets_the_whole_body() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let addr = gw.addr;
    // Whether hyper has taken the last chunk while the socket still holds back some of
    // the response depends on the sizes of the kernel's buffers: many sizes, so that
    // some land in that window (with an idle timer counting from the hand-over, a few
    // of these were cut short).
    let mut clients = Vec::new();
    for i in 1..=64usize {
        let n = i * 64 * 1024;
        clients.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(8 * 1024).unwrap();
            let mut s = socket.connect(addr).await.unwrap();
            let req =
                format!("GET /stream/{n} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut got = vec![0u8; 1024];
            let k = s.read(&mut got).await.unwrap();
            got.truncate(k);
            // Well over the idle timeout without reading.
            tokio::time::sleep(IDLE * 4).await;
            let _ = within("the rest of the response", s.read_to_end(&mut got)).await;
            (n, got.ends_with(b"\r\n0\r\n\r\n"))
        }));
    }
    let mut cut = Vec::new();
    for c in clients {
        let (n, whole) = c.await.unwrap();
        if !whole {
            cut.push(n);
        }
    }
    assert!(cut.is_empty(), "responses cut short: {cut:?}");
}

#[tokio::test]
async fn an_http2_client_reading_slowly_still_gets_the_whole_body() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    // A 1 KiB window read at 10 KiB/s: hyper has taken the whole body from the gateway
    // more than two idle periods before the client has let the end of it through
    // (a connection cut at the second period after GOAWAY lost its tail here).
    builder.initial_stream_window_size(1024);
    let (mut send, conn) = builder.handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(gw.url("/stream/32768")).body(empty()).unwrap();
    let response = within("the head", send.send_request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = 0;
    let started = std::time::Instant::now();
    while let Some(frame) = within("a frame", body.frame()).await {
        let frame = frame.expect("the stream is not cut");
        got += frame.into_data().map_or(0, |d| d.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, 32768);
    // The test only means something if reading took over two idle periods.
    assert!(started.elapsed() > IDLE * 2, "{:?}", started.elapsed());
    drop(send);
    let _ = within("the connection to end", conn).await;
}

#[tokio::test]
async fn an_upload_still_arriving_after_an_early_response_is_not_cut() {
    const CHUNK: usize = 1000;
    // One chunk every 50 ms: 2 s, over six idle periods.
    const N: usize = 40;
    // An upstream that answers at once, then reads the whole request body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut head = Vec::new();
        let mut body = loop {
            let n = s.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break head.len() - (i + 4);
            }
        };
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        while body < CHUNK * N {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body += n,
            }
        }
        let _ = tx.send(body);
    });
    let gw = gateway_to(format!("[upstreams.up]\nendpoints = [\"{addr}\"]\n")).await;
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: shop\r\nContent-Length: {}\r\n\r\n",
        CHUNK * N
    );
    let mut s = send_raw(&gw, head.as_bytes()).await;
    s.write_all(&[b'u'; CHUNK]).await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = within("the early response", s.read(&mut got))
        .await
        .unwrap();
    assert!(got[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &got[..n]);
    let mut sent = CHUNK;
    for _ in 1..N {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.write_all(&[b'u'; CHUNK]).await.is_err() {
            break;
        }
        sent += CHUNK;
    }
    let received = within("the upstream to read the body", rx).await.unwrap();
    assert_eq!((sent, received), (CHUNK * N, CHUNK * N), "upload cut short");
}

#[tokio::test]
async fn an_http2_connection_that_never_asks_anything_is_told_goaway() {
    const GOAWAY: u8 = 7;
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    // The preface and an empty SETTINGS frame, then nothing.
    let mut s = send_raw(&gw, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await;
    // It is told GOAWAY, then, having no stream to finish and not acknowledging,
    // cut a period later.
    let got = within(
        "the gateway to end the connection",
        read_until_closed(&mut s),
    )
    .await;
    let mut frame_types = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        frame_types.push(got[at + 3]);
        at += 9 + len;
    }
    assert!(frame_types.contains(&GOAWAY), "frames: {frame_types:?}");
}
