//! Request heads written upstream together: one system call for the requests that one
//! turn of a worker's run queue sends, instead of one `sendto` each.
//!
//! Why: on loopback, and wherever an upstream shares the proxy's cores, each write of
//! a request wakes the upstream, and the kernel places a socket's woken reader on the
//! writer's CPU ("sync" wake-up), where it preempts the proxy as soon as the system
//! call returns. One write at a time, the upstream then runs for one request and
//! sleeps again, and the proxy is switched out once every few requests. Submitted
//! together through one `io_uring_enter`, the writes wake each upstream once, the
//! proxy is switched out at most once for all of them, and each upstream finds the
//! whole burst waiting when it runs. With upstreams on other machines it is still
//! one system call where there were many.
//!
//! How: the first request head queued in a turn wakes its own task and returns
//! `Pending`, so that the other tasks of the turn queue theirs behind it; whichever
//! queued task is polled first then submits the whole queue. Each write carries
//! `MSG_DONTWAIT`, so it completes within the submission: all done, partly done
//! (the task writes the rest itself), would block or failed, each as a plain write's
//! result would be. Nothing of a queued head has left before the submission, so a
//! connection dropped meanwhile takes its head off the queue ([`cancel`]), and the
//! file descriptor is never written after its socket has closed.
//!
//! Only on threads that serve on a single-threaded runtime ([`enable`]): there every
//! task of the runtime runs on the thread that holds the queue. Where io_uring cannot
//! be set up (an old kernel, or a seccomp profile that refuses it, as Docker's default
//! does), [`enable`] says no and heads are written one at a time as before.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Waker};

use bytes::Bytes;
use io_uring::{opcode, types, IoUring};

/// Submission queue entries: heads written per `io_uring_enter` (a longer queue goes
/// in several). A turn of the run queue rarely sends more.
const RING_ENTRIES: u32 = 128;

thread_local! {
    static QUEUE: RefCell<Option<Queue>> = const { RefCell::new(None) };
}

/// A queued head's claim on its write's result; given back through [`poll`] or
/// [`cancel`].
#[derive(Debug)]
pub(crate) struct Ticket(u64);

/// Keeps heads written together on this thread while it lives.
#[derive(Debug)]
pub(crate) struct Together(());

impl Drop for Together {
    fn drop(&mut self) {
        // No more heads are queued once the last guard has gone. The queue itself
        // stays with the thread: a head already queued is still written when its
        // task polls, and a written one's outcome is still there for it (taking it
        // away could have a head written twice).
        let _ = QUEUE.try_with(|q| {
            if let Some(q) = q.borrow_mut().as_mut() {
                q.users -= 1;
            }
        });
    }
}

/// Writes request heads together on this thread from now on, while the returned
/// guard lives (guards nest: one per gateway serving on the thread). Call it only on
/// a thread whose tasks all run on it (a single-threaded runtime's). `None` when
/// io_uring is not available here.
pub(crate) fn enable() -> Option<Together> {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        match q.as_mut() {
            Some(q) if q.broken => return None,
            Some(q) => q.users += 1,
            None => {
                let ring = IoUring::builder()
                    .setup_submit_all()
                    .build(RING_ENTRIES)
                    .inspect_err(|e| {
                        tracing::info!(
                            "io_uring unavailable ({e}); request heads are written one by one"
                        )
                    })
                    .ok()?;
                *q = Some(Queue {
                    ring,
                    queued: Vec::new(),
                    done: Vec::new(),
                    next: 0,
                    submissions: 0,
                    users: 1,
                    broken: false,
                    #[cfg(test)]
                    fail_next: false,
                });
            }
        }
        Some(Together(()))
    })
}

/// Queues `head` to be written to `fd`; `None` when heads are written one by one on
/// this thread. The caller polls the ticket next time it is polled.
///
/// # Safety
///
/// `fd` must stay open, as the same socket, until the ticket has been given back
/// through [`poll`] or [`cancel`]: the write happens in between, and a descriptor
/// closed and reused meanwhile would receive the head.
#[allow(unsafe_code)]
pub(crate) unsafe fn queue(fd: RawFd, head: &Bytes, cx: &Context<'_>) -> Option<Ticket> {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let q = q.as_mut().filter(|q| q.users > 0 && !q.broken)?;
        if q.queued.is_empty() {
            // The first of a turn: polled again after the turn's other tasks.
            cx.waker().wake_by_ref();
        }
        let ticket = q.next;
        q.next = q.next.wrapping_add(1);
        q.queued.push(Queued {
            ticket,
            fd,
            head: head.clone(),
            waker: cx.waker().clone(),
        });
        Some(Ticket(ticket))
    })
}

/// What became of a queued head's write.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// This many bytes of it went out (possibly not all).
    Wrote(usize),
    /// None of it went out: the error a plain write would have given (`WouldBlock`:
    /// write it as usual).
    Failed(io::Error),
    /// The submission itself failed, so whether the kernel wrote it is not known;
    /// treat it as sent and never send it again.
    Unknown,
}

/// The write's outcome once the queue has been submitted: submits it now when the
/// ticket's head is still queued. Empties `ticket`.
pub(crate) fn poll(ticket: &mut Option<Ticket>, cx: &Context<'_>) -> Outcome {
    let Some(Ticket(t)) = ticket.take() else {
        return Outcome::Failed(io::ErrorKind::WouldBlock.into());
    };
    let outcome = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let queue = q.as_mut()?;
        let ring_ok = !queue.queued.iter().any(|e| e.ticket == t) || queue.submit(cx.waker());
        let i = queue.done.iter().position(|(done, _)| *done == t);
        let outcome = i.map(|i| queue.done.swap_remove(i).1);
        // The ring failed: heads go one by one from now on (the outcomes already
        // kept stay for their tasks).
        queue.broken |= !ring_ok;
        outcome
    });
    // Not found: the queue went with its thread's guard, and nothing was written.
    outcome.unwrap_or_else(|| Outcome::Failed(io::ErrorKind::WouldBlock.into()))
}

/// `io_uring_enter` calls this thread has made for request heads.
#[cfg(test)]
pub(crate) fn submissions() -> u64 {
    QUEUE.with(|q| q.borrow().as_ref().map_or(0, |q| q.submissions))
}

/// Makes this thread's next submission fail, as if `io_uring_enter` had.
#[cfg(test)]
pub(crate) fn fail_next_submission() {
    QUEUE.with(|q| {
        if let Some(q) = q.borrow_mut().as_mut() {
            q.fail_next = true;
        }
    });
}

/// Gives a ticket back unpolled: its connection is closing. A head still queued is
/// taken off the queue unsent.
pub(crate) fn cancel(ticket: Ticket) {
    // `try_with`: a connection may close while the thread's locals are torn down.
    let _ = QUEUE.try_with(|q| {
        let mut q = q.borrow_mut();
        let Some(q) = q.as_mut() else { return };
        if let Some(i) = q.queued.iter().position(|e| e.ticket == ticket.0) {
            q.queued.remove(i);
            // The first queued task was the one to be polled again; hand that on.
            if i == 0 {
                if let Some(next) = q.queued.first() {
                    next.waker.wake_by_ref();
                }
            }
        } else if let Some(i) = q.done.iter().position(|(done, _)| *done == ticket.0) {
            q.done.swap_remove(i);
        }
    });
}

/// One thread's queue and ring.
struct Queue {
    ring: IoUring,
    queued: Vec<Queued>,
    /// Outcomes of submitted writes, until their tasks take them.
    done: Vec<(u64, Outcome)>,
    /// Numbers tickets, never reused on the thread.
    next: u64,
    /// `io_uring_enter` calls made, for tests to see what went together.
    submissions: u64,
    /// Live [`Together`] guards: heads are queued while there is one.
    users: usize,
    /// The ring failed once and is not used again.
    broken: bool,
    /// Fails the next submission, for a test of what follows.
    #[cfg(test)]
    fail_next: bool,
}

struct Queued {
    ticket: u64,
    fd: RawFd,
    /// Held until the write has completed: the kernel reads from it.
    head: Bytes,
    waker: Waker,
}

impl Queue {
    /// Writes every queued head, wakes their tasks (but the caller's, `current`) and
    /// keeps the outcomes for them. False when the ring failed: the outcomes not
    /// reaped are [`Outcome::Unknown`], and the ring must not be used again.
    fn submit(&mut self, current: &Waker) -> bool {
        let mut queued = std::mem::take(&mut self.queued);
        let mut ok = true;
        for batch in queued.chunks(RING_ENTRIES as usize) {
            let first = self.done.len();
            ok = ok && self.write_all(batch);
            for (entry, done) in batch.iter().zip(&mut self.done[first..]) {
                done.0 = entry.ticket;
                if !entry.waker.will_wake(current) {
                    entry.waker.wake_by_ref();
                }
            }
            if !ok {
                // The kernel may still read these heads: their bytes must outlive
                // any write still in its hands.
                std::mem::forget(batch.iter().map(|q| q.head.clone()).collect::<Vec<_>>());
            }
        }
        queued.clear();
        // Keeps the allocation for the next turn.
        self.queued = queued;
        ok
    }

    /// One `io_uring_enter` for up to [`RING_ENTRIES`] writes; their outcomes are
    /// pushed onto `done` in order (with tickets for the caller to fill in). False
    /// when the submission failed.
    fn write_all(&mut self, batch: &[Queued]) -> bool {
        let first = self.done.len();
        self.done
            .extend(batch.iter().map(|_| (0, Outcome::Unknown)));
        let mut waiting = 0;
        {
            let mut sq = self.ring.submission();
            for (i, entry) in batch.iter().enumerate() {
                let len = u32::try_from(entry.head.len()).unwrap_or(u32::MAX);
                let send = opcode::Send::new(types::Fd(entry.fd), entry.head.as_ptr(), len)
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the head's bytes live in `batch` until every completion
                // has been reaped below (or are leaked by the caller when the ring
                // fails); the descriptor is open (`queue`'s contract).
                #[allow(unsafe_code)]
                let pushed = unsafe { sq.push(&send) };
                if pushed.is_ok() {
                    waiting += 1;
                } else {
                    self.done[first + i].1 = Outcome::Failed(io::ErrorKind::WouldBlock.into());
                }
            }
        }
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next) {
            return false;
        }
        while waiting > 0 {
            self.submissions += 1;
            match self.ring.submit_and_wait(waiting) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("io_uring_enter failed ({e}); writing heads one by one");
                    return false;
                }
            }
            for cqe in self.ring.completion() {
                let Some(done) = usize::try_from(cqe.user_data())
                    .ok()
                    .and_then(|i| self.done.get_mut(first + i))
                else {
                    continue;
                };
                let res = cqe.result();
                done.1 = match usize::try_from(res) {
                    Ok(n) => Outcome::Wrote(n),
                    Err(_) => Outcome::Failed(io::Error::from_raw_os_error(-res)),
                };
                waiting -= 1;
            }
        }
        true
    }
}
