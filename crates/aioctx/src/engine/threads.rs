//! The thread-pool engine: requests run in user space on the process's worker pool
//! (`pool.rs`), shared by every context; works anywhere.
//!
//! What the page cache serves completes on the submitting thread (`inline.rs`: about a
//! microsecond instead of two cross-CPU wake-ups); the rest waits in its context's queue
//! for a worker. Polls, and reads and writes of pipes, FIFOs, sockets and character
//! devices, wait for readiness in the poller instead, where no worker is held (see
//! `poller.rs`): they never block a worker for a peer that may never come.
//!
//! Queued requests and everything waiting in the poller can be cancelled; a request a
//! worker is running cannot, and destroy waits for it. The kernel-AIO engine sends here
//! what the kernel would run inside `io_submit` (`UserSpace::start_in_user_space`).

use std::io;
use std::sync::Arc;

use super::inline::complete_inline;
use super::poller::{cancel_polls, start_poll, start_transfer, waits_for_peer, HandOff};
use super::pool::PoolQueue;
use super::{cancel_queued_or_poll, complete_cancelled, Engine, EngineKind};
use crate::core::{Core, Inflight};
use crate::request::{Opcode, RwFlags};

/// A context's way into the pool and the poller.
pub(crate) struct UserSpace {
    core: Arc<Core>,
    pool: PoolQueue,
    /// Puts on this context's queue a file the poller found ready that only a blocking
    /// transfer can move.
    hand_off: HandOff,
}

impl UserSpace {
    pub(crate) fn new(core: &Arc<Core>) -> UserSpace {
        let pool = PoolQueue::new();
        UserSpace {
            core: Arc::clone(core),
            hand_off: pool.hand_off(),
            pool,
        }
    }

    /// Runs a request on a worker (a fallback: it waits for the device).
    pub(crate) fn run_on_worker(&self, request: Inflight) {
        self.pool.run(request);
    }

    /// Starts a request in user space: a poll in the poller, a pipe or socket transfer
    /// without blocking (else in the poller), what the page cache serves inline, the rest
    /// on a worker.
    pub(crate) fn start_in_user_space(
        &self,
        mut request: Inflight,
    ) -> Result<(), (Inflight, io::Error)> {
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
            self.pool.run(request);
        }
        Ok(())
    }

    /// Cancels the queued or waiting request whose identity is `obj`.
    pub(crate) fn cancel(&self, obj: u64) -> io::Result<()> {
        cancel_queued_or_poll(self.pool.take(|key| key == obj, 1), &self.core, obj)
    }

    /// Cancels everything queued or waiting.
    pub(crate) fn cancel_all(&self) {
        complete_cancelled(self.pool.cancel_all());
        cancel_polls(&self.core, |_| true, usize::MAX);
    }
}

/// A context's face of the pool.
pub(crate) struct ThreadsEngine {
    user_space: UserSpace,
}

impl ThreadsEngine {
    pub(crate) fn new(core: &Arc<Core>) -> ThreadsEngine {
        ThreadsEngine {
            user_space: UserSpace::new(core),
        }
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

    fn completes_inline(&self) -> bool {
        true
    }

    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        self.user_space.start_in_user_space(request)
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        self.user_space.cancel(obj)
    }

    fn cancel_all(&self) {
        self.user_space.cancel_all();
    }
}
