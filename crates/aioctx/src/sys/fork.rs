//! Fork handling, in one place: one `pthread_atfork` registration for the whole library,
//! and the one pattern every shared structure needs across `fork()`.
//!
//! Only the forking thread exists in the child. A lock that another thread held at the
//! fork would stay locked there for ever, so each shared structure's lock is taken by the
//! forking thread before the fork and let go on both sides after it
//! ([`hold_across_fork`]); in the child, the structure is first told that its threads are
//! gone (the pool's workers, the poll thread), and what belonged to the parent's contexts
//! is forgotten. State that is simply invalid in the child (kernel AIO contexts, a cached
//! pid) is reset by [`on_fork_in_child`].
//!
//! Locks are taken in the order they were registered and let go in reverse; the
//! registration itself is held across the fork too, so no hook is added half-way through.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, Once, RwLock, RwLockWriteGuard};

use crate::sync::lock;

/// One structure's part in a fork.
trait Hook: Send + Sync {
    /// In the parent before the fork: what to hold across it.
    fn prepare(&self) -> Option<Box<dyn Any>>;
    /// In the child, with what `prepare` returned, before it is let go.
    fn in_child(&self, held: &mut Option<Box<dyn Any>>);
}

/// A mutex held across every fork.
struct HeldLock<T: 'static> {
    mutex: &'static Mutex<T>,
    in_child: fn(&mut T),
}

impl<T: Send + 'static> Hook for HeldLock<T> {
    fn prepare(&self) -> Option<Box<dyn Any>> {
        Some(Box::new(lock(self.mutex)))
    }

    fn in_child(&self, held: &mut Option<Box<dyn Any>>) {
        let guard = held
            .as_mut()
            .and_then(|held| held.downcast_mut::<MutexGuard<'static, T>>());
        if let Some(guard) = guard {
            (self.in_child)(guard);
        }
    }
}

/// A read-write lock held for writing across every fork.
struct HeldWrite<T: 'static> {
    rwlock: &'static RwLock<T>,
    in_child: fn(&mut T),
}

impl<T: Send + Sync + 'static> Hook for HeldWrite<T> {
    fn prepare(&self) -> Option<Box<dyn Any>> {
        let guard = self
            .rwlock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Box::new(guard))
    }

    fn in_child(&self, held: &mut Option<Box<dyn Any>>) {
        let guard = held
            .as_mut()
            .and_then(|held| held.downcast_mut::<RwLockWriteGuard<'static, T>>());
        if let Some(guard) = guard {
            (self.in_child)(guard);
        }
    }
}

/// A reset run in the child only.
struct InChild(fn());

impl Hook for InChild {
    fn prepare(&self) -> Option<Box<dyn Any>> {
        None
    }

    fn in_child(&self, _held: &mut Option<Box<dyn Any>>) {
        (self.0)();
    }
}

/// Every hook, in registration order.
static HOOKS: Mutex<Vec<&'static dyn Hook>> = Mutex::new(Vec::new());

/// What the forking thread holds across `fork()`: the hooks' list, and each hook's part.
type Held = (
    MutexGuard<'static, Vec<&'static dyn Hook>>,
    Vec<Option<Box<dyn Any>>>,
);

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Holds `mutex` locked across every `fork()` of the process (taken by the forking thread,
/// so the child never inherits it locked by a thread that does not exist there), and runs
/// `in_child` on its data in the child before letting it go.
pub(crate) fn hold_across_fork<T: Send + 'static>(mutex: &'static Mutex<T>, in_child: fn(&mut T)) {
    register(Box::leak(Box::new(HeldLock { mutex, in_child })));
}

/// As [`hold_across_fork`], for a read-write lock, held for writing (so that no reader
/// or writer of the parent holds it across the fork).
#[doc(hidden)]
pub fn hold_write_across_fork<T: Send + Sync + 'static>(
    rwlock: &'static RwLock<T>,
    in_child: fn(&mut T),
) {
    register(Box::leak(Box::new(HeldWrite { rwlock, in_child })));
}

/// Runs `reset` in the child after every `fork()`, after the held locks' `in_child`s.
pub(crate) fn on_fork_in_child(reset: fn()) {
    register(Box::leak(Box::new(InChild(reset))));
}

fn register(hook: &'static dyn Hook) {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handlers are plain functions that live as long as the process.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
    });
    lock(&HOOKS).push(hook);
}

extern "C" fn before_fork() {
    let hooks = lock(&HOOKS);
    let held = hooks.iter().map(|hook| hook.prepare()).collect();
    HELD.with(|slot| *slot.borrow_mut() = Some((hooks, held)));
}

extern "C" fn in_parent() {
    let held = HELD.with(|slot| slot.borrow_mut().take());
    if let Some((hooks, mut held)) = held {
        // Let go in reverse order of taking.
        while held.pop().is_some() {}
        drop(hooks);
    }
}

extern "C" fn in_child() {
    let held = HELD.with(|slot| slot.borrow_mut().take());
    if let Some((hooks, mut held)) = held {
        for (hook, part) in hooks.iter().zip(held.iter_mut()) {
            hook.in_child(part);
        }
        while held.pop().is_some() {}
        drop(hooks);
    }
}

/// This process's pid, asked of the kernel once and again after each fork (a pid kept
/// across fork would name the parent): a `getpid` per call costs a system call.
#[doc(hidden)]
pub fn pid() -> libc::pid_t {
    use std::sync::atomic::{AtomicI32, Ordering};
    static PID: AtomicI32 = AtomicI32::new(0);
    static FORGET_ON_FORK: Once = Once::new();
    fn forget_pid() {
        PID.store(0, Ordering::Relaxed);
    }
    FORGET_ON_FORK.call_once(|| on_fork_in_child(forget_pid));
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id() as libc::pid_t;
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// How many `fork()`s separate this process from the first one that loaded aioctx:
/// incremented in each child, never in a parent.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This process's generation. As in the kernel (a kioctx belongs to one `mm`), a context is
/// the process's that made it: after `fork()` the child's copy is dead (SPEC §3). The child
/// has none of the parent's threads, its copies of the engines' locks may be held by threads
/// it does not have, and some of the memory it inherits is still shared with the parent (the
/// completion ring, io_uring's queues, the kernel AIO ring), so the child must not touch any
/// of it. Contexts record the generation they were made in; one whose record differs is a
/// forked child's copy of a parent's context (and so do the C ABI's handles).
#[doc(hidden)]
pub fn generation() -> u64 {
    use std::sync::atomic::Ordering;
    static WATCHING: Once = Once::new();
    fn count_fork_in_child() {
        // The child has one thread, this one, until it starts others (which synchronises).
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    WATCHING.call_once(|| on_fork_in_child(count_fork_in_child));
    GENERATION.load(Ordering::Relaxed)
}
