//! The kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): the time of the last
//! tick, read from the vDSO without a system call and without reading the TSC, about a
//! quarter of what `Instant::now` costs. For the hot path's "did this take long" and
//! "was this a moment ago", where a tick's resolution (1 to 10 ms) is enough.

use std::sync::OnceLock;
use std::time::Duration;

/// The coarse clock now, in nanoseconds.
pub(crate) fn coarse_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; the clock id is a constant the
    // kernel has had since 2.6.32, and a failure leaves the zeroed value.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// How far the coarse clock moves at a time (the kernel's tick), learnt once.
pub(crate) fn coarse_tick() -> Duration {
    static TICK: OnceLock<Duration> = OnceLock::new();
    *TICK.get_or_init(|| {
        let mut tick = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes one timespec we own.
        let known = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut tick) } == 0;
        if known && (tick.tv_sec > 0 || tick.tv_nsec > 0) {
            Duration::new(tick.tv_sec as u64, tick.tv_nsec as u32)
        } else {
            // The coarsest tick Linux has (HZ=100).
            Duration::from_millis(10)
        }
    })
}
