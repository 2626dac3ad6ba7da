//! Review tests for the gateway's own HTTP/1.1 client (`proxy/client/h1.rs`).

use gateway_test_support::{answer, within, Answer, ScriptedUpstream, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{route, send_raw};

const OK_SHORT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

async fn gateway_for(authority: &str) -> TestGateway {
    let config = format!(
        "[upstreams.up]\nendpoints = [\"{authority}\"]\n\n{}",
        route("all", "/", "up", "")
    );
    TestGateway::start(&config).await
}

async fn scripted(script: Vec<Answer>) -> (ScriptedUpstream, TestGateway) {
    let up = ScriptedUpstream::start(script).await;
    let gw = gateway_for(&up.authority()).await;
    (up, gw)
}

async fn raw(gw: &TestGateway, request: &[u8]) -> String {
    let mut s = send_raw(gw, request).await;
    let mut out = Vec::new();
    let _ = within("raw response", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
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
        let (up, gw) = scripted(vec![answer(bytes), answer(OK_SHORT)]).await;
        let out = raw(
            &gw,
            b"GET /a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(
            !out.ends_with("0\r\n\r\n"),
            "{what}: the gateway ended the body cleanly: {out:?}"
        );
        let out = raw(
            &gw,
            b"GET /b HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(out.ends_with("ok"), "{what}: {out:?}");
        assert_eq!(up.connections(), 2, "{what}: the connection was reused");
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
        let (up, gw) = scripted(vec![answer(bytes), answer(OK_SHORT)]).await;
        let out = raw(
            &gw,
            b"GET /a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(
            !out.ends_with("0\r\n\r\n"),
            "{what}: the gateway ended the body cleanly: {out:?}"
        );
        let out = raw(
            &gw,
            b"GET /b HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(out.ends_with("ok"), "{what}: {out:?}");
        assert_eq!(up.connections(), 2, "{what}: the connection was reused");
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
