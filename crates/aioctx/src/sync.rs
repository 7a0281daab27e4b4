//! Lock helpers, and the primitives of the lifecycle swapped for loom's under `--cfg aioctx_loom`
//! so that the model checker explores every interleaving of the real code.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data
/// consistent before anything that could panic, so a poisoned lock holds valid data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on a condition variable, ignoring poisoning as `lock` does.
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar
        .wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `lifecycle.rs` and `doorbell.rs` are built from: std's primitives, or loom's when
/// model checking.
pub(crate) mod model {
    #[cfg(aioctx_loom)]
    pub(crate) use loom::sync::atomic::{fence, AtomicUsize};
    #[cfg(aioctx_loom)]
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

    #[cfg(not(aioctx_loom))]
    pub(crate) use std::sync::atomic::{fence, AtomicUsize};
    #[cfg(not(aioctx_loom))]
    pub(crate) use std::sync::{Condvar, Mutex};

    #[cfg(not(aioctx_loom))]
    pub(crate) use super::{lock, wait};

    #[cfg(aioctx_loom)]
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(aioctx_loom)]
    pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        condvar
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
