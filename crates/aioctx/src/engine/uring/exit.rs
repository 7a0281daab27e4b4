//! A thread that handed the kernel reads or writes of files waits for them when it exits.
//!
//! io_uring ties a request to the thread whose enter took its SQE (whichever thread pushed
//! it), and fails what of it is still to be issued on that thread when the thread exits: a
//! buffered read woken when its page came in (`-EFAULT`, seen on Linux 6.18), an O_DIRECT
//! request the device asked to be issued again. One on a C caller's lent number cannot be
//! submitted again (the number may name another file by then), and an `-EFAULT` looks
//! like the request's own (a bad buffer), so not even one that holds its file could be
//! submitted again on it; so the threads that may have handed such requests in wait,
//! when they exit, until every read and write of a regular file or a block device that
//! started before was taken, which the device bounds. The wait runs in a thread-local
//! destructor, before the kernel's own exit handling, and takes CQEs itself rather than
//! rely on the reaper; its sleeps in the kernel run the thread's task work, which issues or
//! posts the requests tied to it. (Pipes and sockets, which may wait for ever, are not
//! waited for: they hold their file and are submitted again, see the engine's module.)
//!
//! A thread that ends without destructors (a raw `exit` system call) leaves its requests
//! to the kernel: a request on a lent number then gets the kernel's error as its result.
//! So does one whose destructors run inside a call of the library (`exit()` from a signal
//! handler that interrupted it, see `in_call.rs`), where the wait could need a lock the
//! interrupted call holds.

use std::cell::Cell;

use super::instance::Instance;
use super::set::{self, MAX_INSTANCES};
use crate::in_call;

/// The instances a thread entered to submit after reads or writes of files started there,
/// by address; waited for when the thread's locals are torn down.
struct Entered {
    instances: Cell<[usize; MAX_INSTANCES]>,
}

thread_local! {
    static ENTERED: Entered = const {
        Entered {
            instances: Cell::new([0; MAX_INSTANCES]),
        }
    };
}

fn address(instance: &Instance) -> usize {
    instance as *const Instance as usize
}

/// Notes that this thread entered `instance` to submit. Costs a look at a thread-local
/// array; nothing while the thread's locals are torn down (its wait is under way).
pub(super) fn entered(instance: &Instance) {
    let address = address(instance);
    let _ = ENTERED.try_with(|entered| {
        let mut instances = entered.instances.get();
        if instances.contains(&address) {
            return;
        }
        if let Some(free) = instances.iter_mut().find(|slot| **slot == 0) {
            *free = address;
            entered.instances.set(instances);
        }
    });
}

/// In a forked child, on its one thread: the parent's instances are not the child's.
pub(super) fn forget_parents_instances() {
    let _ = ENTERED.try_with(|entered| entered.instances.set([0; MAX_INSTANCES]));
}

impl Drop for Entered {
    fn drop(&mut self) {
        if in_call::inside() {
            // exit() from a signal handler that interrupted a call of this thread, which
            // may hold the very locks the wait takes: its requests are left to the kernel
            // (the process is ending).
            return;
        }
        let entered = self.instances.get();
        // Only the process's own instances: in a forked child the parent's are not mapped
        // and no longer in the set.
        for instance in set::instances() {
            if entered.contains(&address(instance)) && instance.is_current() {
                instance.take_file_io_before_exit();
            }
        }
    }
}
