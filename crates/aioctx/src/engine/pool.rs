//! The worker pool, as a service the engines call: one bounded pool of threads for the
//! whole process, serving the contexts' queues round-robin so that one busy context cannot
//! starve another. A worker runs a request with the plain blocking syscalls
//! (`blocking.rs`) and completes it.
//!
//! A worker that finds nothing to do spins a little before it sleeps (one at a time): a
//! program that answers each completion with its next request (fio at a queue depth)
//! hands that request to a running worker, without a wake-up on either side.
//!
//! Each context has its own [`PoolQueue`]; queued requests can be taken back (cancel,
//! destroy), a request a worker is running (I/O of a regular file or block device, which
//! always finishes) cannot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use super::blocking::perform;
use super::pending::Pending;
use super::poller::HandOff;
use crate::core::Inflight;
use crate::sync::{lock, wait};
use crate::sys::fork;

/// Workers when `AIOCTX_WORKERS` does not say: enough to keep a disk busy at queue depth 32.
const DEFAULT_WORKERS: usize = 32;

/// How long a worker with nothing to do looks for new work before it sleeps: about the
/// time a program takes to answer a completion with its next request. A request that
/// arrives meanwhile costs no wake-up (a futex call on the submitter's side, and ~35 µs
/// before a sleeping worker runs on another CPU of a small VM).
const SPIN: Duration = Duration::from_micros(50);

/// How many workers spin at once: one is enough to take the next request of a program
/// that answers completions one by one, and more would take the CPU that program needs.
const MAX_SPINNERS: usize = 1;

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
    /// The claims of the workers spinning for work, not yet claimed: a submitter takes one
    /// and sets it instead of waking a sleeper.
    spinners: Vec<Arc<AtomicBool>>,
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
    state.spinners.clear();
    std::mem::forget(std::mem::take(&mut state.runnable));
}

impl Pool {
    /// Gets a worker going for one more request: claims the spinning worker if there is
    /// one (it takes the request without a wake-up), else wakes a sleeper that has no
    /// permit yet, else starts a worker if the pool may grow, else leaves the request to
    /// the next worker that finishes (busy workers look for work before they sleep). The
    /// sleeper is woken after the lock is let go, so that it does not wake only to wait for
    /// the lock.
    fn add_work(&'static self, queue: Option<Arc<Queue>>) {
        let mut state = lock(&self.state);
        state.runnable.extend(queue);
        if let Some(claim) = state.spinners.pop() {
            // Relaxed: the spinner takes the pool's lock before it looks for the work.
            claim.store(true, Ordering::Relaxed);
        } else if state.idle > state.permits {
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

    /// The next request for this worker: one queued now, else one that arrives while it
    /// spins (if fewer than `MAX_SPINNERS` others spin), else one it is woken for.
    fn next_request(&self) -> Inflight {
        let mut state = lock(&self.state);
        let mut may_spin = true;
        loop {
            if let Some(request) = take_request(&mut state) {
                return request;
            }
            if may_spin && state.spinners.len() < MAX_SPINNERS {
                let claim = Arc::new(AtomicBool::new(false));
                state.spinners.push(Arc::clone(&claim));
                drop(state);
                let claimed = spin_until(&claim);
                state = lock(&self.state);
                // Withdrawn under the lock, so a claim comes before or not at all.
                state.spinners.retain(|other| !Arc::ptr_eq(other, &claim));
                // Claimed: the work may have gone to a worker that finished meanwhile, and
                // this one may spin again; not claimed: it sleeps.
                may_spin = claimed || claim.load(Ordering::Relaxed);
                continue;
            }
            state.idle += 1;
            while state.permits == 0 {
                state = wait(&self.work, state);
            }
            state.permits -= 1;
            state.idle -= 1;
            may_spin = true;
        }
    }

    fn work_loop(&'static self) {
        loop {
            let mut request = self.next_request();
            let res = perform(&mut request.request);
            request.complete(res);
        }
    }
}

/// Takes the oldest request of the first runnable queue, and puts that queue back at the
/// end of the line if more wait in it (the next request goes to another context first).
/// Under the pool's lock, so that a queue with requests is always in line when a submitter
/// gets a worker going for it: a woken worker finds the request it was woken for (or a
/// worker that finished meanwhile took it). Takes the queue's lock inside the pool's;
/// nobody takes them in the other order (submitters take one at a time).
fn take_request(state: &mut PoolState) -> Option<Inflight> {
    while let Some(queue) = state.runnable.pop_front() {
        let (request, more) = {
            let mut queued = lock(&queue.state);
            let request = queued.requests.pop_oldest();
            let more = !queued.requests.is_empty();
            queued.scheduled = more;
            (request, more)
        };
        if more {
            state.runnable.push_back(queue);
        }
        // None: cancel emptied the queue while it was in line.
        if request.is_some() {
            return request;
        }
    }
    None
}

/// Spins, yielding the CPU to whatever else is runnable on it, until `claim` is set or
/// `SPIN` passes; returns whether it was claimed.
fn spin_until(claim: &AtomicBool) -> bool {
    let start = Instant::now();
    loop {
        if claim.load(Ordering::Relaxed) {
            return true;
        }
        if start.elapsed() >= SPIN {
            return false;
        }
        std::thread::yield_now();
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
