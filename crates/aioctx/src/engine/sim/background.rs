//! The simulator's one thread for the whole process (no thread or descriptor per context):
//! it retries pipe and socket transfers waiting for their peer, and moves the clock of a
//! machine whose requests carry an eventfd once the program has left it idle (a caller
//! that waits on the eventfd, not in get_events, would otherwise wait forever).

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::Machine;
use crate::sync::lock;

/// How often the thread looks at the machines it serves.
const ROUND: Duration = Duration::from_millis(5);

struct Served {
    machines: Vec<Weak<Machine>>,
    /// The process the thread runs in (a forked child starts without one).
    thread_pid: Option<u32>,
}

struct Background {
    served: Mutex<Served>,
    changed: Condvar,
}

fn background() -> &'static Background {
    static BACKGROUND: OnceLock<Background> = OnceLock::new();
    BACKGROUND.get_or_init(|| Background {
        served: Mutex::new(Served {
            machines: Vec::new(),
            thread_pid: None,
        }),
        changed: Condvar::new(),
    })
}

/// Has the thread serve `machine` until it needs nothing (see `Machine::serve`).
pub(super) fn serve(machine: &Arc<Machine>) {
    let background = background();
    let mut served = lock(&background.served);
    let pid = std::process::id();
    if served.thread_pid != Some(pid) {
        // The parent's machines are dead in a forked child.
        served.machines.clear();
        if std::thread::Builder::new()
            .name("aioctx-sim".into())
            .spawn(move || run(background))
            .is_err()
        {
            return;
        }
        served.thread_pid = Some(pid);
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
