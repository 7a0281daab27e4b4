//! One io_uring instance shared by many contexts: its queues, its locks, and the taking of
//! CQEs.
//!
//! A context costs an instance nothing but its part of the table (`in_kernel.rs`): no
//! descriptor, no thread. Whoever takes a CQE (the submitter after its enter, a thread
//! waiting in get_events of any context on the instance, or the reaper) completes the
//! request it names into that request's own context.
//!
//! Locks: the submission lock (the SQ tail's owner and the table) may be held while the
//! completion lock (the CQ head's owner) is taken, never the other way round; no thread
//! waits for anything while it holds the completion lock. So a submitter that finds the
//! kernel refusing SQEs until CQEs are taken (`EBUSY`) takes them itself, under the lock it
//! holds, and no thread (the reaper included) is ever the only one that can make room.

use std::io;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use io_uring::squeue;

use super::exit;
use super::in_kernel::{InKernel, Owner, Taken};
use super::raw::{CqConsumer, RawRing, SqProducer};
use super::reaper::Parking;
use super::sqe::{prepare, Op};
use crate::core::Completions;
use crate::engine::pace::Pace;
use crate::engine::take_back;
use crate::sync::lock;
use crate::sys::fd::wait_readable;
use crate::sys::fork;

/// The `user_data` of async-cancel SQEs (never the address of a request), and the mark of
/// taken CQEs that complete no request.
pub(super) const NO_REQUEST: u64 = 0;

/// CQEs taken off the completion queue per lock hold.
const BATCH: usize = 32;

/// SQEs of an instance: what one enter submits, not a limit on requests in flight (those
/// wait in the kernel, not in the submission queue).
const SQ_ENTRIES: u32 = 1024;

/// CQEs an instance holds before the kernel keeps the overflow aside (IORING_FEAT_NODROP,
/// which the probe requires): a CQE is never lost, only flushed later (see `take_all`), so
/// the requests in flight of all the instance's contexts, whatever their capacities, are
/// not bounded by it.
const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;

/// How long a thread that exits sleeps on the instance's fd before it looks again whether
/// the requests it waits for were taken (by the reaper, which leaves the fd quiet).
const EXIT_LOOKS_EVERY: Duration = Duration::from_millis(1);

/// A taken CQE: `(user_data, res)`.
type Cqe = (u64, i32);

/// What the submission lock protects.
pub(super) struct Submission {
    /// Every context's requests whose SQE was pushed and whose CQE was not yet taken.
    /// Written by submitters and takers of CQEs.
    pub(super) in_kernel: InKernel,
    /// The only writer of the submission queue's tail.
    sq: SqProducer,
    /// CQEs a submitter took itself to make room while it held this lock (see `push`):
    /// still registered, unregistered and completed when the lock is let go.
    stash: Vec<Cqe>,
}

/// The submission lock held: on release, the CQEs taken under it are completed, after the
/// lock was let go.
pub(super) struct Locked<'a> {
    instance: &'a Instance,
    /// Let go only in `drop`.
    guard: ManuallyDrop<MutexGuard<'a, Submission>>,
}

impl Deref for Locked<'_> {
    type Target = Submission;
    fn deref(&self) -> &Submission {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Submission {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard is taken once, here, and the field is not used after.
        let mut sub = unsafe { ManuallyDrop::take(&mut self.guard) };
        if sub.stash.is_empty() {
            return;
        }
        let mut done = Vec::new();
        // Unregistering may submit orphans again, which may stash more.
        while !sub.stash.is_empty() {
            let mut stash = std::mem::take(&mut sub.stash);
            self.instance.unregister(&mut sub, &mut stash);
            done.append(&mut stash);
        }
        drop(sub);
        self.instance.finish(&done);
    }
}

/// CQEs taken off the queue, not yet handed to their requests.
pub(super) struct Batch {
    entries: [Cqe; BATCH],
    len: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            entries: [(NO_REQUEST, 0); BATCH],
            len: 0,
        }
    }

    fn taken(&self) -> &[Cqe] {
        &self.entries[..self.len]
    }

    fn taken_mut(&mut self) -> &mut [Cqe] {
        &mut self.entries[..self.len]
    }
}

/// Whether an enter failed only because the kernel is busy (completions not yet taken,
/// no memory for a request right now) or a signal came.
fn busy(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
    )
}

/// One io_uring and everything its contexts, its reaper and its submitters share.
pub(super) struct Instance {
    raw: RawRing,
    /// Serialises producers of the submission queue and guards `in_kernel`.
    submission: Mutex<Submission>,
    /// The only consumer of the completion queue.
    completion: Mutex<CqConsumer>,
    pub(super) parking: Parking,
    pub(super) pace: Pace,
    /// The fork generation it was made in (see `is_current`).
    generation: u64,
    /// Names the next context dealt to this instance.
    next_owner: AtomicU64,
    /// Whether a read or write of a file was ever started here: only then does a thread
    /// that enters to submit wait for such requests when it exits (see `exit.rs`).
    file_io_started: AtomicBool,
    /// Set once the instance's number was found to name something else (the program closed
    /// it): threads then no longer poll it, and enter through their registration only
    /// (`RawRing::enters_here`).
    number_lost: AtomicBool,
    /// Takes of CQEs in a row by get_events that found none: after `LOOKS_BEFORE_CHECK`,
    /// whether the number still names the ring is checked (a closed number polls ready for
    /// ever, `POLLNVAL`, and a waiter would spin on it).
    empty_takes: AtomicU32,
}

/// How many takes in a row that found no CQE make a thread check the instance's number: a
/// waiter that spins on a closed number makes that many in a few milliseconds, one that
/// finds the reaper took its CQEs first at most a few per request.
const LOOKS_BEFORE_CHECK: u32 = 4096;

impl Instance {
    pub(super) fn new() -> io::Result<Instance> {
        let (raw, sq, cq) = RawRing::new(SQ_ENTRIES, CQ_ENTRIES)?;
        Ok(Instance {
            raw,
            submission: Mutex::new(Submission {
                in_kernel: InKernel::default(),
                sq,
                stash: Vec::new(),
            }),
            completion: Mutex::new(cq),
            parking: Parking::new(),
            pace: Pace::new(),
            generation: fork::generation(),
            next_owner: AtomicU64::new(1),
            file_io_started: AtomicBool::new(false),
            number_lost: AtomicBool::new(false),
            empty_takes: AtomicU32::new(0),
        })
    }

    /// A new context on this instance, by the name it has there.
    pub(super) fn open_context(&self) -> Owner {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        self.submission().in_kernel.open(owner);
        owner
    }

    /// Whether this instance belongs to this process: false in a forked child, where its
    /// rings are not mapped (`MADV_DONTFORK`) and its reaper does not run, so nothing may
    /// touch it.
    pub(super) fn is_current(&self) -> bool {
        self.generation == fork::generation()
    }

    /// The instance's fd, which polls readable while CQEs (of any context) wait; None once
    /// the program closed its number.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.number_lost.load(Ordering::Relaxed)).then(|| self.raw.as_fd())
    }

    /// Whether this thread can hand SQEs to the kernel: it registered the ring while its
    /// number named it (the first enter of a thread does), so a program that closes the
    /// number later does not cut it off. A thread that comes after such a close cannot.
    pub(super) fn enters_here(&self) -> bool {
        self.raw.enters_here()
    }

    /// Takes every CQE there is for a thread in get_events (see `take_all`), and checks
    /// now and then, while it finds none, that the number it polls still names the ring.
    /// With no CQE there (a program whose reads the page cache served inline), it takes no
    /// lock and writes nothing the reaper reads: the count of empty looks is a hint, and
    /// two waiters that miss one of each other's looks only check a little later.
    pub(super) fn take_for_waiter(&self) {
        let ready = self.raw.cq_ready() || self.raw.cq_overflowed();
        if ready && self.take_all() > 0 {
            self.empty_takes.store(0, Ordering::Relaxed);
            return;
        }
        let empty = self.empty_takes.load(Ordering::Relaxed) + 1;
        self.empty_takes.store(empty, Ordering::Relaxed);
        if empty.is_multiple_of(LOOKS_BEFORE_CHECK)
            && !self.number_lost.load(Ordering::Relaxed)
            && !self.raw.still_numbered()
        {
            self.number_lost.store(true, Ordering::Relaxed);
        }
    }

    /// Takes the submission lock.
    pub(super) fn submission(&self) -> Locked<'_> {
        Locked {
            instance: self,
            guard: ManuallyDrop::new(lock(&self.submission)),
        }
    }

    /// Notes that a read or write of a file starts; called before its SQE is pushed, so
    /// that a thread whose enter takes the SQE finds the note after it.
    pub(super) fn file_io_starts(&self) {
        if !self.file_io_started.load(Ordering::Relaxed) {
            self.file_io_started.store(true, Ordering::Release);
        }
    }

    /// Hands the published SQEs to the kernel from this thread. The kernel ties each SQE
    /// an enter takes to the entering thread, whichever thread pushed it (and cancels what
    /// is still queued for that thread when it exits): so a thread that may have handed in
    /// reads or writes of files is noted, to wait for them when it exits.
    fn submit(&self) -> io::Result<u32> {
        let submitted = self.raw.submit();
        if self.file_io_started.load(Ordering::Acquire) {
            exit::entered(self);
        }
        submitted
    }

    /// Queues one SQE without entering the kernel, unless the queue is full: then what is
    /// queued is handed to the kernel and the push retried, never dropped.
    ///
    /// # Safety
    /// The entry's memory (buffers, iovecs) must stay valid until its CQE is taken.
    pub(super) unsafe fn push(&self, sub: &mut Submission, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller keeps the entry's memory valid until its CQE.
            if unsafe { self.raw.push(&mut sub.sq, entry) } {
                self.parking.pushed();
                return;
            }
            self.make_room(sub);
        }
    }

    /// The submission queue is full: hands it to the kernel. If the kernel is busy until
    /// CQEs are taken, takes them on this thread (into the stash, completed when the lock
    /// is let go), so that room never waits for another thread.
    fn make_room(&self, sub: &mut Submission) {
        match self.submit() {
            Err(e) if busy(&e) => {
                let mut cq = lock(&self.completion);
                let before = sub.stash.len();
                while let Some(taken) = self.raw.pop(&mut cq) {
                    sub.stash.push(taken);
                }
                self.raw.release(&cq);
                drop(cq);
                let taken = sub.stash.len() - before;
                self.parking.taken(taken);
                if taken == 0 {
                    std::thread::yield_now();
                }
            }
            _ => {}
        }
    }

    /// Whether no SQE waits in the submission queue for an enter.
    pub(super) fn sq_is_empty(&self) -> bool {
        let sub = lock(&self.submission);
        let queued = self.raw.queued(&sub.sq);
        drop(sub);
        queued == 0
    }

    /// Hands the queued SQEs to the kernel, and returns only once the kernel took every
    /// SQE published before (by this thread or another's enter): a request on a lent
    /// number must have its file resolved by the kernel before the submit call returns.
    /// While the kernel is busy (`EBUSY`, `EAGAIN`: completions not yet taken) this thread
    /// takes the CQEs itself and retries; an enter that took only part of the queue (the
    /// kernel out of memory for requests) is repeated.
    fn enter_submit(&self) {
        let tail = self.raw.published_tail();
        loop {
            match self.submit() {
                Err(e) if busy(&e) => {
                    self.take_all();
                    std::thread::yield_now();
                }
                Ok(_) if !self.raw.taken_through(tail) => std::thread::yield_now(),
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
        self.finish(batch.taken());
        self.parking.wake();
    }

    /// Takes up to a batch of CQEs; the caller holds the completion lock.
    fn drain(&self, cq: &mut CqConsumer, batch: &mut Batch) {
        batch.len = 0;
        while batch.len < BATCH {
            let Some(taken) = self.raw.pop(cq) else {
                break;
            };
            batch.entries[batch.len] = taken;
            batch.len += 1;
        }
        // Publishes the new head before the count drops, so that a reaper which sees
        // nothing pending sees no CQE either.
        self.raw.release(cq);
        self.parking.taken(batch.len);
    }

    /// Drains ready CQEs if no other thread is doing it, unregistering their requests
    /// under the submission lock the caller holds.
    fn take_ready(&self, sub: &mut Submission, batch: &mut Batch) {
        batch.len = 0;
        let mut cq = match self.completion.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        self.drain(&mut cq, batch);
        drop(cq);
        self.unregister(sub, batch.taken_mut());
    }

    /// Forgets taken requests in `in_kernel`, after which their memory may be freed. A
    /// CQE the table does not know (a cancel's) is marked to complete nothing. A request
    /// the kernel cancelled on its own (its submitting thread exited) is submitted again
    /// instead, from this thread, and its CQE is marked likewise.
    fn unregister(&self, sub: &mut Submission, taken: &mut [Cqe]) {
        let mut resubmitted = false;
        for cqe in taken.iter_mut() {
            let (user_data, res) = *cqe;
            if user_data == NO_REQUEST {
                continue;
            }
            match sub.in_kernel.taken(user_data, res) {
                Taken::Done => {}
                Taken::Unknown => cqe.0 = NO_REQUEST,
                Taken::Resubmit => {
                    // SAFETY: a registered request's user_data is the address of its boxed
                    // `Op`; its CQE was taken, so the kernel has let go of it, and it stays
                    // registered (so not freed) while this thread holds the lock.
                    let op = unsafe { &mut *(user_data as *mut Op) };
                    // The table resubmits only what holds its file (`Fd::Held`).
                    debug_assert!(op.inflight.request.lent.is_none());
                    let entry = prepare(op).user_data(user_data);
                    // SAFETY: as in `start`: the SQE points into the leaked box, freed
                    // only after its CQE was taken.
                    unsafe { self.push(sub, &entry) };
                    cqe.0 = NO_REQUEST;
                    resubmitted = true;
                }
            }
        }
        if resubmitted {
            // Handed in now if the kernel takes it; else it goes with the next enter (the
            // reaper's wait submits what is queued).
            let _ = self.submit();
            self.parking.wake();
        }
    }

    /// Takes every CQE there is, of every context, and completes its request, on the
    /// calling thread; how many it took. CQEs the kernel kept aside while the queue was
    /// full are flushed into it and taken too.
    pub(super) fn take_all(&self) -> usize {
        let mut batch = Batch::new();
        let mut taken = 0;
        loop {
            self.drain(&mut lock(&self.completion), &mut batch);
            if batch.len == 0 {
                if !self.raw.cq_overflowed() || !self.enters_here() {
                    return taken;
                }
                self.raw.flush_overflow();
                continue;
            }
            taken += batch.len;
            self.unregister(&mut self.submission(), batch.taken_mut());
            self.finish(batch.taken());
        }
    }

    /// For a thread that exits (see `exit.rs`): returns once every read or write of a file
    /// that started before was taken, taking CQEs itself meanwhile. Its sleep on the
    /// instance's fd lets the kernel run this thread's task work, which posts the CQEs of
    /// the requests tied to it; other threads' requests complete through theirs, or the
    /// kernel's own workers, not through this thread.
    pub(super) fn take_file_io_before_exit(&self) {
        let Some(last) = self.submission().in_kernel.close_file_io_generation() else {
            return;
        };
        loop {
            self.take_all();
            if self.submission().in_kernel.file_io_taken_through(last) {
                return;
            }
            match self.fd() {
                Some(fd) => {
                    let _ = wait_readable(fd, None, Some(EXIT_LOOKS_EVERY), None);
                }
                None => std::thread::sleep(EXIT_LOOKS_EVERY),
            }
        }
    }

    /// Waits in the kernel for a CQE (handing in whatever SQEs are queued), then takes
    /// every CQE there is.
    pub(super) fn wait_and_take_all(&self) {
        let _ = self.raw.submit_and_wait();
        self.take_all();
    }

    /// Completes the requests of taken, unregistered CQEs.
    fn finish(&self, taken: &[Cqe]) {
        let mut completions = Completions::new();
        for &(user_data, res) in taken {
            if user_data == NO_REQUEST {
                continue;
            }
            // SAFETY: a registered request's user_data is the token `start` lent with
            // `lend_to_kernel`; its CQE was taken and unregistered once, so it is taken
            // back once.
            let op: Box<Op> = unsafe { take_back(user_data) };
            let Op { inflight, iovecs } = *op;
            drop(iovecs);
            let signals_eventfd = inflight.request.resfd.is_some();
            completions.complete(inflight, i64::from(res));
            if signals_eventfd {
                self.pace.eventfd_request_finished();
            }
        }
    }
}
