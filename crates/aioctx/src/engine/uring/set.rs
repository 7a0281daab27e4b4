//! The process-wide set of shared io_uring instances.
//!
//! The set holds at most one instance per CPU (and no more than [`MAX_INSTANCES`]), made
//! as contexts come; contexts are dealt to them in turn. An instance lives as long as the
//! process (it is never closed, so it is never closed before every CQE was taken), with
//! its one reaper thread.
//!
//! The rings are mapped `MADV_DONTFORK`: a forked child has none of their memory and none
//! of the reapers, so after `fork()` the child's set starts empty (its contexts get new
//! instances) and the parent's instances are never touched there.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use super::instance::Instance;
use crate::sync::lock;

/// The most instances the process makes, however many CPUs it has.
const MAX_INSTANCES: usize = 4;

/// The process's instances, in the order they were made.
struct Set {
    instances: Vec<&'static Instance>,
    /// Deals contexts to instances in turn.
    next: usize,
}

static SET: Mutex<Set> = Mutex::new(Set {
    instances: Vec::new(),
    next: 0,
});

/// Incremented in a child by every `fork()`: instances of an older generation are the
/// parent's.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's fork generation.
pub(super) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// How many instances the process may make: one per CPU, at most `MAX_INSTANCES`.
fn wanted_instances() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_INSTANCES)
}

/// The instance a new context goes to, made (with its reaper) if it is the next one due.
/// If a new one cannot be made (out of descriptors, locked memory) an existing one serves;
/// only a process with none fails, as `io_uring_setup` did.
pub(super) fn for_new_context() -> io::Result<&'static Instance> {
    static WATCH_FORKS: Once = Once::new();
    // SAFETY: the handlers are plain functions that live as long as the process.
    WATCH_FORKS.call_once(|| unsafe {
        libc::pthread_atfork(
            Some(set_before_fork),
            Some(set_after_fork_in_parent),
            Some(set_after_fork_in_child),
        );
    });
    let mut set = lock(&SET);
    let at = set.next % wanted_instances();
    set.next = set.next.wrapping_add(1);
    if let Some(&instance) = set.instances.get(at) {
        return Ok(instance);
    }
    match make_instance() {
        Ok(instance) => {
            set.instances.push(instance);
            Ok(instance)
        }
        Err(e) => set
            .instances
            .get(at % set.instances.len().max(1))
            .copied()
            .ok_or(e),
    }
}

/// A new instance with its reaper running.
fn make_instance() -> io::Result<&'static Instance> {
    let instance = Instance::new(generation())?;
    // Leaked only once its reaper runs: an instance that never had an SQE may be closed.
    let instance: &'static Instance = Box::leak(Box::new(instance));
    let spawned = std::thread::Builder::new()
        .name("aioctx-uring".into())
        .spawn(move || instance.run_reaper());
    match spawned {
        Ok(_) => Ok(instance),
        Err(e) => {
            // SAFETY: the box leaked just above, known to no thread (the spawn failed) and
            // never given an SQE: closing it now frees nothing the kernel uses.
            drop(unsafe { Box::from_raw(instance as *const Instance as *mut Instance) });
            Err(e)
        }
    }
}

thread_local! {
    /// The set's lock, held by the forking thread across `fork()`, so that the child never
    /// inherits it locked by a thread that does not exist there.
    static HELD_ACROSS_FORK: RefCell<Option<MutexGuard<'static, Set>>> =
        const { RefCell::new(None) };
}

extern "C" fn set_before_fork() {
    let set = lock(&SET);
    HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(set));
}

extern "C" fn set_after_fork_in_parent() {
    HELD_ACROSS_FORK.with(|held| held.borrow_mut().take());
}

/// The child has none of the parent's rings mapped and none of its reapers: it starts an
/// empty set under a new generation. The parent's instances stay leaked, never touched.
extern "C" fn set_after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    HELD_ACROSS_FORK.with(|held| {
        if let Some(mut set) = held.borrow_mut().take() {
            set.instances.clear();
            set.next = 0;
        }
    });
}
