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
//! result would be. A task whose head went whole is not woken: it waits for its
//! answer, as it would after a plain write, and takes the outcome when the answer
//! wakes it; the others are woken to go on. Nothing of a queued head has left before
//! the submission, so a connection dropped meanwhile takes its head off the queue
//! ([`cancel`]), and the file descriptor is never written after its socket has closed.
//!
//! A queue belongs to the thread that enabled it ([`enable`]: a worker thread, or the
//! thread serving in place on a single-threaded runtime), so that a turn's heads meet
//! in it. A ticket holds its own queue, behind a lock taken for a few instructions,
//! so that a connection dropped, or a task polled, on another thread still finds it:
//! no head is ever left queued for a socket that has closed. Where io_uring cannot be
//! set up (an old kernel, or a seccomp profile that refuses it, as Docker's default
//! does), [`enable`] says no and heads are written one at a time as before.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use bytes::Bytes;
use io_uring::{opcode, types, IoUring};

/// Submission queue entries: heads written per `io_uring_enter` (a longer queue goes
/// in several). A turn of the run queue rarely sends more.
const RING_ENTRIES: u32 = 128;

thread_local! {
    /// This thread's queue, while a [`Together`] guard is on.
    static CURRENT: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// A queue, shared by the thread that fills it and the tickets it issued.
type Shared = Arc<Mutex<Queue>>;

fn lock(queue: &Shared) -> MutexGuard<'_, Queue> {
    // Nothing a panic could leave half done matters to the next writer.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queued head's claim on its write's outcome; given back through [`poll`] or
/// [`cancel`].
#[derive(Debug)]
pub(crate) struct Ticket {
    queue: Shared,
    n: u64,
}

/// Keeps heads written together on the thread that made it while it lives.
#[derive(Debug)]
pub(crate) struct Together(Shared);

impl Drop for Together {
    fn drop(&mut self) {
        // No more heads are queued once the last guard has gone. The queue itself
        // stays while tickets hold it: a head already queued is still written when
        // its task polls, and an outcome kept is still there for its task.
        let mut q = lock(&self.0);
        q.users -= 1;
        if q.users == 0 {
            drop(q);
            let _ = CURRENT.try_with(|c| {
                let mut c = c.borrow_mut();
                if c.as_ref().is_some_and(|mine| Arc::ptr_eq(mine, &self.0)) {
                    *c = None;
                }
            });
        }
    }
}

/// Writes request heads together on this thread from now on, while the returned
/// guard lives (guards nest: one per gateway serving on the thread). Meant for a
/// thread whose tasks all run on it (a single-threaded runtime's), where a turn's
/// heads meet. `None` when io_uring is not available here.
pub(crate) fn enable() -> Option<Together> {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(queue) = c.as_ref() {
            let mut q = lock(queue);
            if q.broken {
                return None;
            }
            q.users += 1;
            return Some(Together(queue.clone()));
        }
        let ring = IoUring::builder()
            .setup_submit_all()
            .build(RING_ENTRIES)
            .inspect_err(|e| {
                tracing::info!("io_uring unavailable ({e}); request heads are written one by one")
            })
            .ok()?;
        let queue = Arc::new(Mutex::new(Queue {
            ring,
            queued: Vec::new(),
            outcomes: Vec::new(),
            done: Vec::new(),
            next: 0,
            submitted: 0,
            submissions: 0,
            users: 1,
            broken: false,
            #[cfg(test)]
            fail_next: None,
        }));
        *c = Some(queue.clone());
        Some(Together(queue))
    })
}

/// Queues `head` to be written to `fd`; `None` when heads are written one by one on
/// this thread. The write is submitted when a queued task is next polled: the first
/// of a turn is woken for that now. A write that takes the whole head wakes no one
/// (its task waits for the answer); any other outcome wakes the task that queued it.
///
/// # Safety
///
/// `fd` must stay open, as the same socket, until the ticket has been given back
/// through [`poll`] or [`cancel`]: the write happens in between, and a descriptor
/// closed and reused meanwhile would receive the head.
#[allow(unsafe_code)]
pub(crate) unsafe fn queue(fd: RawFd, head: &Bytes, cx: &Context<'_>) -> Option<Ticket> {
    let queue = CURRENT.with(|c| c.borrow().clone())?;
    let mut q = lock(&queue);
    if q.users == 0 || q.broken {
        return None;
    }
    if q.queued.is_empty() {
        // The first of a turn: polled again after the turn's other tasks.
        cx.waker().wake_by_ref();
    }
    let n = q.next;
    q.next += 1;
    q.queued.push(Queued {
        ticket: n,
        fd,
        head: head.clone(),
        waker: cx.waker().clone(),
    });
    drop(q);
    Some(Ticket { queue, n })
}

/// What became of a queued head's write.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// All of it went out.
    All,
    /// This many bytes of it went out, not all.
    Wrote(usize),
    /// None of it went out: the error a plain write would have given (`WouldBlock`:
    /// write it as usual).
    Failed(io::Error),
    /// The submission itself failed, so whether the kernel wrote it is not known;
    /// treat it as sent and never send it again.
    Unknown,
}

/// The write's outcome: submits the queue now when the ticket's head is still in it.
/// Empties `ticket`.
pub(crate) fn poll(ticket: &mut Option<Ticket>, cx: &Context<'_>) -> Outcome {
    let Some(t) = ticket.take() else {
        return Outcome::Failed(io::ErrorKind::WouldBlock.into());
    };
    let mut q = lock(&t.queue);
    if t.n >= q.submitted {
        q.submit(cx.waker());
    }
    match q.done.iter().position(|(n, _)| *n == t.n) {
        Some(i) => q.done.swap_remove(i).1,
        // Submitted, and only whole writes are not kept.
        None => Outcome::All,
    }
}

/// `io_uring_enter` calls this thread's queue has made for request heads.
#[cfg(test)]
pub(crate) fn submissions() -> u64 {
    CURRENT.with(|c| c.borrow().as_ref().map_or(0, |q| lock(q).submissions))
}

/// Makes this thread's next submission fail, as if `io_uring_enter` had: before
/// taking the heads (`entered` false), or after.
#[cfg(test)]
pub(crate) fn fail_next_submission(entered: bool) {
    CURRENT.with(|c| {
        if let Some(q) = c.borrow().as_ref() {
            lock(q).fail_next = Some(entered);
        }
    });
}

/// Gives a ticket back unpolled: its connection is closing. A head still queued is
/// taken off the queue unsent.
pub(crate) fn cancel(ticket: Ticket) {
    let mut q = lock(&ticket.queue);
    if ticket.n >= q.submitted {
        let Some(i) = q.queued.iter().position(|e| e.ticket == ticket.n) else {
            return;
        };
        q.queued.remove(i);
        // The first queued task was the one to be polled again; hand that on.
        if i == 0 {
            if let Some(next) = q.queued.first() {
                next.waker.wake_by_ref();
            }
        }
    } else if let Some(i) = q.done.iter().position(|(n, _)| *n == ticket.n) {
        q.done.swap_remove(i);
    }
}

/// One thread's queue and ring.
struct Queue {
    ring: IoUring,
    /// Heads not submitted yet, in ticket order.
    queued: Vec<Queued>,
    /// Scratch: the outcomes of one submission, in queue order.
    outcomes: Vec<Option<Outcome>>,
    /// Outcomes other than [`Outcome::All`], until their tasks take them (each was
    /// woken to); a whole write is the absence of its ticket here.
    done: Vec<(u64, Outcome)>,
    /// The next ticket's number: tickets are never reused on the thread.
    next: u64,
    /// Every ticket below this has been submitted (or cancelled before).
    submitted: u64,
    /// `io_uring_enter` calls made, for tests to see what went together.
    submissions: u64,
    /// Live [`Together`] guards: heads are queued while there is one.
    users: usize,
    /// The ring failed once and is not used again.
    broken: bool,
    /// Fails the next submission, before taking the heads or after, for a test.
    #[cfg(test)]
    fail_next: Option<bool>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("queued", &self.queued.len())
            .field("next", &self.next)
            .field("submitted", &self.submitted)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

struct Queued {
    ticket: u64,
    fd: RawFd,
    /// Held until the write has completed: the kernel reads from it.
    head: Bytes,
    waker: Waker,
}

impl Queue {
    /// Writes every queued head. Whole writes are done with; any other outcome is
    /// kept for its task, which is woken (but the caller's, `current`). When the ring
    /// fails, the heads it may have taken count as [`Outcome::Unknown`] and the rest
    /// as not written, and the ring is not used again.
    fn submit(&mut self, current: &Waker) {
        let mut queued = std::mem::take(&mut self.queued);
        self.submitted = self.next;
        for batch in queued.chunks(RING_ENTRIES as usize) {
            let tried = !self.broken;
            if tried && !self.write_all(batch) {
                self.broken = true;
                tracing::error!("io_uring failed; request heads are written one by one");
                // The kernel may still read these heads: their bytes must outlive
                // any write still in its hands.
                std::mem::forget(batch.iter().map(|q| q.head.clone()).collect::<Vec<_>>());
            }
            for (i, entry) in batch.iter().enumerate() {
                // A batch after a failed one never reached the ring: not written.
                let outcome = if tried {
                    self.outcomes.get_mut(i).and_then(Option::take)
                } else {
                    Some(Outcome::Failed(io::ErrorKind::WouldBlock.into()))
                };
                let outcome = match outcome {
                    Some(Outcome::Wrote(n)) if n == entry.head.len() => continue,
                    Some(outcome) => outcome,
                    None => Outcome::Unknown,
                };
                self.done.push((entry.ticket, outcome));
                if !entry.waker.will_wake(current) {
                    entry.waker.wake_by_ref();
                }
            }
        }
        queued.clear();
        // Keeps the allocation for the next turn.
        self.queued = queued;
    }

    /// A failure a test asked for: before entering the ring (false) or after (true).
    fn injected_failure(&mut self) -> Option<bool> {
        #[cfg(test)]
        let injected = self.fail_next.take();
        #[cfg(not(test))]
        let injected = None;
        injected
    }

    /// One `io_uring_enter` for up to [`RING_ENTRIES`] writes; their outcomes go to
    /// `outcomes`, in order (`None`: not known). False when the submission failed.
    fn write_all(&mut self, batch: &[Queued]) -> bool {
        self.outcomes.clear();
        self.outcomes.resize_with(batch.len(), || None);
        let mut waiting = 0usize;
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
                    self.outcomes[i] = Some(Outcome::Failed(io::ErrorKind::WouldBlock.into()));
                }
            }
        }
        // Until one `io_uring_enter` has taken the heads, a failure leaves them all
        // unsent (the ring is not entered again, so they never go).
        let mut entered = false;
        while waiting > 0 {
            self.submissions += 1;
            let result = match self.injected_failure() {
                Some(false) => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
                Some(true) => {
                    let _ = self.ring.submit_and_wait(waiting);
                    entered = true;
                    Err(io::Error::from_raw_os_error(libc::EBUSY))
                }
                None => self.ring.submit_and_wait(waiting),
            };
            match result {
                Ok(_) => entered = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("io_uring_enter: {e}");
                    if !entered {
                        for slot in self.outcomes.iter_mut().filter(|o| o.is_none()) {
                            *slot = Some(Outcome::Failed(io::ErrorKind::WouldBlock.into()));
                        }
                    }
                    return false;
                }
            }
            for cqe in self.ring.completion() {
                waiting = waiting.saturating_sub(1);
                let res = cqe.result();
                let outcome = match usize::try_from(res) {
                    Ok(n) => Outcome::Wrote(n),
                    Err(_) => Outcome::Failed(io::Error::from_raw_os_error(-res)),
                };
                if let Some(slot) = usize::try_from(cqe.user_data())
                    .ok()
                    .and_then(|i| self.outcomes.get_mut(i))
                {
                    *slot = Some(outcome);
                }
            }
        }
        true
    }
}
