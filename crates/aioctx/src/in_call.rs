//! Whether this thread is inside a call of the library: what a thread-exit hook asks
//! before it waits on the library's locks.
//!
//! A program may call `exit()` from a signal handler that interrupted one of its own calls
//! into the library (common, though `exit` is not async-signal-safe); `exit` runs the
//! thread's destructors there, on top of the interrupted call, which may hold a lock the
//! destructor would wait for. A destructor that finds the thread inside a call does less
//! (see `engine/uring/exit.rs`) rather than wait for itself.

use std::cell::Cell;

thread_local! {
    /// Calls of the library this thread is inside (nested: a submit inside a batch).
    /// Const and without a destructor, so it can be read while the thread's locals are
    /// torn down.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks the thread inside a call while it lives.
pub(crate) struct InCall(());

impl InCall {
    pub(crate) fn enter() -> InCall {
        let _ = DEPTH.try_with(|depth| depth.set(depth.get() + 1));
        InCall(())
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Whether this thread is inside a call of the library.
pub(crate) fn inside() -> bool {
    DEPTH.try_with(|depth| depth.get() > 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_calls_are_inside_until_the_outermost_ends() {
        assert!(!inside());
        let outer = InCall::enter();
        let inner = InCall::enter();
        drop(inner);
        assert!(inside(), "still inside the outer call");
        drop(outer);
        assert!(!inside());
    }
}
