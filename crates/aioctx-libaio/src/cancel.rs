//! Thread cancellation held off for the length of an ABI call.
//!
//! The kernel's libaio makes raw system calls, none of them a cancellation point: a thread
//! that another one `pthread_cancel`s while it waits in `io_getevents` comes back with its
//! events and is cancelled at its next cancellation point. The library calls glibc's
//! wrappers on the caller's thread (`close` of a descriptor copy it drops, among others),
//! and a cancel acted on there would unwind through Rust frames that cannot unwind: the
//! process aborted. So each call holds cancellation off (`pthread_setcancelstate`) and
//! restores the caller's state on return, where a pending cancel then waits for the
//! program's next cancellation point, as on the kernel's libaio.

use libc::c_int;

/// glibc's value for `PTHREAD_CANCEL_DISABLE` (the libc crate does not define it for
/// Linux).
const PTHREAD_CANCEL_DISABLE: c_int = 1;

extern "C" {
    fn pthread_setcancelstate(state: c_int, oldstate: *mut c_int) -> c_int;
}

/// Cancellation held off on this thread until dropped.
pub(crate) struct HeldOff {
    before: c_int,
}

impl HeldOff {
    pub(crate) fn new() -> HeldOff {
        let mut before = PTHREAD_CANCEL_DISABLE;
        // SAFETY: pthread_setcancelstate only updates the calling thread's cancellation
        // state and writes the old one to the live local; it cannot fail for a valid state.
        unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut before) };
        HeldOff { before }
    }
}

impl Drop for HeldOff {
    fn drop(&mut self) {
        if self.before != PTHREAD_CANCEL_DISABLE {
            let mut ignored = 0;
            // SAFETY: as in `new`, with the state the thread had before.
            unsafe { pthread_setcancelstate(self.before, &mut ignored) };
        }
    }
}
