//! Where there is no io_uring (not Linux): [`enable`] says no, so request heads are
//! written one by one. The same interface as `together.rs`, for the code that uses it.

use std::io;
use std::os::fd::RawFd;
use std::task::Context;

use bytes::Bytes;

/// A queued head's claim on its write's outcome (never issued here).
#[derive(Debug)]
pub(crate) struct Ticket(());

/// Keeps heads written together while it lives (never made here).
#[derive(Debug)]
pub(crate) struct Together(());

/// What became of a queued head's write.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum Outcome {
    /// All of it went out.
    All,
    /// This many bytes of it went out, not all.
    Wrote(usize),
    /// None of it went out.
    Failed(io::Error),
    /// Whether it went out is not known.
    Unknown,
}

/// No io_uring here.
pub(crate) fn enable() -> Option<Together> {
    None
}

/// Never queues: heads are written one by one.
///
/// # Safety
///
/// None needed here; the signature is `together.rs`'s.
#[allow(unsafe_code)]
pub(crate) unsafe fn queue(_fd: RawFd, _head: &Bytes, _cx: &Context<'_>) -> Option<Ticket> {
    None
}

/// Nothing is ever queued, so nothing was written.
pub(crate) fn poll(ticket: &mut Option<Ticket>, _cx: &Context<'_>) -> Outcome {
    ticket.take();
    Outcome::Failed(io::ErrorKind::WouldBlock.into())
}

/// Nothing to give back.
pub(crate) fn cancel(_ticket: Ticket) {}

/// No submissions here.
#[cfg(test)]
pub(crate) fn submissions() -> u64 {
    0
}

/// Nothing to fail here.
#[cfg(test)]
pub(crate) fn fail_next_submission(_entered: bool) {}
