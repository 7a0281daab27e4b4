//! The kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): the time of the last
//! tick, read from the vDSO without a system call and without reading the TSC, about a
//! quarter of what `Instant::now` costs. For the hot path's "did this take long" and
//! "was this a moment ago", where a tick's resolution (1 to 10 ms) is enough.

use std::sync::OnceLock;
use std::time::Duration;

/// The coarse clock now, in nanoseconds (0 if it cannot be read).
pub(crate) fn coarse_nanos() -> u64 {
    // SAFETY: clock_gettime writes the one timespec it is given.
    let now = coarse(|t| unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, t) });
    now.map_or(0, |now| now.as_nanos() as u64)
}

/// How far the coarse clock moves at a time (the kernel's tick), learnt once.
pub(crate) fn coarse_tick() -> Duration {
    static TICK: OnceLock<Duration> = OnceLock::new();
    *TICK.get_or_init(|| {
        // SAFETY: clock_getres writes the one timespec it is given.
        coarse(|t| unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, t) })
            .filter(|tick| !tick.is_zero())
            // The coarsest tick Linux has (HZ=100).
            .unwrap_or(Duration::from_millis(10))
    })
}

/// What `call` writes into a timespec, if it succeeds.
fn coarse(call: impl FnOnce(*mut libc::timespec) -> libc::c_int) -> Option<Duration> {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    (call(&mut time) == 0).then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
}
