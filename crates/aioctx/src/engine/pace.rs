//! Whether the program reaps its completions itself, told by its calls to get_events: what
//! lets an engine's reaper thread stand back.
//!
//! An engine whose completions a waiting thread can take itself (`Engine::ready_fd` and
//! `reap_ready`: io_uring's CQEs, kernel AIO's events) also keeps a reaper thread, for the
//! completions nobody waits for in get_events (eventfd users, programs that read the ring
//! directly or stopped calling). While the program does reap, that reaper only looks now
//! and then, so that it does not wake on the other CPU for every completion, on the
//! program's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long after a thread last came to get_events the reaper trusts the program to come
/// back for its completions.
const PROGRAM_REAPS_FOR: Duration = Duration::from_millis(2);

/// How often a reaper looks at its completions while the program reaps itself: the longest
/// a completion waits if the program stops calling.
pub(crate) const REAPER_TICK: Duration = Duration::from_millis(1);

/// When the program last came to get_events.
pub(crate) struct Pace {
    /// Until when (nanoseconds on `clock`) a program that called get_events is trusted to
    /// come back for its completions. Written by get_events, read by the reaper.
    program_reaps_until: AtomicU64,
    clock: Instant,
}

impl Pace {
    pub(crate) fn new() -> Pace {
        Pace {
            program_reaps_until: AtomicU64::new(0),
            clock: Instant::now(),
        }
    }

    /// Called by get_events: the program reaps for a while now.
    pub(crate) fn program_is_reaping(&self) {
        let until = (self.clock.elapsed() + PROGRAM_REAPS_FOR).as_nanos() as u64;
        self.program_reaps_until.store(until, Ordering::Relaxed);
    }

    /// Whether a thread came to get_events a moment ago (where it takes the completions
    /// there are, and sleeps on the engine's ready fd).
    pub(crate) fn program_reaps(&self) -> bool {
        let now = self.clock.elapsed().as_nanos() as u64;
        now < self.program_reaps_until.load(Ordering::Relaxed)
    }
}
