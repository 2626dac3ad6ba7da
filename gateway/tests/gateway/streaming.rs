//! Bodies stream both ways: the upstream sees the first bytes of an upload before the
//! client has sent the rest, and the client sees the first bytes of a download before
//! the upstream has produced the rest. Nothing is buffered whole.

use bytes::Bytes;
use gateway_test_support::{within, Client, FakeUpstream, TestGateway};
use http::Request;
use http_body_util::BodyExt;

use crate::{route, upstream};

const CHUNK: usize = 256 * 1024;
const TOTAL_CHUNKS: usize = 256; // 64 MiB

#[tokio::test]
async fn uploads_stream_to_the_upstream_as_they_arrive() {
    let up = FakeUpstream::start("up").await;
    let config = [
        upstream("up", &[&up], ""),
        route("all", "/", "up", "max_request_body = \"1GiB\""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let (tx, response) = gw.start_upload("/upload");

    let chunk = Bytes::from(vec![7u8; CHUNK]);
    tx.send(chunk.clone()).await.unwrap();
    let mut uploaded = up.uploaded();
    within(
        "the first chunk to reach the upstream",
        uploaded.wait_for(|n| *n >= CHUNK as u64),
    )
    .await
    .unwrap();
    for _ in 1..TOTAL_CHUNKS {
        within("sending a chunk", tx.send(chunk.clone()))
            .await
            .unwrap();
    }
    drop(tx);
    let r = within("upload response", response).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["received"], (CHUNK * TOTAL_CHUNKS) as u64);
}

#[tokio::test]
async fn downloads_stream_to_the_client_as_they_are_produced() {
    let up = FakeUpstream::start("up").await;
    let config = [upstream("up", &[&up], ""), route("all", "/", "up", "")].concat();
    let gw = TestGateway::start(&config).await;
    let client = Client::default();

    let response = client
        .send_streaming(
            Request::get(gw.url("/stream-gated"))
                .body(gateway_test_support::empty())
                .unwrap(),
        )
        .await;
    let mut body = response.into_body();
    let first = within("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(
        first.into_data().unwrap()[0],
        b'a',
        "first chunk arrives while the upstream is still held"
    );
    up.hold().release(1);
    let rest = within("rest of body", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert!(!rest.is_empty() && rest.iter().all(|b| *b == b'a' || *b == b'b'));

    let r = client
        .get(&gw.url(&format!("/stream/{}", CHUNK * TOTAL_CHUNKS)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), CHUNK * TOTAL_CHUNKS);
}

#[tokio::test]
async fn the_response_timeout_starts_after_the_upload_so_slow_uploads_finish() {
    let up = FakeUpstream::start("up").await;
    let config = [
        upstream("up", &[&up], "request_timeout = \"300ms\""),
        route("all", "/", "up", ""),
    ]
    .concat();
    let gw = TestGateway::start(&config).await;
    let (tx, response) = gw.start_upload("/upload");
    // The upload itself takes longer than the request timeout: elapsed time is what
    // is under test here, so these sleeps are the scenario, not synchronisation.
    for _ in 0..6 {
        tx.send(Bytes::from_static(&[1u8; 1024])).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(tx);
    let r = within("slow upload response", response).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["received"], 6 * 1024);
}
