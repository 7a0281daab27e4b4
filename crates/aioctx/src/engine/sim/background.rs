//! The simulator's one thread for the whole process (no thread or descriptor per context):
//! it retries pipe and socket transfers waiting for their peer, and applies the idle rule
//! (see the module doc) to machines a caller has left alone.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::Machine;
use crate::sync::lock;

/// How often the thread looks at the machines it serves.
const ROUND: Duration = Duration::from_millis(5);

struct Served {
    machines: Vec<Weak<Machine>>,
    thread_running: bool,
}

/// The thread's list, for one process: a forked child makes its own (its parent's lock may
/// have been held by a thread the child does not have), and leaks the parent's.
struct Background {
    pid: u32,
    served: Mutex<Served>,
    changed: Condvar,
}

fn background() -> &'static Background {
    static CURRENT: AtomicPtr<Background> = AtomicPtr::new(std::ptr::null_mut());
    let pid = std::process::id();
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: a published Background is leaked, never freed: the pointer stays valid.
    if let Some(found) = unsafe { current.as_ref() } {
        if found.pid == pid {
            return found;
        }
    }
    let fresh = Box::into_raw(Box::new(Background {
        pid,
        served: Mutex::new(Served {
            machines: Vec::new(),
            thread_running: false,
        }),
        changed: Condvar::new(),
    }));
    match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just published, and leaked from now on.
        Ok(_) => unsafe { &*fresh },
        Err(other) => {
            // SAFETY: `fresh` was never published; `other` was, and is leaked.
            unsafe {
                drop(Box::from_raw(fresh));
                &*other
            }
        }
    }
}

/// Has the thread serve `machine` until it needs nothing (see `Machine::serve`).
pub(super) fn serve(machine: &Arc<Machine>) {
    let background = background();
    let mut served = lock(&background.served);
    if !served.thread_running {
        if std::thread::Builder::new()
            .name("aioctx-sim".into())
            .spawn(move || run(background))
            .is_err()
        {
            return;
        }
        served.thread_running = true;
    }
    served.machines.push(Arc::downgrade(machine));
    background.changed.notify_one();
}

fn run(background: &'static Background) {
    loop {
        let taken = {
            let mut served = lock(&background.served);
            while served.machines.is_empty() {
                served = crate::sync::wait(&background.changed, served);
            }
            std::mem::take(&mut served.machines)
        };
        // A machine that needs nothing more has marked itself unserved; it comes back
        // through `serve` (into the fresh list) when it needs the thread again.
        let keep: Vec<Weak<Machine>> = taken
            .into_iter()
            .filter(|weak| weak.upgrade().is_some_and(|machine| machine.serve()))
            .collect();
        lock(&background.served).machines.extend(keep);
        std::thread::sleep(ROUND);
    }
}
