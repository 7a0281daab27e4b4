//! Which process a context belongs to. As in the kernel (a kioctx belongs to one `mm`), a
//! context is the process's that made it: after `fork()` the child's copy is dead (SPEC
//! §3). The child has none of the parent's threads, its copies of the engines' locks may be
//! held by threads it does not have, and some of the memory it inherits is still shared
//! with the parent (the completion ring, io_uring's queues, the kernel AIO ring), so the
//! child must not touch any of it: the lifecycle asks [`generation`] first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// How many `fork()`s separate this process from the first one that loaded aioctx:
/// incremented in each child, never in a parent.
static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    // The child has one thread, this one, until it starts others (which synchronises).
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This process's generation. Contexts made in it record it; one whose record differs is a
/// forked child's copy of a parent's context.
pub(crate) fn generation() -> u64 {
    static WATCHING: Once = Once::new();
    WATCHING.call_once(|| {
        // SAFETY: the handler is a plain function that lives as long as the process and
        // only increments an atomic (async-signal-safe, as a child handler must be).
        unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
    });
    GENERATION.load(Ordering::Relaxed)
}
