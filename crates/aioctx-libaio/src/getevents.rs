//! `io_getevents` and `io_pgetevents`: the caller's timeout and signal mask read safely,
//! then each event written out to the caller's array as it is taken from the ring.

use std::io;
use std::time::Duration;

use aioctx::ffi::abi::IoEvent;
use aioctx::Context;

use crate::submit::errno_of;
use crate::user::{self, Errno};

/// What the caller asked for, read out of its memory.
pub(crate) struct Wait {
    pub(crate) timeout: Option<Duration>,
    pub(crate) sigmask: Option<u64>,
}

impl Wait {
    /// Reads the `timespec` (NULL: no limit) and the signal mask (NULL: none), in the
    /// kernel's order: both `EFAULT`s come before any look at the context.
    pub(crate) fn read(timeout: usize, sigmask: usize) -> Result<Wait, Errno> {
        let timeout = match timeout {
            0 => None,
            address => Some(relative_timeout(user::read(address)?)),
        };
        // The kernel sigset is the first 64 bits of glibc's sigset_t (`_NSIG / 8` bytes).
        let sigmask = match sigmask {
            0 => None,
            address => Some(user::read::<u64>(address)?),
        };
        Ok(Wait { timeout, sigmask })
    }
}

/// A relative timeout as the kernel takes it (`timespec64_to_ktime`): no validation, and
/// anything at or below zero means "do not wait".
fn relative_timeout(ts: libc::timespec) -> Duration {
    let nanos = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    Duration::from_nanos(nanos.clamp(0, i128::from(u64::MAX)) as u64)
}

/// Waits for at least `min_nr` events (at most `nr`) and writes them to `events`, one by
/// one as each is taken: only the events delivered are written, an event leaves the ring
/// only once its write succeeded, and a write that fails ends the call (`EFAULT` if it was
/// the first), so a bad array loses nothing and a short one gets what fits.
pub(crate) fn get_events(
    context: &Context,
    min_nr: i64,
    nr: i64,
    events: usize,
    wait: Wait,
) -> Result<usize, Errno> {
    if min_nr < 0 || nr < min_nr {
        return Err(libc::EINVAL);
    }
    // No more events can ever be available than the ring holds.
    let max = (nr as u64).min(u64::from(context.capacity())) as usize;
    let min = (min_nr as usize).min(max);
    let mut next = events;
    context
        .get_events_raw(min, max, wait.timeout, wait.sigmask, &mut |event| {
            user::write_out(next, &event).map_err(io::Error::from_raw_os_error)?;
            next += size_of::<IoEvent>();
            Ok(())
        })
        .map_err(errno_of)
}
