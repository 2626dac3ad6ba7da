//! Client connections: idle and slow-loris connections are closed after
//! `client_idle_timeout`; a request in progress, however slow, is not cut.

use std::time::Duration;

use bytes::Bytes;
use gateway_test_support::{empty, within, Client, FakeUpstream, TestGateway};
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{route, upstream};

const IDLE: Duration = Duration::from_millis(300);

async fn gateway(up: &FakeUpstream) -> TestGateway {
    let config = [
        format!(
            "[server]\nclient_idle_timeout = \"{}ms\"\n",
            IDLE.as_millis()
        ),
        upstream("up", &[up], ""),
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
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n")
        .await
        .unwrap();
    let got = within("the gateway to close", read_until_closed(&mut s)).await;
    assert!(got.is_empty(), "no response to half a head: {got:?}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_head_dribbled_a_byte_at_a_time_does_not_keep_the_connection() {
    let up = FakeUpstream::start("up").await;
    let gw = gateway(&up).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\nX-Pad: ")
        .await
        .unwrap();
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
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
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
