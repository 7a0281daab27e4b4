//! The kernel-AIO engine: requests run on the kernel's own Linux AIO (`io_setup`,
//! `io_submit`, `io_getevents`, `io_cancel` through raw system calls, no libaio), for hosts
//! where io_uring is blocked but the AIO calls are not (Docker's default seccomp profile,
//! Android, hardened kernels).
//!
//! **Kernel contexts are shared.** `fs.aio-max-nr` is one budget for the whole system (65536
//! events by default) and every kernel context takes its size from it, so aioctx contexts do
//! not get one each: all contexts of the process submit to a few kernel contexts of
//! [`KERNEL_EVENTS`] events, opened one by one as they fill up (at most
//! [`MAX_KERNEL_CONTEXTS`]), each reaped by one thread blocked in `io_getevents`. A kernel
//! event finds its request through `aio_data`: the address of the boxed `Op` that also holds
//! the iocb and iovecs the kernel was given, freed only once that event is reaped.
//!
//! **What goes where**, so that submit never waits for I/O:
//! - O_DIRECT reads and writes go to the kernel as they are: that is what kernel AIO is for.
//! - fsync and fdatasync go to the kernel, which runs them on a workqueue (`aio_fsync_work`):
//!   `io_submit` returns before the flush.
//! - Polls go to the kernel (`IOCB_CMD_POLL`), where they wait without holding a thread and
//!   can be cancelled.
//! - Buffered reads and writes are what kernel AIO does inside `io_submit`, waiting for the
//!   disk. What the page cache serves runs on the submitting thread instead (`inline.rs`:
//!   `preadv2`/`pwritev2`, with `RWF_NOWAIT` where that works), the very call the kernel
//!   would make inside `io_submit`, minus the trip through the kernel's ring and a reaper
//!   (on a 2-vCPU VM, cached 4 KiB reads at QD32 ran ~460k/s against ~190k/s through
//!   `io_submit`). What must wait for the device (cold reads, synchronous writes) is
//!   re-issued on the shared thread pool, as Seastar does, and counted in
//!   [`Stats::fallbacks`](crate::Stats::fallbacks). So are requests that find every shared
//!   kernel context full.
//! - Reads and writes of pipes, FIFOs, sockets and character devices go the threads
//!   engine's way (kernel AIO on them blocks `io_submit` until data arrives, and could not
//!   be cancelled): tried under `RWF_NOWAIT`, else waiting for readiness in the poller,
//!   cancellable. Buffered I/O of block devices goes to the pool.
//!
//! **Cancel.** The kernel cannot cancel a file read, write or sync once submitted (`io_cancel`
//! only knows polls), so for those `cancel` returns `EINVAL` and destroy waits for them to
//! finish, as the kernel's own `io_destroy` does (it always does: only regular files and
//! block devices get there). Kernel polls are cancelled with `io_cancel`, requests still
//! queued in the thread pool or waiting in the poller are taken back; they complete with
//! `-ECANCELED` (a write cut short: the bytes written).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::inline::complete_inline;
use super::threads::ThreadsEngine;
use super::{Engine, EngineKind};
use crate::core::{Core, Inflight};
use crate::request::{Opcode, RwFlags};
use crate::sync::lock;
use crate::sys::abi::{self, IoEvent, Iocb};

/// Events of one shared kernel context: its share of `fs.aio-max-nr`, and how many requests
/// may be in it at once.
pub const KERNEL_EVENTS: u32 = 4096;

/// The most kernel contexts the process opens; with [`KERNEL_EVENTS`] this caps the
/// process's share of `fs.aio-max-nr` at a quarter of the default.
pub const MAX_KERNEL_CONTEXTS: usize = 4;

/// Events a reaper takes per `io_getevents`.
const REAP_BATCH: usize = 128;

/// One kernel AIO context shared by every aioctx context of the process.
struct KernelContext {
    /// The kernel's `aio_context_t`.
    id: u64,
    /// Requests submitted to it and not yet reaped; submitters reserve, dispatch releases.
    /// Kept at most `KERNEL_EVENTS` so that `io_submit` never fails for lack of room.
    outstanding: AtomicU32,
}

impl KernelContext {
    fn reserve(&self) -> bool {
        self.outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < KERNEL_EVENTS).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }

    /// The reaper's life: wait for events, route each to its request.
    fn reap_forever(&self) {
        let mut events = [IoEvent::default(); REAP_BATCH];
        loop {
            // Only a signal ends the wait early (EINTR); the context is never destroyed.
            let reaped = io_getevents(self.id, 1, &mut events).unwrap_or(0);
            for event in &events[..reaped] {
                dispatch(event);
            }
        }
    }
}

/// The shared kernel contexts, opened in order as earlier ones fill up; never closed.
static KERNEL: [OnceLock<&'static KernelContext>; MAX_KERNEL_CONTEXTS] =
    [const { OnceLock::new() }; MAX_KERNEL_CONTEXTS];
/// Serialises opening, so that two submitters never open the same slot twice.
static OPENING: Mutex<()> = Mutex::new(());

/// The shared kernel context in slot `at`, opened (with its reaper) on first use.
fn kernel_context(at: usize) -> io::Result<&'static KernelContext> {
    if let Some(kernel) = KERNEL[at].get() {
        return Ok(kernel);
    }
    let _opening = lock(&OPENING);
    if let Some(kernel) = KERNEL[at].get() {
        return Ok(kernel);
    }
    let id = io_setup(KERNEL_EVENTS)?;
    if at == 0 {
        // SAFETY: the handler is a plain function that lives as long as the process.
        unsafe { libc::pthread_atfork(None, None, Some(mark_forked_child)) };
    }
    let kernel: &'static KernelContext = Box::leak(Box::new(KernelContext {
        id,
        outstanding: AtomicU32::new(0),
    }));
    let reaper = std::thread::Builder::new()
        .name("aioctx-kaio-reaper".into())
        .spawn(move || kernel.reap_forever());
    if let Err(e) = reaper {
        io_destroy(id);
        return Err(e);
    }
    Ok(KERNEL[at].get_or_init(|| kernel))
}

/// Set in a child after `fork()`: kernel AIO contexts are not inherited (the child's
/// `io_submit` on them fails `EINVAL`) and neither are the reapers, so a forked child runs
/// everything on the thread pool.
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

extern "C" fn mark_forked_child() {
    FORKED_CHILD.store(true, Ordering::Relaxed);
}

/// A kernel context with room for one more request, reserved; None if all are full (or
/// this is a forked child).
fn reserve_kernel() -> Option<&'static KernelContext> {
    if FORKED_CHILD.load(Ordering::Relaxed) {
        return None;
    }
    (0..MAX_KERNEL_CONTEXTS).find_map(|at| kernel_context(at).ok().filter(|k| k.reserve()))
}

/// Whether kernel AIO works here; the reason if not.
pub(crate) fn probe() -> Result<(), String> {
    // io_destroy waits for an RCU grace period (tens of milliseconds), so the check is made
    // once per process: a later failure still surfaces when a context opens the engine.
    static WORKED: AtomicBool = AtomicBool::new(false);
    if KERNEL[0].get().is_some() || WORKED.load(Ordering::Relaxed) {
        return Ok(());
    }
    match io_setup(1) {
        Ok(id) => {
            io_destroy(id);
            WORKED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no AIO support (io_setup: ENOSYS)".into(),
            Some(libc::EPERM) => "the AIO system calls are blocked (seccomp: EPERM)".into(),
            Some(libc::EAGAIN) => "fs.aio-max-nr is exhausted (io_setup: EAGAIN)".into(),
            _ => format!("io_setup failed: {e}"),
        }),
    }
}

/// One request in the kernel: everything the kernel was pointed at, kept until its event is
/// reaped. Boxed; `iocb.aio_data` is the box's address.
struct Op {
    /// Read by the kernel at `io_submit` (which also writes `aio_key` back into it) and, for
    /// a poll, at `io_cancel`.
    iocb: Iocb,
    /// The iovec array of a vectored request.
    iovecs: Vec<libc::iovec>,
    request: Inflight,
    local: Arc<Local>,
    kernel: &'static KernelContext,
}

impl Op {
    fn new(mut request: Inflight, local: &Arc<Local>, kernel: &'static KernelContext) -> Op {
        let r = &mut request.request;
        let segments = r.buffers.segments();
        let mut iocb = Iocb {
            aio_fildes: r.raw_fd().unwrap_or(-1) as u32,
            aio_offset: r.offset,
            ..Iocb::default()
        };
        let mut iovecs = Vec::new();
        match r.opcode {
            Opcode::Poll => {
                iocb.aio_lio_opcode = abi::IOCB_CMD_POLL;
                iocb.aio_buf = u64::from(r.poll_events);
            }
            Opcode::Fsync | Opcode::Fdsync => iocb.aio_lio_opcode = r.opcode as u16,
            op => {
                iocb.aio_rw_flags = r.rw_flags.bits() as i32;
                if let [(base, len)] = segments[..] {
                    iocb.aio_lio_opcode = if op.is_read() {
                        abi::IOCB_CMD_PREAD
                    } else {
                        abi::IOCB_CMD_PWRITE
                    };
                    iocb.aio_buf = base as u64;
                    iocb.aio_nbytes = len as u64;
                } else {
                    iovecs = segments
                        .iter()
                        .map(|&(base, len)| libc::iovec {
                            iov_base: base.cast(),
                            iov_len: len,
                        })
                        .collect();
                    iocb.aio_lio_opcode = if op.is_read() {
                        abi::IOCB_CMD_PREADV
                    } else {
                        abi::IOCB_CMD_PWRITEV
                    };
                    iocb.aio_buf = iovecs.as_ptr() as u64;
                    iocb.aio_nbytes = iovecs.len() as u64;
                }
            }
        }
        Op {
            iocb,
            iovecs,
            request,
            local: Arc::clone(local),
            kernel,
        }
    }

    /// Takes the request back from an op the kernel never accepted.
    fn discard(self: Box<Op>, iocb_addr: u64) -> Inflight {
        let Op { request, local, .. } = *self;
        if request.request.opcode == Opcode::Poll {
            local.forget_poll(iocb_addr);
        }
        request
    }

    /// Posts the kernel's result for a reaped (or refused) request.
    fn finish(self: Box<Op>, iocb_addr: u64, res: i64) {
        let Op {
            iovecs,
            request,
            local,
            ..
        } = *self;
        // The kernel let go of the iovecs when it reported the event.
        drop(iovecs);
        if request.request.opcode == Opcode::Poll {
            // The kernel completes a cancelled poll with an empty mask, which a poll that
            // fired never has.
            let cancelled = local.forget_poll(iocb_addr);
            request.complete(if cancelled && res == 0 {
                -(libc::ECANCELED as i64)
            } else {
                res
            });
        } else {
            request.complete(res);
        }
    }
}

/// Routes one reaped kernel event to its request.
fn dispatch(event: &IoEvent) {
    // SAFETY: every iocb submitted to a shared kernel context carries in `aio_data` the
    // address of an `Op` that submit leaked for it, and the kernel reports each iocb in
    // exactly one event, reaped once; so this is the only owner of that box.
    let op = unsafe { Box::from_raw(event.data as *mut Op) };
    op.kernel.release();
    op.finish(event.obj, event.res);
}

/// An aioctx context's side of the engine, shared with its requests in flight.
struct Local {
    /// This context's face of the threads engine: fallbacks, and files that are not regular.
    pool: ThreadsEngine,
    /// Kernel polls in flight, the only kernel requests `io_cancel` can stop. The reaper
    /// removes an entry before it frees the `Op`, so a canceller holding this lock may pass
    /// the entry's iocb address to the kernel.
    polls: Mutex<Vec<PollEntry>>,
}

struct PollEntry {
    iocb_addr: u64,
    kernel_id: u64,
    key: u64,
    cancelled: bool,
}

impl Local {
    /// Re-issues a request on the thread pool, counted as a fallback.
    fn fall_back(&self, request: Inflight) {
        request.count_fallback();
        self.pool.enqueue(request);
    }

    /// Removes a poll that has completed; whether it had been cancelled.
    fn forget_poll(&self, iocb_addr: u64) -> bool {
        let mut polls = lock(&self.polls);
        match polls.iter().position(|p| p.iocb_addr == iocb_addr) {
            Some(at) => polls.swap_remove(at).cancelled,
            None => false,
        }
    }

    /// Cancels the kernel polls `matches` selects (at most `limit`); returns how many will
    /// deliver their event (cancelled, or fired just before).
    fn cancel_polls(&self, matches: impl Fn(u64) -> bool, limit: usize) -> usize {
        let mut polls = lock(&self.polls);
        let mut count = 0;
        for poll in polls.iter_mut().filter(|p| !p.cancelled && matches(p.key)) {
            if count == limit {
                break;
            }
            poll.cancelled = true;
            // Either the kernel cancels it (EINPROGRESS) or it already fired (EINVAL): in
            // both cases its event is on the way.
            io_cancel(poll.kernel_id, poll.iocb_addr);
            count += 1;
        }
        count
    }
}

/// A context's face of the kernel-AIO engine.
pub(crate) struct KaioEngine {
    local: Arc<Local>,
}

impl KaioEngine {
    /// Fails as `io_setup` does (`ENOSYS`, `EPERM`, `EAGAIN`) if no shared kernel context
    /// can be opened.
    pub(crate) fn new(core: &Arc<Core>) -> io::Result<KaioEngine> {
        kernel_context(0)?;
        Ok(KaioEngine {
            local: Arc::new(Local {
                pool: ThreadsEngine::new(core),
                polls: Mutex::new(Vec::new()),
            }),
        })
    }

    fn submit_to_kernel(&self, request: Inflight) {
        let Some(kernel) = reserve_kernel() else {
            return self.overflow(request);
        };
        let is_poll = request.request.opcode == Opcode::Poll;
        let key = request.request.key();
        let op = Box::into_raw(Box::new(Op::new(request, &self.local, kernel)));
        // SAFETY: `op` is the live box we just leaked; nothing else knows of it yet.
        let iocb = unsafe {
            (*op).iocb.aio_data = op as u64;
            std::ptr::addr_of_mut!((*op).iocb)
        };
        if is_poll {
            lock(&self.local.polls).push(PollEntry {
                iocb_addr: iocb as u64,
                kernel_id: kernel.id,
                key,
                cancelled: false,
            });
        }
        if let Err(error) = io_submit(kernel.id, iocb) {
            // SAFETY: the kernel refused the iocb, so no event will name it: the box is ours
            // again.
            let op = unsafe { Box::from_raw(op) };
            kernel.release();
            self.refused(op, iocb as u64, error);
        }
    }

    /// A buffered read or write, run on this thread if the page cache serves it (what
    /// kernel AIO does inside `io_submit`, without the trip through the kernel's ring and a
    /// reaper thread), else handed to the pool.
    fn try_inline(&self, request: Inflight) {
        if let Some(request) = complete_inline(request) {
            self.local.fall_back(request);
        }
    }

    /// A request `io_submit` refused: to the pool if the kernel had no room, else its error
    /// as the event (as the threads engine reports, say, fsync on a pipe).
    fn refused(&self, op: Box<Op>, iocb_addr: u64, error: io::Error) {
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        if errno == libc::EAGAIN {
            let request = op.discard(iocb_addr);
            self.overflow(request);
        } else {
            op.finish(iocb_addr, -(errno as i64));
        }
    }

    /// A request for which the shared kernel contexts have no room: the threads engine runs
    /// it (its poller for a poll), counted as a fallback.
    fn overflow(&self, request: Inflight) {
        request.count_fallback();
        if let Err((request, error)) = self.local.pool.start(request) {
            request.complete(-(error.raw_os_error().unwrap_or(libc::EIO) as i64));
        }
    }
}

impl Engine for KaioEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Kaio
    }

    fn supports(&self, _flags: RwFlags) -> bool {
        true
    }

    /// The kernel takes its own reference at `io_submit`; the pool holds what it keeps.
    fn runs_lent_fds(&self) -> bool {
        true
    }

    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        let r = &request.request;
        match r.opcode {
            Opcode::Noop => request.complete(0),
            Opcode::Poll | Opcode::Fsync | Opcode::Fdsync => self.submit_to_kernel(request),
            // Raw devices opened O_DIRECT are what databases use kernel AIO for, and the
            // kernel runs them asynchronously.
            _ if r.mode.direct && (r.mode.regular || r.mode.block_device) => {
                self.submit_to_kernel(request)
            }
            _ if !r.mode.regular => return self.local.pool.start(request),
            _ if r.rw_flags.contains(RwFlags::NOWAIT) => self.submit_to_kernel(request),
            _ => self.try_inline(request),
        }
        Ok(())
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        self.local.pool.cancel(obj).or_else(|error| {
            if self.local.cancel_polls(|key| key == obj, 1) > 0 {
                Ok(())
            } else {
                Err(error)
            }
        })
    }

    fn cancel_all(&self) {
        self.local.pool.cancel_all();
        self.local.cancel_polls(|_| true, usize::MAX);
    }
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A kernel AIO context for `nr_events` requests.
fn io_setup(nr_events: u32) -> io::Result<u64> {
    let mut id: u64 = 0;
    // SAFETY: the kernel writes the new context's id into `id`, a live local that starts at
    // zero as io_setup requires.
    check(unsafe { libc::syscall(abi::SYS_IO_SETUP, nr_events, &mut id as *mut u64) })?;
    Ok(id)
}

fn io_destroy(id: u64) {
    // SAFETY: destroys a context this module opened and never used elsewhere.
    unsafe { libc::syscall(abi::SYS_IO_DESTROY, id) };
}

/// Submits one iocb.
fn io_submit(id: u64, iocb: *mut Iocb) -> io::Result<()> {
    let list = [iocb];
    // SAFETY: `list` is a live one-element array; the iocb it points to, and the buffers and
    // iovecs the iocb names, live in an `Op` kept until the iocb's event is reaped.
    check(unsafe { libc::syscall(abi::SYS_IO_SUBMIT, id, 1 as libc::c_long, list.as_ptr()) })
        .map(drop)
}

/// Takes up to `events.len()` events, waiting without limit for at least `min`.
fn io_getevents(id: u64, min: usize, events: &mut [IoEvent]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `events.len()` events into the caller's slice; the
    // timeout is null (no limit).
    let ret = unsafe {
        libc::syscall(
            abi::SYS_IO_GETEVENTS,
            id,
            min as libc::c_long,
            events.len() as libc::c_long,
            events.as_mut_ptr(),
            std::ptr::null::<libc::timespec>(),
        )
    };
    check(ret).map(|n| n as usize)
}

/// Asks the kernel to cancel the request whose iocb is at `iocb_addr`.
fn io_cancel(id: u64, iocb_addr: u64) {
    let mut result = IoEvent::default();
    // SAFETY: `iocb_addr` is the iocb of an `Op` the caller keeps alive for the call (its
    // poll entry is held under the lock); the kernel reads its `aio_key` and may write
    // `result`, a live local.
    unsafe {
        libc::syscall(
            abi::SYS_IO_CANCEL,
            id,
            iocb_addr as *mut Iocb,
            &mut result as *mut IoEvent,
        )
    };
}
