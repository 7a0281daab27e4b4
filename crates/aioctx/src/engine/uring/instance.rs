//! One io_uring instance shared by many contexts: its queues, its locks, and the taking of
//! CQEs.
//!
//! A context costs an instance nothing but a table in `in_kernel`: no descriptor, no
//! thread. Whoever takes a CQE (the submitter after its enter, a thread waiting in
//! get_events of any context on the instance, or the reaper) completes the request it
//! names into that request's own context.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use io_uring::{squeue, IoUring};

use super::in_kernel::{InKernel, Owner};
use super::reaper::{Pace, Parking};
use super::set;
use super::sqe::{prepare, Op};
use crate::sync::lock;

/// The `user_data` of async-cancel SQEs (never the address of a request), and the mark of
/// taken CQEs that complete no request.
pub(super) const NO_REQUEST: u64 = 0;

/// CQEs taken off the completion queue per lock hold.
const BATCH: usize = 32;

/// SQEs of an instance: what one enter submits, not a limit on requests in flight (those
/// wait in the kernel, not in the submission queue).
const SQ_ENTRIES: u32 = 1024;

/// CQEs an instance holds before the kernel keeps the overflow aside (IORING_FEAT_NODROP,
/// which the probe requires): CQEs are never lost, only flushed later (see `take_all`).
const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;

/// What the submission lock protects.
pub(super) struct Submission {
    /// Every context's requests whose SQE was pushed and whose CQE was not yet taken.
    /// Written by submitters and takers of CQEs.
    pub(super) in_kernel: InKernel,
}

/// CQEs taken off the queue, not yet handed to their requests.
pub(super) struct Batch {
    entries: [(u64, i32); BATCH],
    len: usize,
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            entries: [(0, 0); BATCH],
            len: 0,
        }
    }

    fn taken(&self) -> &[(u64, i32)] {
        &self.entries[..self.len]
    }
}

/// One io_uring and everything its contexts, its reaper and its submitters share.
pub(super) struct Instance {
    uring: IoUring,
    /// Serialises producers of the submission queue and guards `in_kernel`.
    submission: Mutex<Submission>,
    /// Serialises consumers of the completion queue.
    completion: Mutex<()>,
    pub(super) parking: Parking,
    pub(super) pace: Pace,
    /// The fork generation it was made in (see `is_current`).
    generation: u64,
    /// Names the next context dealt to this instance.
    next_owner: AtomicU64,
}

impl Instance {
    pub(super) fn new(generation: u64) -> io::Result<Instance> {
        let uring = IoUring::builder()
            .dontfork()
            .setup_clamp()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)?;
        Ok(Instance {
            uring,
            submission: Mutex::new(Submission {
                in_kernel: InKernel::default(),
            }),
            completion: Mutex::new(()),
            parking: Parking::new(),
            pace: Pace::new(),
            generation,
            next_owner: AtomicU64::new(1),
        })
    }

    /// A name for a new context on this instance.
    pub(super) fn new_owner(&self) -> Owner {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether this instance belongs to this process: false in a forked child, where its
    /// memory is not mapped and its reaper does not run, so nothing may touch it.
    pub(super) fn is_current(&self) -> bool {
        self.generation == set::generation()
    }

    /// The instance's fd, which polls readable while CQEs (of any context) wait.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.uring.as_fd()
    }

    pub(super) fn submission(&self) -> MutexGuard<'_, Submission> {
        lock(&self.submission)
    }

    /// Queues one SQE; a full queue is handed to the kernel and the push retried, never
    /// dropped.
    ///
    /// # Safety
    /// The entry's memory (buffers, iovecs) must stay valid until its CQE is taken.
    pub(super) unsafe fn push(&self, _sub: &mut MutexGuard<'_, Submission>, entry: &squeue::Entry) {
        loop {
            // SAFETY: the submission lock (`_sub`) makes this the only producer.
            let mut sq = unsafe { self.uring.submission_shared() };
            // SAFETY: the caller keeps the entry's memory valid until its CQE.
            if unsafe { sq.push(entry) }.is_ok() {
                self.parking.pushed();
                return;
            }
            drop(sq);
            self.enter_submit();
        }
    }

    /// Whether no SQE waits in the submission queue for an enter.
    pub(super) fn sq_is_empty(&self) -> bool {
        let _sub = self.submission();
        // SAFETY: the submission lock makes this the only user of the submission queue.
        unsafe { self.uring.submission_shared() }.is_empty()
    }

    /// Hands the queued SQEs to the kernel. An SQE the kernel did not take stays queued
    /// and goes with the next enter; busy (`EBUSY`, `EAGAIN`: completions not yet taken)
    /// and `EINTR` are retried after the reaper was woken to drain the completion queue.
    pub(super) fn enter_submit(&self) {
        loop {
            match self.uring.submit() {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                    ) =>
                {
                    self.parking.wake();
                    std::thread::yield_now();
                }
                _ => return,
            }
        }
    }

    /// Hands the queued SQEs to the kernel, then takes what already completed and makes
    /// sure the reaper watches whatever is still out. The enter runs outside the
    /// submission lock (it can take a device doorbell's worth of time), so the reaper and
    /// other submitters are not held up by it; SQEs pushed under the lock keep their order
    /// in the queue, which is all a cancel relies on.
    pub(super) fn enter_and_take(&self) {
        self.enter_submit();
        let mut batch = Batch::new();
        self.take_ready(&mut self.submission(), &mut batch);
        self.finish(&batch);
        self.parking.wake();
    }

    /// Takes up to a batch of CQEs; the caller holds the completion lock.
    fn drain(&self, _cq: &MutexGuard<'_, ()>, batch: &mut Batch) {
        // SAFETY: the completion lock (`_cq`) makes this the only consumer.
        let mut cq = unsafe { self.uring.completion_shared() };
        batch.len = 0;
        for cqe in cq.by_ref().take(BATCH) {
            batch.entries[batch.len] = (cqe.user_data(), cqe.result());
            batch.len += 1;
        }
        // Publishes the new head before the count drops.
        drop(cq);
        self.parking.taken(batch.len);
    }

    /// Drains ready CQEs if no other thread is doing it, unregistering their requests
    /// under the submission lock the caller holds.
    fn take_ready(&self, sub: &mut MutexGuard<'_, Submission>, batch: &mut Batch) {
        batch.len = 0;
        let cq = match self.completion.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        self.drain(&cq, batch);
        drop(cq);
        self.unregister(sub, batch);
    }

    /// Forgets taken requests in `in_kernel`, after which their memory may be freed. A
    /// request the kernel cancelled on its own (its submitting thread exited) is submitted
    /// again instead, from this thread, and its CQE is dropped from the batch.
    fn unregister(&self, sub: &mut MutexGuard<'_, Submission>, batch: &mut Batch) {
        for taken in &mut batch.entries[..batch.len] {
            let (user_data, res) = *taken;
            if user_data == NO_REQUEST {
                continue;
            }
            // SAFETY: a request's user_data is the address of its boxed `Op`; its CQE was
            // taken, so the kernel has let go of it, and only `finish`, on this thread and
            // after this, frees it.
            let op = unsafe { &mut *(user_data as *mut Op) };
            let Some(registered) = sub.in_kernel.unregister(op.owner, user_data) else {
                continue;
            };
            if !registered.orphaned(res) {
                continue;
            }
            let entry = prepare(op).user_data(user_data);
            sub.in_kernel
                .insert(op.owner, user_data, registered.resubmitted());
            // SAFETY: as in `start`: the SQE points into the leaked box, freed after its CQE.
            unsafe { self.push(sub, &entry) };
            self.enter_submit();
            taken.0 = NO_REQUEST;
        }
    }

    /// Takes every CQE there is and completes its request, on the calling thread.
    pub(super) fn take_all(&self) {
        let mut batch = Batch::new();
        loop {
            self.drain(&lock(&self.completion), &mut batch);
            if batch.len == 0 {
                if !self.cq_overflowed() {
                    return;
                }
                // CQEs the full queue could not hold wait in the kernel until an enter
                // flushes them (the instance's fd polls readable meanwhile).
                self.enter_submit();
                continue;
            }
            self.unregister(&mut self.submission(), &mut batch);
            self.finish(&batch);
        }
    }

    /// Whether the kernel holds CQEs aside because the completion queue was full.
    fn cq_overflowed(&self) -> bool {
        let _sub = self.submission();
        // SAFETY: the submission lock (`_sub`) makes this the only handle on the queue; it
        // only reads the flags.
        unsafe { self.uring.submission_shared() }.cq_overflow()
    }

    /// Waits in the kernel for a CQE, then takes every CQE there is.
    fn wait_and_take_all(&self) {
        // SAFETY: io_uring_enter with no SQEs to submit and no argument: it only waits.
        let _ = unsafe {
            self.uring.submitter().enter::<libc::sigset_t>(
                0,
                1,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        self.take_all();
    }

    /// Completes the requests of taken, unregistered CQEs.
    fn finish(&self, batch: &Batch) {
        for &(user_data, res) in batch.taken() {
            if user_data == NO_REQUEST {
                continue;
            }
            // SAFETY: a request's user_data is the address `start` leaked with
            // Box::into_raw; its CQE is taken once, so the box is rebuilt once.
            let op = unsafe { Box::from_raw(user_data as *mut Op) };
            let Op {
                inflight, iovecs, ..
            } = *op;
            drop(iovecs);
            let signals_eventfd = inflight.request.resfd.is_some();
            inflight.complete(i64::from(res));
            if signals_eventfd {
                self.parking.eventfd_request_finished();
            }
        }
    }

    /// The reaper thread: posts completions as they happen (see `reaper.rs`).
    pub(super) fn run_reaper(&'static self) {
        loop {
            self.parking.park();
            if self.pace.program_reaps(&self.parking) {
                self.parking.nap();
                self.take_all();
            } else {
                self.wait_and_take_all();
            }
        }
    }
}
