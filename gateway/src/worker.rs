//! Which proxy worker thread the running code is on.
//!
//! With more than one worker, each runs its own single-threaded runtime and keeps
//! what is bound to that runtime's reactor to itself: an idle upstream connection is
//! registered with the reactor of the worker that opened it, so only that worker may
//! reuse it (another would be woken through a foreign thread on every read).

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker index: 0 outside worker threads (one worker serving in place,
/// the control plane, tests).
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks this thread as worker `index`, for the rest of its life.
pub(crate) fn enter(index: usize) {
    INDEX.with(|i| i.set(index));
}
