//! The thread-pool engine: one bounded pool of workers shared by every context of the
//! process, serving contexts round-robin so that one busy context cannot starve another.
//!
//! What the page cache serves completes on the submitting thread (`inline.rs`: about a
//! microsecond instead of two cross-CPU wake-ups); the rest waits in its context's queue
//! for a worker. Polls, and reads and writes of pipes, FIFOs, sockets and character
//! devices, wait for readiness in the poller instead, where no worker is held (see
//! `poller.rs`): they never block a worker for a peer that may never come.
//!
//! Queued requests and everything waiting in the poller can be cancelled; a request a
//! worker is running (I/O of a regular file or block device, which always finishes)
//! cannot, and destroy waits for it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};

use super::blocking::perform;
use super::inline::complete_inline;
use super::poller::{cancel_polls, start_poll, start_transfer, waits_for_peer, HandOff};
use super::{cancel_queued_or_poll, complete_cancelled, Engine, EngineKind};
use crate::core::{Core, Inflight};
use crate::request::{Opcode, RwFlags};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::sync::{lock, wait};

/// Workers when `AIOCTX_WORKERS` does not say: enough to keep a disk busy at queue depth 32.
const DEFAULT_WORKERS: usize = 32;

/// The worker pool of the process.
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled with a permit when work arrives for a sleeping worker.
    work: Condvar,
    /// The most workers the pool runs: read when a worker may be added; set by
    /// `set_workers` (Relaxed: a stale read only delays the change by a request).
    max_workers: std::sync::atomic::AtomicUsize,
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
    requests: VecDeque<Inflight>,
    /// Whether this queue is in the pool's runnable list (at most once).
    scheduled: bool,
}

/// Sets the most workers the process's pool runs (`Builder::workers`). Workers beyond a
/// lowered limit finish their current request and stay idle.
pub(crate) fn set_workers(workers: usize) {
    pool()
        .max_workers
        .store(workers, std::sync::atomic::Ordering::Relaxed);
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        // SAFETY: the handlers are plain functions that live as long as the process.
        unsafe {
            libc::pthread_atfork(
                Some(pool_before_fork),
                Some(pool_after_fork_in_parent),
                Some(pool_after_fork_in_child),
            )
        };
        Pool {
            state: Mutex::new(PoolState::default()),
            work: Condvar::new(),
            max_workers: std::sync::atomic::AtomicUsize::new(
                std::env::var("AIOCTX_WORKERS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or(DEFAULT_WORKERS),
            ),
        }
    })
}

thread_local! {
    /// The pool's lock, held by the forking thread across `fork()`, so that the child never
    /// inherits it locked by a thread that does not exist there.
    static HELD_ACROSS_FORK: RefCell<Option<MutexGuard<'static, PoolState>>> =
        const { RefCell::new(None) };
}

extern "C" fn pool_before_fork() {
    let state = lock(&pool().state);
    HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(state));
}

extern "C" fn pool_after_fork_in_parent() {
    HELD_ACROSS_FORK.with(|held| held.borrow_mut().take());
}

/// The child starts with no workers (none survived the fork), so its own contexts get new
/// ones. The queued requests belong to the parent's contexts, dead in the child (their
/// handles no longer resolve): they are leaked, never run and never completed.
extern "C" fn pool_after_fork_in_child() {
    HELD_ACROSS_FORK.with(|held| {
        if let Some(mut state) = held.borrow_mut().take() {
            state.workers = 0;
            state.idle = 0;
            state.permits = 0;
            std::mem::forget(std::mem::take(&mut state.runnable));
        }
    });
}

impl Pool {
    /// Gets a worker going for one more request: wakes a sleeper that has no permit yet,
    /// else starts a worker if the pool may grow, else leaves the request to the next
    /// worker that finishes (busy workers look for work before they sleep).
    fn add_work(&'static self, queue: Option<Arc<Queue>>) {
        let mut state = lock(&self.state);
        state.runnable.extend(queue);
        if state.idle > state.permits {
            state.permits += 1;
            self.work.notify_one();
        } else if state.workers < self.max_workers.load(std::sync::atomic::Ordering::Relaxed) {
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
            let request = {
                let mut state = lock(&queue.state);
                let request = state.requests.pop_front();
                if state.requests.is_empty() {
                    state.scheduled = false;
                } else {
                    // Back of the line: the next worker serves another context first.
                    self.reschedule(Arc::clone(&queue));
                }
                request
            };
            if let Some(mut request) = request {
                let res = perform(&mut request.request);
                request.complete(res);
            }
        }
    }
}

impl Queue {
    /// Queues a request for a worker; it holds its file from now on (a copy failing, as
    /// for want of descriptors, is its event's error).
    fn enqueue(self: &Arc<Queue>, mut request: Inflight) {
        if let Err(error) = request.request.hold_file() {
            request.complete(-(error.raw_os_error().unwrap_or(libc::EIO) as i64));
            return;
        }
        let mut state = lock(&self.state);
        state.requests.push_back(request);
        let newly_runnable = !state.scheduled;
        state.scheduled = true;
        pool().add_work(newly_runnable.then(|| Arc::clone(self)));
    }
}

/// A context's face of the pool.
pub(crate) struct ThreadsEngine {
    core: Arc<Core>,
    queue: Arc<Queue>,
    /// Puts on this context's queue a file the poller found ready that only a blocking
    /// transfer can move.
    hand_off: HandOff,
}

impl ThreadsEngine {
    pub(crate) fn new(core: &Arc<Core>) -> ThreadsEngine {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
        });
        let for_hand_off = Arc::clone(&queue);
        ThreadsEngine {
            core: Arc::clone(core),
            queue,
            hand_off: Arc::new(move |request| for_hand_off.enqueue(request)),
        }
    }

    pub(crate) fn enqueue(&self, request: Inflight) {
        self.queue.enqueue(request);
    }

    /// Takes the queued requests `matches` selects (at most `limit`).
    fn take_queued(&self, matches: impl Fn(u64) -> bool, limit: usize) -> Vec<Inflight> {
        let mut state = lock(&self.queue.state);
        let mut taken = Vec::new();
        let mut at = 0;
        while at < state.requests.len() && taken.len() < limit {
            if matches(state.requests[at].request.key()) {
                taken.extend(state.requests.remove(at));
            } else {
                at += 1;
            }
        }
        taken
    }
}

impl Engine for ThreadsEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Threads
    }

    fn supports(&self, _flags: RwFlags) -> bool {
        true
    }

    /// What is not done inline is queued or polled, and both hold the file.
    fn runs_lent_fds(&self) -> bool {
        true
    }

    fn start(&self, mut request: Inflight) -> Result<(), (Inflight, io::Error)> {
        match request.request.opcode {
            Opcode::Poll => return start_poll(request),
            // Nothing to run: a hop to a worker would only measure the hop.
            Opcode::Noop => {
                request.complete(0);
                return Ok(());
            }
            _ => {}
        }
        if !request.request.mode.regular {
            // A pipe or socket request outlives the call (in the poller or on a worker):
            // it holds its file from here on.
            if let Err(e) = request.request.hold_file() {
                return Err((request, e));
            }
            if let Some(file) = waits_for_peer(&request.request) {
                return start_transfer(&self.core, request, file, &self.hand_off);
            }
        }
        if let Some(request) = complete_inline(request) {
            self.enqueue(request);
        }
        Ok(())
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        cancel_queued_or_poll(self.take_queued(|key| key == obj, 1), &self.core, obj)
    }

    fn cancel_all(&self) {
        complete_cancelled(self.take_queued(|_| true, usize::MAX));
        cancel_polls(&self.core, |_| true, usize::MAX);
    }
}
