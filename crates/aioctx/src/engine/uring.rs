//! The io_uring engine: one ring per context, sized for the context's capacity.
//!
//! A request becomes one SQE whose `user_data` is the address of the boxed request, so the
//! request (its buffers, its iovecs, its open file) lives exactly until its CQE is taken.
//! The submitting thread enters the kernel itself and takes the CQEs that are already there
//! when it returns: a NOOP, or anything io_uring finishes during submit, completes on the
//! caller's thread without a hop to another CPU. Whatever completes later (disk, pipes, io-wq punts) is taken by
//! whichever comes first: a thread waiting in get_events, which also polls the ring's fd
//! and takes the CQEs itself (one wake-up instead of two: about 5x the rate of 1-byte pipe
//! reads at queue depth 1 on a 2-vCPU VM), or the context's reaper thread, which sleeps in
//! `io_uring_enter` while SQEs are out and posts events as they happen, with nobody
//! calling get_events (eventfd users, programs reading the ring directly).
//!
//! What the page cache serves completes on the caller's thread first (`inline.rs`, as the
//! thread pool does): a page-cache hit then costs one plain syscall, which measured
//! 0.5-0.6M reads/s at queue depth 1 against 0.36-0.46M as an SQE.
//!
//! Submit never blocks on I/O: io_uring first tries a request without blocking and, where
//! that fails, waits for the page or the pipe asynchronously (or hands it to its own
//! io-wq workers), so a cold buffered read or an empty pipe returns from submit at once.
//!
//! Cancel and destroy use async cancel by `user_data`. A request's address stays in the
//! `in_kernel` table until its CQE was taken, and every cancel SQE is submitted under the
//! lock of that table, so the address a cancel names cannot have been freed and reused by
//! another request in between.
//!
//! io_uring ties a request to the thread that submitted it: when that thread exits, the
//! kernel cancels its requests still waiting for a pipe or socket or queued for io-wq
//! (`-ECANCELED`, though nobody asked). Such a request is submitted again by the thread
//! that takes its CQE, so it completes as it would have under kernel AIO.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

mod raw;
use raw::{CqConsumer, RawRing, SqProducer, IORING_ENTER_GETEVENTS};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::inline::complete_inline;
use super::probe::survive_setup;
use super::{plugged, Engine, EngineKind, Unavailable};
use crate::core::{Core, Inflight};
use crate::request::{Opcode, RwFlags};
use crate::sync::{lock, wait};

/// The `user_data` of async-cancel SQEs (never the address of a request), and the mark of
/// taken CQEs that complete no request.
const NO_REQUEST: u64 = 0;

/// How often a request the kernel cancelled on its own is submitted again before its
/// `-ECANCELED` is delivered (a bound against resubmitting for ever).
const MAX_RESUBMITS: u8 = 64;

/// CQEs taken off the completion queue per lock hold.
const BATCH: usize = 32;

/// How long after a thread last came to get_events the reaper trusts the program to come
/// back for its completions (see `Ring::program_reaps`).
const PROGRAM_REAPS_FOR: Duration = Duration::from_millis(2);

/// How often the reaper looks at the completion queue while the program reaps itself: the
/// longest a completion waits if the program stops calling.
const REAPER_TICK: Duration = Duration::from_millis(1);

/// The most SQEs a ring is set up with; requests in flight beyond it wait in the kernel,
/// not in the submission queue, which only holds what one enter submits.
const MAX_SQ_ENTRIES: u32 = 1024;

/// The opcodes the engine uses, for the probe.
const REQUIRED_OPS: [(u8, &str); 8] = [
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Nop::CODE, "NOP"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// A request while the kernel holds it; its address is its SQE's `user_data`.
struct Op {
    inflight: Inflight,
    /// The iovec array a vectored SQE points at.
    iovecs: Vec<libc::iovec>,
}

/// A request the kernel holds, as `in_kernel` knows it.
struct Registered {
    /// The request's identity (`obj`), for cancel.
    key: u64,
    /// Whether a cancel was issued for it: `-ECANCELED` is then its answer.
    cancel_issued: bool,
    /// How often it was submitted again after the kernel cancelled it on its own.
    resubmitted: u8,
}

impl Registered {
    /// Whether `res` is a cancel nobody asked for, from the exit of the submitting thread.
    fn orphaned(&self, res: i32) -> bool {
        res == -libc::ECANCELED && !self.cancel_issued && self.resubmitted < MAX_RESUBMITS
    }
}

/// What the submission lock protects.
struct Submission {
    /// Requests whose SQE was pushed and whose CQE was not yet taken, by `user_data`.
    /// Written by submitters and takers of CQEs.
    in_kernel: HashMap<u64, Registered>,
    /// Set by `cancel_all`: the context is dying and starts nothing more.
    closed: bool,
    /// The only writer of the submission queue's tail.
    sq: SqProducer,
}

/// CQEs taken off the queue, not yet handed to their requests.
struct Batch {
    entries: [(u64, i32); BATCH],
    len: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            entries: [(0, 0); BATCH],
            len: 0,
        }
    }

    fn taken(&self) -> &[(u64, i32)] {
        &self.entries[..self.len]
    }
}

/// The ring and everything the submitters, the reaper and the engine share.
struct Ring {
    raw: RawRing,
    /// Serialises producers of the submission queue and guards `in_kernel`.
    submission: Mutex<Submission>,
    /// The only consumer of the completion queue.
    completion: Mutex<CqConsumer>,
    /// SQEs pushed whose CQE was not yet taken (requests and cancels). Incremented under
    /// the submission lock, decremented under the completion lock; the reaper waits in
    /// the kernel while it is nonzero and parks when it is zero.
    pending: AtomicUsize,
    /// Whether the reaper is parked (or about to be); read by submitters to skip the
    /// wake-up when it is not.
    parked: AtomicBool,
    /// Set when the engine is dropped: the reaper leaves once nothing is pending.
    shutdown: Mutex<bool>,
    unpark: Condvar,
    /// Until when (nanoseconds on `clock`) a program that called get_events is trusted to
    /// come back for its completions. Written by get_events, read by the reaper.
    program_reaps_until: AtomicU64,
    /// Requests out whose completion signals an eventfd: somebody waits on that eventfd,
    /// not in get_events, so their completions are posted at once.
    eventfd_requests: AtomicUsize,
    clock: Instant,
}

impl Ring {
    fn new(capacity: u32) -> io::Result<Ring> {
        let sq_entries = capacity.clamp(8, MAX_SQ_ENTRIES);
        // Every request in flight may have a CQE waiting, plus one for each cancel.
        let cq_entries = capacity.saturating_mul(2).max(2 * sq_entries);
        let (raw, sq, cq) = RawRing::new(sq_entries, cq_entries)?;
        Ok(Ring {
            raw,
            submission: Mutex::new(Submission {
                in_kernel: HashMap::new(),
                closed: false,
                sq,
            }),
            completion: Mutex::new(cq),
            pending: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            shutdown: Mutex::new(false),
            unpark: Condvar::new(),
            program_reaps_until: AtomicU64::new(0),
            eventfd_requests: AtomicUsize::new(0),
            clock: Instant::now(),
        })
    }

    /// Pushes SQEs and submits them.
    ///
    /// # Safety
    /// Every entry's memory (buffers, iovecs) must stay valid until its CQE is taken.
    unsafe fn submit(&self, sub: &mut MutexGuard<'_, Submission>, entries: &[squeue::Entry]) {
        for entry in entries {
            // SAFETY: the caller's promise, passed on.
            unsafe { self.push(sub, entry) };
        }
        self.enter_submit();
    }

    /// Whether no SQE waits in the submission queue for an enter.
    fn sq_is_empty(&self) -> bool {
        self.raw.queued(&lock(&self.submission).sq) == 0
    }

    /// Queues one SQE without entering the kernel, unless the queue is full.
    ///
    /// # Safety
    /// As for `submit`.
    unsafe fn push(&self, sub: &mut MutexGuard<'_, Submission>, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller keeps the entry's memory valid until its CQE.
            if unsafe { self.raw.push(&mut sub.sq, entry) } {
                self.pending.fetch_add(1, Ordering::SeqCst);
                return;
            }
            self.enter_submit();
        }
    }

    /// Hands the queued SQEs to the kernel. An SQE the kernel did not take stays queued
    /// and goes with the next enter; busy (`EBUSY`, `EAGAIN`: completions not yet taken)
    /// and `EINTR` are retried after the completion queue is drained by its reaper.
    fn enter_submit(&self) {
        loop {
            match self.raw.submit() {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                    ) =>
                {
                    self.wake_reaper();
                    std::thread::yield_now();
                }
                _ => return,
            }
        }
    }

    /// Takes up to a batch of CQEs; the caller holds the completion lock.
    fn drain(&self, cq: &mut MutexGuard<'_, CqConsumer>, batch: &mut Batch) {
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
        self.pending.fetch_sub(batch.len, Ordering::SeqCst);
    }

    /// Drains ready CQEs if no other thread is doing it, unregistering their requests
    /// under the submission lock the caller holds.
    fn take_ready(&self, sub: &mut MutexGuard<'_, Submission>, batch: &mut Batch) {
        batch.len = 0;
        let mut cq = match self.completion.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        self.drain(&mut cq, batch);
        drop(cq);
        self.unregister(sub, batch);
    }

    /// Forgets taken requests in `in_kernel`, after which their memory may be freed. A
    /// request the kernel cancelled on its own is submitted again instead (from this
    /// thread, under the held submission lock) and its CQE is dropped from the batch.
    fn unregister(&self, sub: &mut MutexGuard<'_, Submission>, batch: &mut Batch) {
        for taken in &mut batch.entries[..batch.len] {
            let (user_data, res) = *taken;
            // Every request is registered before its SQE is pushed and until its CQE is
            // taken: a CQE the table does not know names no live request of ours, and
            // must not be freed (`finish` skips it).
            let Some(registered) = sub.in_kernel.remove(&user_data) else {
                taken.0 = NO_REQUEST;
                continue;
            };
            if sub.closed || !registered.orphaned(res) {
                continue;
            }
            // SAFETY: the request's CQE was taken, so the kernel has let go of it, and it
            // is not freed before `finish`; this thread is the only one holding it.
            let op = unsafe { &mut *(user_data as *mut Op) };
            let entry = prepare(op).user_data(user_data);
            sub.in_kernel.insert(
                user_data,
                Registered {
                    resubmitted: registered.resubmitted + 1,
                    ..registered
                },
            );
            // SAFETY: as in `start`: the SQE points into the leaked box, freed after its CQE.
            unsafe { self.submit(sub, std::slice::from_ref(&entry)) };
            taken.0 = NO_REQUEST;
        }
    }

    /// Waits in the kernel for CQEs, takes them all, and completes their requests.
    fn reap(&self, batch: &mut Batch) {
        // No SQEs to submit: it only waits.
        let _ = self.raw.enter(0, 1, IORING_ENTER_GETEVENTS);
        self.take_all(batch);
    }

    /// Takes every CQE there is and completes its request, on the calling thread.
    fn take_all(&self, batch: &mut Batch) {
        loop {
            self.drain(&mut lock(&self.completion), batch);
            if batch.len == 0 {
                return;
            }
            self.unregister(&mut lock(&self.submission), batch);
            finish(self, batch);
        }
    }

    /// Wakes the reaper if it is parked while SQEs are out.
    fn wake_reaper(&self) {
        // SeqCst pairs with `park`: either the reaper sees the pending SQE or we see it
        // parked.
        if self.pending.load(Ordering::SeqCst) > 0 && self.parked.load(Ordering::SeqCst) {
            let _shutdown = lock(&self.shutdown);
            self.unpark.notify_one();
        }
    }

    /// Parks the reaper while nothing is pending. False when it should leave: the engine
    /// is gone and every CQE was taken.
    fn park(&self) -> bool {
        let mut shutdown = lock(&self.shutdown);
        loop {
            self.parked.store(true, Ordering::SeqCst);
            if self.pending.load(Ordering::SeqCst) > 0 {
                self.parked.store(false, Ordering::SeqCst);
                return true;
            }
            if *shutdown {
                return false;
            }
            shutdown = wait(&self.unpark, shutdown);
        }
    }

    /// The reaper thread: posts completions as they happen. It owns the ring last, so the
    /// ring closes only after every CQE was taken; if one never comes, the ring (and the
    /// memory its requests use) is leaked, never freed under the kernel.
    fn run_reaper(self: Arc<Ring>) {
        let mut batch = Batch::new();
        while self.park() {
            if self.program_reaps() {
                self.nap();
                self.take_all(&mut batch);
            } else {
                self.reap(&mut batch);
            }
        }
    }

    /// Whether the program takes its completions itself: a thread came to get_events a
    /// moment ago (where it takes the CQEs there are, and sleeps on the ring's fd), and no
    /// request out signals an eventfd. Then the reaper does not wake for every CQE (a
    /// wake-up on the other CPU each, on the program's time) but only looks every tick,
    /// for completions a program that stopped calling would otherwise leave unposted.
    fn program_reaps(&self) -> bool {
        let now = self.clock.elapsed().as_nanos() as u64;
        self.eventfd_requests.load(Ordering::SeqCst) == 0
            && now < self.program_reaps_until.load(Ordering::Relaxed)
    }

    /// Called by get_events: the program reaps for a while now.
    fn program_is_reaping(&self) {
        let until = (self.clock.elapsed() + PROGRAM_REAPS_FOR).as_nanos() as u64;
        self.program_reaps_until.store(until, Ordering::Relaxed);
    }

    /// Sleeps one tick, or less if the engine is dropped or an eventfd request starts.
    fn nap(&self) {
        let shutdown = lock(&self.shutdown);
        if !*shutdown {
            let _ = self.unpark.wait_timeout(shutdown, REAPER_TICK);
        }
    }
}

/// Completes the requests of taken, unregistered CQEs.
fn finish(ring: &Ring, batch: &Batch) {
    for &(user_data, res) in batch.taken() {
        if user_data != NO_REQUEST {
            // SAFETY: a request's user_data is the address `start` leaked with
            // Box::into_raw; its CQE is taken once, so the box is rebuilt once.
            let op = unsafe { Box::from_raw(user_data as *mut Op) };
            let Op { inflight, iovecs } = *op;
            drop(iovecs);
            let signals_eventfd = inflight.request.resfd.is_some();
            inflight.complete(i64::from(res));
            if signals_eventfd {
                ring.eventfd_requests.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The SQE for a checked request. The entry points at memory inside `op`, which the caller
/// keeps alive until the CQE.
fn prepare(op: &mut Op) -> squeue::Entry {
    let request = &mut op.inflight.request;
    let fd = types::Fd(request.raw_fd().unwrap_or(-1));
    // RWF_HIPRI asks for polled completion, which only an IOPOLL ring does; like the
    // kernel's own AIO, the hint is dropped rather than failing the request.
    let rw_flags = (request.rw_flags.bits() & !RwFlags::HIPRI.bits()) as i32;
    let offset = request.offset as u64;
    let segments = request.buffers.segments();
    match (request.opcode, single(&segments)) {
        (Opcode::Noop, _) => opcode::Nop::new().build(),
        (Opcode::Fsync, _) => opcode::Fsync::new(fd).build(),
        (Opcode::Fdsync, _) => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        (Opcode::Poll, _) => opcode::PollAdd::new(fd, u32::from(request.poll_mask())).build(),
        (op_code @ (Opcode::Pread | Opcode::Pwrite), Some((ptr, len))) => {
            if op_code == Opcode::Pread {
                opcode::Read::new(fd, ptr, len)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            } else {
                opcode::Write::new(fd, ptr, len)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            }
        }
        (op_code, _) => {
            op.iovecs = segments
                .iter()
                .map(|&(base, len)| libc::iovec {
                    iov_base: base.cast(),
                    iov_len: len,
                })
                .collect();
            let iovecs = op.iovecs.as_ptr();
            let count = op.iovecs.len() as u32;
            if op_code.is_read() {
                opcode::Readv::new(fd, iovecs, count)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            } else {
                opcode::Writev::new(fd, iovecs, count)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            }
        }
    }
}

/// The one segment of a plain read or write, if its length fits an SQE's 32-bit `len`.
fn single(segments: &[(*mut u8, usize)]) -> Option<(*mut u8, u32)> {
    match segments {
        [(ptr, len)] => u32::try_from(*len).ok().map(|len| (*ptr, len)),
        [] => Some((std::ptr::NonNull::dangling().as_ptr(), 0)),
        _ => None,
    }
}

/// A context's io_uring.
pub(crate) struct UringEngine {
    ring: Arc<Ring>,
}

impl UringEngine {
    pub(crate) fn new(core: &Arc<Core>) -> io::Result<UringEngine> {
        let ring = Arc::new(Ring::new(core.capacity())?);
        let reaper = Arc::clone(&ring);
        std::thread::Builder::new()
            .name("aioctx-uring".into())
            .spawn(move || reaper.run_reaper())?;
        Ok(UringEngine { ring })
    }

    /// Hands the queued SQEs to the kernel, then takes what already completed. The enter
    /// runs outside the submission lock (it can take a device doorbell's worth of time),
    /// so the reaper and other submitters are not held up by it; SQEs pushed under the lock
    /// keep their order in the queue, which is all a cancel relies on.
    fn enter_and_take(&self) {
        self.ring.enter_submit();
        self.after_submit(lock(&self.ring.submission));
    }

    /// Takes the CQEs already there and completes them on this thread, then makes sure
    /// the reaper watches whatever is still out.
    fn after_submit(&self, mut sub: MutexGuard<'_, Submission>) {
        let mut batch = Batch::new();
        self.ring.take_ready(&mut sub, &mut batch);
        drop(sub);
        finish(&self.ring, &batch);
        self.ring.wake_reaper();
    }

    /// Submits an async cancel of each request in `targets`.
    fn cancel_each(&self, mut sub: MutexGuard<'_, Submission>, targets: &[u64]) {
        let entries: Vec<squeue::Entry> = targets
            .iter()
            .map(|&user_data| {
                opcode::AsyncCancel::new(user_data)
                    .build()
                    .user_data(NO_REQUEST)
            })
            .collect();
        for entry in &entries {
            // SAFETY: a cancel SQE points at no memory; it names requests by user_data, and
            // the held submission lock keeps them registered (so not freed) while it is
            // queued; a request that completes later frees its address only after this SQE,
            // and an SQE that reuses the address is queued behind it.
            unsafe { self.ring.push(&mut sub, entry) };
        }
        drop(sub);
        self.enter_and_take();
    }
}

impl Engine for UringEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Uring
    }

    fn supports(&self, flags: RwFlags) -> bool {
        RwFlags::ALL.contains(flags)
    }

    /// What is not done inline holds its file before it enters the ring.
    fn runs_lent_fds(&self) -> bool {
        true
    }

    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        // What the page cache serves costs less as one plain syscall than as an SQE.
        let Some(mut request) = complete_inline(request) else {
            return Ok(());
        };
        // A request in the ring may be submitted again later (see the module's last part).
        if let Err(e) = request.request.hold_file() {
            return Err((request, e));
        }
        let key = request.request.key();
        let signals_eventfd = request.request.resfd.is_some();
        let mut op = Box::new(Op {
            inflight: request,
            iovecs: Vec::new(),
        });
        let entry = prepare(&mut op);
        let mut sub = lock(&self.ring.submission);
        if sub.closed {
            let Op { inflight, .. } = *op;
            return Err((inflight, io::Error::from_raw_os_error(libc::EINVAL)));
        }
        if signals_eventfd {
            // Its eventfd's reader waits for it now: a napping reaper goes back to posting
            // every completion at once.
            self.ring.eventfd_requests.fetch_add(1, Ordering::SeqCst);
            let _reaper = lock(&self.ring.shutdown);
            self.ring.unpark.notify_one();
        }
        let user_data = Box::into_raw(op) as u64;
        sub.in_kernel.insert(
            user_data,
            Registered {
                key,
                cancel_issued: false,
                resubmitted: 0,
            },
        );
        // SAFETY: the SQE points into the leaked box, which `finish` frees only after
        // the CQE was taken.
        unsafe { self.ring.push(&mut sub, &entry.user_data(user_data)) };
        drop(sub);
        if !plugged(self) {
            self.enter_and_take();
        }
        Ok(())
    }

    fn flush(&self) {
        // A batch done wholly inline (the page cache served it) needs no enter.
        if self.ring.sq_is_empty() {
            return;
        }
        self.enter_and_take();
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        let mut sub = lock(&self.ring.submission);
        let target = sub
            .in_kernel
            .iter_mut()
            // A request a cancel already named answers EINVAL: it is cancelled at most once.
            .find(|(_, registered)| registered.key == obj && !registered.cancel_issued);
        match target {
            Some((&user_data, registered)) => {
                registered.cancel_issued = true;
                self.cancel_each(sub, &[user_data]);
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn cancel_all(&self) {
        let mut sub = lock(&self.ring.submission);
        sub.closed = true;
        let targets: Vec<u64> = sub
            .in_kernel
            .iter_mut()
            .map(|(&user_data, registered)| {
                registered.cancel_issued = true;
                user_data
            })
            .collect();
        self.cancel_each(sub, &targets);
    }

    /// The ring's fd polls readable while CQEs wait in its completion queue.
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.ring.raw.as_fd())
    }

    fn reap_ready(&self) {
        self.ring.program_is_reaping();
        self.ring.take_all(&mut Batch::new());
    }
}

impl Drop for UringEngine {
    /// Runs after destroy waited for every request; the reaper takes the CQEs of the
    /// cancels still out and then lets go of the ring.
    fn drop(&mut self) {
        // The reaper may be waiting in the kernel for a CQE another thread took already;
        // a NOP's CQE gets it out.
        let nop = opcode::Nop::new().build().user_data(NO_REQUEST);
        // SAFETY: a NOP points at no memory.
        unsafe { self.ring.submit(&mut lock(&self.ring.submission), &[nop]) };
        *lock(&self.ring.shutdown) = true;
        self.ring.unpark.notify_one();
    }
}

/// Whether io_uring works here with every op the engine needs; else why not. Where a
/// seccomp filter is active, `io_uring_setup` is made in a forked child first, so that a
/// filter that kills cannot kill this process. Probed once per process: seccomp filters
/// and the sysctl do not loosen while it runs.
pub(crate) fn probe() -> Result<(), Unavailable> {
    static PROBE: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    PROBE.get_or_init(probe_now).clone()
}

fn probe_now() -> Result<(), Unavailable> {
    // io_uring_params: 120 bytes, all zero for a plain ring.
    let mut params = [0u64; 15];
    survive_setup(
        EngineKind::Uring,
        libc::SYS_io_uring_setup,
        1,
        params.as_mut_ptr() as libc::c_long,
    )?;
    let uring: IoUring<squeue::Entry, cqueue::Entry> =
        IoUring::new(8).map_err(|e| Unavailable::from_error(EngineKind::Uring, &e))?;
    let mut ops = io_uring::Probe::new();
    uring
        .submitter()
        .register_probe(&mut ops)
        .map_err(|e| Unavailable::KernelTooOld {
            missing: format!("IORING_REGISTER_PROBE ({e}); Linux 5.6 or later is needed"),
        })?;
    let missing: Vec<&str> = REQUIRED_OPS
        .iter()
        .filter(|(code, _)| !ops.is_supported(*code))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(Unavailable::KernelTooOld {
            missing: format!(
                "io_uring's {} (Linux 5.6 or later is needed)",
                missing.join(", ")
            ),
        });
    }
    if !uring.params().is_feature_nodrop() {
        return Err(Unavailable::KernelTooOld {
            missing:
                "IORING_FEAT_NODROP: completions may be dropped (Linux 5.5 or later is needed)"
                    .into(),
        });
    }
    Ok(())
}
