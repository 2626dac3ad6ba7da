//! Fakes and spawn helpers for the gateway's integration tests.
//!
//! - [`FakeUpstream`]: an in-process HTTP server on port 0 that counts hits and
//!   connections, echoes what it received, streams, holds requests on command.
//! - [`TestGateway`]: the real gateway on port 0 with its config in a temp dir.
//! - [`ScriptedUpstream`]: a raw upstream answering with scripted bytes, however
//!   malformed.
//! - [`Client`]: a small HTTP client over hyper-util (HTTP/1.1 or h2c).

// A test-only crate: a panic here is a test failure with a message, which is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod gateway;
mod scripted;
mod upstream;

pub use client::{chunked_body, empty, full, Client, TestBody, TestResponse};
pub use gateway::TestGateway;
pub use scripted::{answer, answer_then_close, Answer, ScriptedUpstream, Then};
pub use upstream::{FakeUpstream, Hold};

use std::time::Duration;

/// Upper bound for any single wait in a test: generous for a loaded 2-core CI box,
/// short enough that a hang fails fast.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `f` or panics after [`WAIT`].
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Polls `check` until it returns `Some`, bounded by [`WAIT`]; for conditions that have
/// no event to await (a file watcher noticing a change).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
