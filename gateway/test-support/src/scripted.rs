//! [`ScriptedUpstream`]: a raw HTTP/1.1 upstream that answers each request it reads
//! with the next bytes of a script, byte for byte, however malformed. It tests how the
//! gateway reads responses: framing, interim answers, broken heads, closes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does after writing an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Reads the next request on the same connection.
    KeepOpen,
    /// Closes the connection.
    Close,
}

/// One step of the script: the bytes written in answer to one request, and then.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Written as they are; empty means no answer at all.
    pub bytes: Vec<u8>,
    /// What follows.
    pub then: Then,
}

/// `bytes`, then keep the connection open.
pub fn answer(bytes: &[u8]) -> Answer {
    Answer {
        bytes: bytes.to_vec(),
        then: Then::KeepOpen,
    }
}

/// `bytes`, then close the connection.
pub fn answer_then_close(bytes: &[u8]) -> Answer {
    Answer {
        bytes: bytes.to_vec(),
        then: Then::Close,
    }
}

/// A scripted upstream on port 0. Requests past the end of the script get their
/// connection closed.
pub struct ScriptedUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    script: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

impl ScriptedUpstream {
    /// Starts listening; each request read takes the next answer.
    pub async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { addr, state }
    }

    /// `host:port`, for a config's endpoint list.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request read so far, head and body, as text.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        state.requests.lock().unwrap().push(request);
        let next = state.script.lock().unwrap().pop_front();
        let Some(answer) = next else { return };
        if stream.write_all(&answer.bytes).await.is_err() {
            return;
        }
        if answer.then == Then::Close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// One request off the connection: the head, then a `Content-Length` body or a
/// chunked one (up to its last chunk); `None` at the end of the stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let end = if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < head_end + len {
            read_more(stream, buf).await?;
        }
        head_end + len
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(len) = chunked_len(&buf[head_end..]) {
                break head_end + len;
            }
            read_more(stream, buf).await?;
        }
    } else {
        head_end
    };
    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(request)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of a complete chunked body at the start of `body` (chunks, the last
/// chunk, trailers and the final CRLF), or `None` while it is incomplete.
fn chunked_len(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&body[at..], b"\r\n")?;
        let line = std::str::from_utf8(&body[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer fields, each ending in CRLF, then an empty line.
            loop {
                let end = at + find(&body[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if at > body.len() {
            return None;
        }
    }
}
