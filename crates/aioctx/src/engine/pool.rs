//! The worker pool, as a service the engines call: one bounded pool of threads for the
//! whole process, serving the contexts' queues round-robin so that one busy context cannot
//! starve another. A worker runs a request with the plain blocking syscalls
//! (`blocking.rs`) and completes it.
//!
//! Each context has its own [`PoolQueue`]; queued requests can be taken back (cancel,
//! destroy), a request a worker is running (I/O of a regular file or block device, which
//! always finishes) cannot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};

use super::blocking::perform;
use super::pending::Pending;
use super::poller::HandOff;
use crate::core::Inflight;
use crate::sync::{lock, wait};
use crate::sys::fork;

/// Workers when `AIOCTX_WORKERS` does not say: enough to keep a disk busy at queue depth 32.
const DEFAULT_WORKERS: usize = 32;

/// The worker pool of the process.
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled with a permit when work arrives for a sleeping worker.
    work: Condvar,
    /// The most workers the pool runs: read when a worker may be added; set by
    /// `set_workers` (Relaxed: a stale read only delays the change by a request).
    max_workers: AtomicUsize,
}

#[derive(Default)]
struct PoolState {
    /// Context queues with requests waiting, in the order they get a worker.
    runnable: VecDeque<Arc<Queue>>,
    workers: usize,
    /// Workers asleep on `work`.
    idle: usize,
    /// Wake-ups granted and not yet taken: each enqueued request grants one to a sleeping
    /// worker, so a burst of requests wakes as many workers at once instead of a chain.
    permits: usize,
}

/// One context's requests waiting for a worker.
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    requests: Pending<Inflight>,
    /// Whether this queue is in the pool's runnable list (at most once).
    scheduled: bool,
}

/// Sets the most workers the process's pool runs (`Builder::workers`). Workers beyond a
/// lowered limit finish their current request and stay idle.
pub(crate) fn set_workers(workers: usize) {
    pool().max_workers.store(workers, Ordering::Relaxed);
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    static WATCH_FORKS: Once = Once::new();
    let pool = POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        work: Condvar::new(),
        max_workers: AtomicUsize::new(
            std::env::var("AIOCTX_WORKERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_WORKERS),
        ),
    });
    WATCH_FORKS.call_once(|| fork::hold_across_fork(&pool.state, forget_parents_work));
    pool
}

/// The child starts with no workers (none survived the fork), so its own contexts get new
/// ones. The queued requests belong to the parent's contexts, dead in the child (their
/// handles no longer resolve): they are leaked, never run and never completed.
fn forget_parents_work(state: &mut PoolState) {
    state.workers = 0;
    state.idle = 0;
    state.permits = 0;
    std::mem::forget(std::mem::take(&mut state.runnable));
}

impl Pool {
    /// Gets a worker going for one more request: wakes a sleeper that has no permit yet,
    /// else starts a worker if the pool may grow, else leaves the request to the next
    /// worker that finishes (busy workers look for work before they sleep). The sleeper is
    /// woken after the lock is let go, so that it does not wake only to wait for the lock.
    fn add_work(&'static self, queue: Option<Arc<Queue>>) {
        let mut state = lock(&self.state);
        state.runnable.extend(queue);
        if state.idle > state.permits {
            state.permits += 1;
            drop(state);
            self.work.notify_one();
        } else if state.workers < self.max_workers.load(Ordering::Relaxed) {
            let spawned = std::thread::Builder::new()
                .name("aioctx-worker".into())
                .spawn(move || self.work_loop());
            if spawned.is_ok() {
                state.workers += 1;
            }
        }
    }

    /// Puts a queue back in line after one of its requests was taken.
    fn reschedule(&self, queue: Arc<Queue>) {
        lock(&self.state).runnable.push_back(queue);
    }

    fn next_queue(&self) -> Arc<Queue> {
        let mut state = lock(&self.state);
        loop {
            if let Some(queue) = state.runnable.pop_front() {
                return queue;
            }
            state.idle += 1;
            while state.permits == 0 {
                state = wait(&self.work, state);
            }
            state.permits -= 1;
            state.idle -= 1;
        }
    }

    fn work_loop(&'static self) {
        loop {
            let queue = self.next_queue();
            let (request, more) = {
                let mut state = lock(&queue.state);
                let request = state.requests.pop_oldest();
                let more = !state.requests.is_empty();
                // Still scheduled while more wait: it goes back in line below.
                state.scheduled = more;
                (request, more)
            };
            if more {
                // Back of the line: the next worker serves another context first. (Outside
                // the queue's lock: submitters take the two locks one at a time too.)
                self.reschedule(Arc::clone(&queue));
            }
            if let Some(mut request) = request {
                let res = perform(&mut request.request);
                request.complete(res);
            }
        }
    }
}

/// A context's line at the process's worker pool.
#[derive(Clone)]
pub(crate) struct PoolQueue {
    queue: Arc<Queue>,
}

impl PoolQueue {
    pub(crate) fn new() -> PoolQueue {
        PoolQueue {
            queue: Arc::new(Queue {
                state: Mutex::new(QueueState::default()),
            }),
        }
    }

    /// Runs a request on a worker; it holds its file from now on (a copy failing, as for
    /// want of descriptors, is its event's error).
    pub(crate) fn run(&self, mut request: Inflight) {
        if let Err(error) = request.request.hold_file() {
            request.complete(-(error.raw_os_error().unwrap_or(libc::EIO) as i64));
            return;
        }
        let newly_runnable = {
            let mut state = lock(&self.queue.state);
            state.requests.insert(request);
            !std::mem::replace(&mut state.scheduled, true)
        };
        // A queue not yet scheduled is in no worker's hands: it is put in line now, after
        // its lock is let go, so that no submitter holds both locks at once.
        pool().add_work(newly_runnable.then(|| Arc::clone(&self.queue)));
    }

    /// Takes back the queued requests whose key `matching` selects (at most `limit`).
    pub(crate) fn take(&self, matching: impl Fn(u64) -> bool, limit: usize) -> Vec<Inflight> {
        lock(&self.queue.state).requests.take(matching, limit)
    }

    /// Takes back every queued request.
    pub(crate) fn cancel_all(&self) -> Vec<Inflight> {
        lock(&self.queue.state).requests.cancel_all()
    }

    /// What the poller calls to put on this queue a file it found ready that only a
    /// blocking transfer can move.
    pub(crate) fn hand_off(&self) -> HandOff {
        let queue = self.clone();
        Arc::new(move |request| queue.run(request))
    }
}
