//! Whether the program reaps its completions itself, told by its calls to get_events: what
//! lets an engine's reaper thread stand back.
//!
//! An engine whose completions a waiting thread can take itself (`Engine::ready_fd` and
//! `reap_ready`: io_uring's CQEs, kernel AIO's events) also keeps a reaper thread, for the
//! completions nobody waits for in get_events (eventfd users, programs that read the ring
//! directly or stopped calling). While the program does reap, that reaper only looks now
//! and then, so that it does not wake on the other CPU for every completion, on the
//! program's time. It posts at once while a request out signals a caller's eventfd: its
//! reader waits on that, not in get_events.
//!
//! That a starting eventfd request always ends a nap (also one that starts after the last
//! one out ended) is model-checked under `--cfg aioctx_loom` (the tests below).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::sync::model::{fence, lock, AtomicUsize, Condvar, Mutex};
use crate::sys::clock;

/// How long after a thread last came to get_events the reaper trusts the program to come
/// back for its completions.
const PROGRAM_REAPS_FOR: Duration = Duration::from_millis(2);

/// How often a reaper looks at its completions while the program reaps itself: the longest
/// a completion waits if the program stops calling.
const REAPER_TICK: Duration = Duration::from_millis(1);

/// When the program last came to get_events, and what a reaper's nap waits for.
pub(crate) struct Pace {
    /// Set by get_events, cleared by a reaper's look, which then trusts the program from
    /// that moment on: the program's calls read no clock, and write this line only once
    /// per look (a reaper that naps looks once a `REAPER_TICK`).
    program_came: AtomicBool,
    /// Until when (nanoseconds on the coarse clock) a program that called get_events is
    /// trusted to come back for its completions. Written and read by reapers.
    program_reaps_until: AtomicU64,
    /// `PROGRAM_REAPS_FOR` and one tick of the coarse clock, which lags by up to one: so
    /// the program is trusted for at least `PROGRAM_REAPS_FOR`, and at most two ticks more.
    trust_for: u64,
    /// Requests out whose completion signals a caller's eventfd.
    eventfd_requests: AtomicUsize,
    /// Reapers napping (or about to): a starting eventfd request wakes them only then.
    napping: AtomicUsize,
    /// Orders a starting eventfd request against a reaper's look before it naps.
    nap_lock: Mutex<()>,
    nap_end: Condvar,
}

impl Pace {
    pub(crate) fn new() -> Pace {
        Pace {
            program_came: AtomicBool::new(false),
            program_reaps_until: AtomicU64::new(0),
            trust_for: (PROGRAM_REAPS_FOR + clock::coarse_tick()).as_nanos() as u64,
            eventfd_requests: AtomicUsize::new(0),
            napping: AtomicUsize::new(0),
            nap_lock: Mutex::new(()),
            nap_end: Condvar::new(),
        }
    }

    /// Called by get_events: the program reaps for a while now. A load of a line the
    /// reaper writes only when it looks, and a store only once per look.
    pub(crate) fn program_is_reaping(&self) {
        if !self.program_came.load(Ordering::Relaxed) {
            self.program_came.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a thread came to get_events a moment ago (where it takes the completions
    /// there are, and sleeps on the engine's ready fd) and no request out signals an
    /// eventfd: the reaper may nap. A call since the last look is trusted from now on,
    /// so the trust runs from at most one reaper tick after the program's last call.
    pub(crate) fn program_reaps(&self) -> bool {
        let now = clock::coarse_nanos();
        if self.program_came.swap(false, Ordering::Relaxed) {
            self.program_reaps_until
                .fetch_max(now + self.trust_for, Ordering::Relaxed);
        }
        !self.eventfd_requests_out() && now < self.program_reaps_until.load(Ordering::Relaxed)
    }

    /// A request that signals an eventfd starts: a napping reaper goes back to posting
    /// every completion at once. Only the first of the requests out wakes it (a reaper
    /// that looked while one was out did not nap), and only if one naps: a wake-up costs
    /// a futex call, and a program that signals an eventfd with every request, as QEMU
    /// does, would pay it per request, or per burst. The fence pairs with the one in
    /// `nap`: either the reaper sees the request or we see it napping.
    pub(crate) fn eventfd_request_started(&self) {
        if self.eventfd_requests.fetch_add(1, Ordering::Relaxed) == 0 {
            fence(Ordering::SeqCst);
            if self.napping.load(Ordering::Relaxed) > 0 {
                let _napping = lock(&self.nap_lock);
                self.nap_end.notify_all();
            }
        }
    }

    pub(crate) fn eventfd_request_finished(&self) {
        self.eventfd_requests.fetch_sub(1, Ordering::Relaxed);
    }

    fn eventfd_requests_out(&self) -> bool {
        self.eventfd_requests.load(Ordering::Relaxed) > 0
    }

    /// Sleeps one tick, or less if an eventfd request starts. (Under loom the wait has no
    /// timeout, so a lost wake-up shows as a deadlock.)
    pub(crate) fn nap(&self) {
        let napping = lock(&self.nap_lock);
        self.napping.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !self.eventfd_requests_out() {
            let _ = self.nap_end.wait_timeout(napping, REAPER_TICK);
        }
        self.napping.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(all(test, aioctx_loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::thread;

    use super::Pace;

    /// A reaper's nap against a thread doing `submit`: a lost wake-up shows as a deadlock.
    fn nap_against(submit: fn(&Pace)) {
        loom::model(move || {
            let pace = Arc::new(Pace::new());
            let submitter = {
                let pace = Arc::clone(&pace);
                thread::spawn(move || submit(&pace))
            };
            pace.nap();
            submitter.join().unwrap();
        });
    }

    #[test]
    fn loom_napping_reaper_wakes_for_an_eventfd_request() {
        nap_against(|pace| pace.eventfd_request_started());
    }

    #[test]
    fn loom_napping_reaper_wakes_for_an_eventfd_request_after_the_last_ended() {
        nap_against(|pace| {
            pace.eventfd_request_started();
            pace.eventfd_request_started();
            pace.eventfd_request_finished();
            pace.eventfd_request_finished();
            pace.eventfd_request_started();
        });
    }
}
