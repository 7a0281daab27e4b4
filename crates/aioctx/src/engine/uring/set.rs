//! The process-wide set of shared io_uring instances.
//!
//! The set holds at most one instance per CPU (and no more than [`MAX_INSTANCES`]), made
//! as contexts come; contexts are dealt to them in turn. An instance lives as long as the
//! process (so it is never closed before every CQE was taken), with its one reaper thread:
//! the process holds at most four io_uring fds and four reapers, however many contexts.
//!
//! The rings are mapped `MADV_DONTFORK`: a forked child has none of their memory and none
//! of the reapers, so after `fork()` the child's set starts empty (its contexts get new
//! instances) and the parent's instances, which record the fork generation they were made
//! in, are never touched there (`Instance::is_current`). The set's lock is held across
//! `fork()` through `crate::sys::fork`, the library's one `pthread_atfork`.

use std::io;
use std::sync::{Mutex, Once, OnceLock};

use super::exit;
use super::instance::Instance;
use super::reaper;
use crate::sync::lock;
use crate::sys::fork;

/// The most instances the process makes, however many CPUs it has.
pub(super) const MAX_INSTANCES: usize = 4;

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

/// How many instances the process may make: one per CPU, at most `MAX_INSTANCES`. Asked
/// once: `available_parallelism` reads the cgroup's quota files, a dozen system calls.
fn wanted_instances() -> usize {
    static WANTED: OnceLock<usize> = OnceLock::new();
    *WANTED.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_INSTANCES)
    })
}

/// The instance a new context goes to, made (with its reaper) if it is the next one due.
/// If a new one cannot be made (out of descriptors, locked memory, threads) an existing one
/// serves; only a process with none fails, as `io_uring_setup` did.
pub(super) fn for_new_context() -> io::Result<&'static Instance> {
    static WATCH_FORKS: Once = Once::new();
    WATCH_FORKS.call_once(|| {
        fork::hold_across_fork(&SET, forget_parents_instances);
        fork::on_fork_in_child(exit::forget_parents_instances);
    });
    let mut set = lock(&SET);
    let wanted = wanted_instances();
    let at = set.next % wanted;
    set.next = (set.next + 1) % wanted;
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

/// The process's instances, as they are now.
pub(super) fn instances() -> Vec<&'static Instance> {
    lock(&SET).instances.clone()
}

/// A new instance with its reaper running.
fn make_instance() -> io::Result<&'static Instance> {
    let instance = Box::new(Instance::new()?);
    let raw: *mut Instance = Box::into_raw(instance);
    // SAFETY: `raw` is the live box just leaked; shared from here on, never mutated.
    let shared: &'static Instance = unsafe { &*raw };
    let spawned = std::thread::Builder::new()
        .name("aioctx-uring".into())
        .spawn(move || reaper::run(shared));
    match spawned {
        Ok(_) => Ok(shared),
        Err(e) => {
            // SAFETY: the box leaked just above, known to no thread (the spawn failed) and
            // never given an SQE: closing it now frees nothing the kernel uses.
            drop(unsafe { Box::from_raw(raw) });
            Err(e)
        }
    }
}

/// In a forked child: the parent's rings are not mapped and its reapers do not run, so the
/// child starts an empty set. The parent's instances stay leaked, never touched.
fn forget_parents_instances(set: &mut Set) {
    set.instances.clear();
    set.next = 0;
}
