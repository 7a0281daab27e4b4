//! The life of a context: live, dying, dead, as one state word with the in-flight count,
//! and the "requests done" signal every destroyer waits on.
//!
//! This is the kernel's `kill_ioctx` + `ctx->rq_wait` (fs/aio.c), with the difference that
//! every concurrent destroyer waits, not only the first.

use std::sync::atomic::Ordering;

use crate::sync::model::{lock, wait, AtomicUsize, Condvar, Mutex};

/// Set once by the first destroyer; never cleared.
const DYING: usize = 1 << (usize::BITS - 1);

/// Where a context is in its life (derived from the state word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Accepting requests.
    Live,
    /// Destroy has begun; requests are still in flight.
    Dying,
    /// Destroy has begun and nothing is in flight: nothing will touch caller memory again.
    Dead,
}

pub(crate) struct Lifecycle {
    /// `DYING | in_flight`. Submitters add one before they start a request and completers
    /// subtract one after their last touch of caller memory; the first destroyer sets DYING.
    /// One word, so that "dying" and "how many in flight" are never read apart.
    word: AtomicUsize,
    /// "Requests done": notified by the completion that leaves a dying context with nothing
    /// in flight. The mutex only orders that notification against a destroyer's last check.
    requests_done: Mutex<()>,
    requests_done_cv: Condvar,
}

impl Lifecycle {
    pub(crate) fn new() -> Lifecycle {
        Lifecycle {
            word: AtomicUsize::new(0),
            requests_done: Mutex::new(()),
            requests_done_cv: Condvar::new(),
        }
    }

    pub(crate) fn state(&self) -> State {
        let word = self.word.load(Ordering::Acquire);
        match (word & DYING != 0, word & !DYING) {
            (false, _) => State::Live,
            (true, 0) => State::Dead,
            (true, _) => State::Dying,
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.state() == State::Live
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.word.load(Ordering::Acquire) & !DYING
    }

    /// Counts a request in before it is started; false if the context is no longer live.
    /// Once DYING is set the count only falls, so a dead context stays dead (a failed
    /// submit never bumps it, not even for a moment).
    pub(crate) fn enter(&self) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & DYING != 0 {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts a request out, after its last touch of caller memory. The Release half orders
    /// that touch before a destroyer's Acquire load of a zero count.
    pub(crate) fn exit(&self) {
        let prev = self.word.fetch_sub(1, Ordering::AcqRel);
        if prev == DYING | 1 {
            let _guard = lock(&self.requests_done);
            self.requests_done_cv.notify_all();
        }
    }

    /// Moves a live context to dying. True for the first caller only: that destroyer is the
    /// one that cancels and, after the wait, reports success.
    pub(crate) fn kill(&self) -> bool {
        self.word.fetch_or(DYING, Ordering::AcqRel) & DYING == 0
    }

    /// Blocks until a dying context has nothing in flight. Every destroyer waits here, so a
    /// second destroyer never returns while a request can still touch caller memory.
    pub(crate) fn wait_requests_done(&self) {
        // The race reproducer's negative control: without this wait, `aioctx race` must
        // report late writes (a test proves it). Never enabled outside that test.
        if cfg!(feature = "negative-control") {
            return;
        }
        let mut guard = lock(&self.requests_done);
        while self.in_flight() != 0 {
            guard = wait(&self.requests_done_cv, guard);
        }
    }
}
