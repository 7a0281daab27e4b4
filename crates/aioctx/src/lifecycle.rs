//! The life of a context: live, dying, dead, kept by the kernel's two references (fs/aio.c)
//! in user space, and the one order of destroy that every engine shares.
//!
//! - The submitters' gate (`ctx->users`): how many submitters are inside submit, between
//!   the liveness check and the return of `engine.start`.
//! - The in-flight count (`ctx->reqs`): requests started and not yet completed.
//!
//! Destroy kills the gate (live to dying, one atomic step: no submitter enters after it),
//! waits until no submitter is inside, lets the first destroyer cancel what may never finish,
//! and then waits for requests done. Because every submitter that got in before the kill has
//! left before the cancel, every request it started is there to be cancelled: no engine
//! needs a gate of its own. Unlike the kernel, every concurrent destroyer waits, not only the
//! first.

// Pure logic over the sync primitives: the raw edges live in `sys/`.
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::doorbell::Doorbell;
use crate::sync::model::{lock, wait, AtomicUsize, Condvar, Mutex};
use crate::sys::fork;

/// Set in both words once destroy has begun; never cleared.
const DYING: usize = 1 << (usize::BITS - 1);

/// Where a context is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Accepting requests.
    Live,
    /// Destroy has begun; a submitter is still inside submit or requests are in flight.
    Dying,
    /// Destroy has begun and nothing is in flight: nothing will touch caller memory again.
    Dead,
}

pub(crate) struct Lifecycle {
    /// `DYING | submitters inside submit`. A submitter adds one if DYING is not set and
    /// subtracts one when its request was started (or refused); the first destroyer sets
    /// DYING. One word, so that no submitter can enter once the kill is seen.
    users: AtomicUsize,
    /// `DYING | in flight`. Submitters add one inside the gate before starting a request;
    /// completers subtract one after their last touch of caller memory; destroyers set
    /// DYING once the gate is empty. One word, so that the completion that leaves a dying
    /// context empty knows it is the one to signal.
    reqs: AtomicUsize,
    /// Signalled when the last submitter leaves a killed gate and when the last request of
    /// a dying context completes. The mutex only orders those signals against a
    /// destroyer's last check of its condition.
    progress: Mutex<()>,
    progress_cv: Condvar,
    /// The fork generation of the process that made the context: in a forked child the
    /// copy is dead, and nothing of it may be touched (see `sys/fork.rs`).
    process: u64,
}

impl Lifecycle {
    pub(crate) fn new() -> Lifecycle {
        Lifecycle {
            users: AtomicUsize::new(0),
            reqs: AtomicUsize::new(0),
            progress: Mutex::new(()),
            progress_cv: Condvar::new(),
            process: fork::generation(),
        }
    }

    /// Whether this is a forked child's copy of a context of its parent (SPEC §3: invalid,
    /// `EINVAL` for every call; the parent's is unaffected).
    pub(crate) fn forked_away(&self) -> bool {
        self.process != fork::generation()
    }

    pub(crate) fn state(&self) -> State {
        let users = self.users.load(Ordering::Acquire);
        if self.forked_away() {
            // Nothing of the copy will ever run in this process.
            State::Dead
        } else if users & DYING == 0 {
            State::Live
        } else if users == DYING && self.in_flight() == 0 {
            State::Dead
        } else {
            State::Dying
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.users.load(Ordering::Acquire) & DYING == 0 && !self.forked_away()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.reqs.load(Ordering::Acquire) & !DYING
    }

    /// Enters the submitters' gate; false if the context is no longer live. Once DYING is
    /// set the count only falls (a refused submitter never bumps it, not even for a moment).
    pub(crate) fn enter_submit(&self) -> bool {
        if self.forked_away() {
            return false;
        }
        let mut users = self.users.load(Ordering::Relaxed);
        loop {
            if users & DYING != 0 {
                return false;
            }
            match self.users.compare_exchange_weak(
                users,
                users + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => users = actual,
            }
        }
    }

    /// Leaves the gate, once this submitter's request is started or refused. The Release
    /// half orders the engine's record of a started request before a destroyer's cancel.
    pub(crate) fn leave_submit(&self) {
        if self.users.fetch_sub(1, Ordering::Release) == DYING | 1 {
            self.signal_progress();
        }
    }

    /// Counts a request in; only inside the gate, so that nothing is counted in once a
    /// destroyer found the gate empty.
    pub(crate) fn enter(&self) {
        self.reqs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request out, after its last touch of caller memory. The Release half orders
    /// that touch before a destroyer's Acquire load of a zero count.
    pub(crate) fn exit(&self) {
        if self.reqs.fetch_sub(1, Ordering::AcqRel) == DYING | 1 {
            self.signal_progress();
        }
    }

    /// Destroy, in the kernel's order (`kill_ioctx`, then `free_ioctx_users`, then
    /// `free_ioctx_reqs`), for every engine: kill; wake the waiters of get_events so they
    /// leave; wait until no submitter is inside; the first destroyer cancels what may never
    /// finish (`cancel_all`); every destroyer waits for requests done. True for the first.
    /// A forked child's copy is not destroyed (its requests are the parent's, and their
    /// completions never come here): false at once, nothing touched.
    pub(crate) fn destroy(&self, waiters: &Doorbell, cancel_all: impl FnOnce()) -> bool {
        if self.forked_away() {
            return false;
        }
        let first = self.kill();
        waiters.ring();
        self.wait_submitters_gone();
        if first {
            cancel_all();
        }
        self.wait_requests_done();
        first
    }

    /// Moves a live context to dying: closes the gate. True for the first caller only: that
    /// destroyer is the one that cancels and, after the wait, reports success.
    fn kill(&self) -> bool {
        self.users.fetch_or(DYING, Ordering::AcqRel) & DYING == 0
    }

    /// Blocks until no submitter is inside submit. After this nothing new reaches the
    /// engine, and every request started is in the engine's hands, there to be cancelled.
    fn wait_submitters_gone(&self) {
        let mut guard = lock(&self.progress);
        while self.users.load(Ordering::Acquire) != DYING {
            guard = wait(&self.progress_cv, guard);
        }
    }

    /// Blocks until a dying context has nothing in flight. Every destroyer waits here, so a
    /// second destroyer never returns while a request can still touch caller memory.
    fn wait_requests_done(&self) {
        // Armed here, after the gate emptied, so that the count only falls from now on.
        self.reqs.fetch_or(DYING, Ordering::AcqRel);
        // The race reproducer's negative control: without this wait, `aioctx race` must
        // report late writes (a test proves it). Never enabled outside that test.
        if cfg!(feature = "negative-control") {
            return;
        }
        let mut guard = lock(&self.progress);
        while self.in_flight() != 0 {
            guard = wait(&self.progress_cv, guard);
        }
    }

    fn signal_progress(&self) {
        let _guard = lock(&self.progress);
        self.progress_cv.notify_all();
    }
}
