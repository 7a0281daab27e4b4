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
//! **Who reaps.** Every iocb signals one eventfd of the process (`IOCB_FLAG_RESFD`), the
//! engine's ready fd: a thread waiting in get_events polls it and takes the kernel's events
//! itself (`reap_ready`; the eventfd is reset only before a wait, `before_wait`), of every
//! context, so that a completion wakes the program once, as the kernel's own
//! `io_getevents` does, instead of waking a reaper on the other CPU that then wakes the
//! program (on a 2-vCPU VM, a cross-CPU wake-up costs ~35 us). Each shared
//! kernel context also has a reaper thread blocked in `io_getevents`, for the completions
//! nobody waits for in get_events (eventfd users, programs reading the ring directly);
//! while the program reaps itself it only looks once a tick (`engine/pace.rs`).
//!
//! **Cancel.** The kernel cannot cancel a file read, write or sync once submitted (`io_cancel`
//! only knows polls), so for those `cancel` returns `EINVAL` and destroy waits for them to
//! finish, as the kernel's own `io_destroy` does (it always does: only regular files and
//! block devices get there). Kernel polls are cancelled with `io_cancel`, requests still
//! queued in the thread pool or waiting in the poller are taken back; they complete with
//! `-ECANCELED` (a write cut short: the bytes written).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::inline::complete_inline;
use super::pace::Pace;
use super::pending::{Keyed, Pending};
use super::probe::survive_setup;
use super::threads::UserSpace;
use super::{iovecs_of, lend_to_kernel, plugged, take_back, Engine, EngineKind, Unavailable};
use crate::core::{Completions, Core, Inflight};
use crate::request::{Opcode, RwFlags};
use crate::sync::lock;
use crate::sys::abi::{self, IoEvent, Iocb};
use crate::sys::aio::{io_cancel, io_destroy, io_getevents, io_setup, io_submit};
use crate::sys::fd::{eventfd, eventfd_drain, names_no_eventfd};
use crate::sys::fork;

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

    /// The reaper's life: wait for events, route each to its request; while the program
    /// reaps itself, only look once a tick.
    fn reap_forever(&self, reaping: &'static Reaping) {
        let mut events = [IoEvent::default(); REAP_BATCH];
        loop {
            if reaping.pace.program_reaps() {
                reaping.pace.nap();
                self.reap_now(&mut events);
            } else {
                // Only a signal ends the wait early (EINTR); the context is never destroyed.
                let reaped = io_getevents(self.id, 1, &mut events, None).unwrap_or(0);
                dispatch(&events[..reaped]);
            }
        }
    }

    /// Takes, without waiting, every event the kernel has ready, and routes each.
    fn reap_now(&self, events: &mut [IoEvent; REAP_BATCH]) {
        while self.outstanding.load(Ordering::Relaxed) > 0 && self.has_events() {
            let reaped = io_getevents(self.id, 0, events, Some(Duration::ZERO)).unwrap_or(0);
            dispatch(&events[..reaped]);
            if reaped < REAP_BATCH {
                return;
            }
        }
    }

    /// Whether the kernel's ring of this context holds events not yet taken, read from its
    /// header (an `io_getevents` saved when it holds none).
    fn has_events(&self) -> bool {
        let header = self.id as *const abi::AioRingHeader;
        // SAFETY: a kernel AIO context's id is the address of its ring, mapped by io_setup
        // for as long as the context lives (for ever: it is never destroyed); only `head`
        // and `tail`, which the kernel updates, are read, as atomics, as libaio does.
        let (head, tail) = unsafe {
            (
                (*(std::ptr::addr_of!((*header).head) as *const AtomicU32)).load(Ordering::Acquire),
                (*(std::ptr::addr_of!((*header).tail) as *const AtomicU32)).load(Ordering::Acquire),
            )
        };
        head != tail
    }
}

/// What a thread waiting in get_events and the reapers share (see the module's part on
/// who reaps), made with the first kernel context.
struct Reaping {
    /// The number of the eventfd the kernel signals for every completed iocb: the engine's
    /// ready fd. It is never closed by the library; a program that closes it (closing
    /// every number, as `closefrom` does) gets a new one made (`renew_ready`).
    ready: AtomicI32,
    /// Serialises renewals of `ready`.
    renewing: Mutex<()>,
    /// When the program last came to get_events, and the reapers' naps.
    pace: Pace,
}

static REAPING: OnceLock<Reaping> = OnceLock::new();

impl Reaping {
    fn get() -> io::Result<&'static Reaping> {
        if let Some(reaping) = REAPING.get() {
            return Ok(reaping);
        }
        let ready = eventfd()?;
        Ok(REAPING.get_or_init(|| Reaping {
            ready: AtomicI32::new(ready.into_raw_fd()),
            renewing: Mutex::new(()),
            pace: Pace::new(),
        }))
    }

    fn ready(&self) -> BorrowedFd<'static> {
        // SAFETY: the number of an eventfd the library made and never closes. The program
        // may close it: it then names nothing, or a file of the program's, which is only
        // polled and drained until `renew_ready` replaces it at the next refused iocb.
        unsafe { BorrowedFd::borrow_raw(self.ready.load(Ordering::Acquire)) }
    }

    /// After `io_submit` refused an iocb that named `seen` as its eventfd (`EBADF`, or
    /// `EINVAL` for a file that is no eventfd): whether the engine's eventfd was the cause,
    /// its number closed by the program; a new one is then in place, to submit again with.
    fn renew_ready(&self, seen: RawFd) -> bool {
        let _renewing = lock(&self.renewing);
        if self.ready.load(Ordering::Acquire) != seen {
            return true;
        }
        if !names_no_eventfd(self.ready()) {
            // Still an eventfd, or not to be told: the refusal was the request's own.
            return false;
        }
        match eventfd() {
            Ok(ready) => {
                // The old number is left as it is: it may name a file of the program's.
                self.ready.store(ready.into_raw_fd(), Ordering::Release);
                true
            }
            Err(_) => false,
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
    let reaping = Reaping::get()?;
    let id = io_setup(KERNEL_EVENTS)?;
    if at == 0 {
        fork::on_fork_in_child(mark_forked_child);
    }
    let kernel: &'static KernelContext = Box::leak(Box::new(KernelContext {
        id,
        outstanding: AtomicU32::new(0),
    }));
    let reaper = std::thread::Builder::new()
        .name("aioctx-kaio-reaper".into())
        .spawn(move || kernel.reap_forever(reaping));
    if let Err(e) = reaper {
        let _ = io_destroy(id);
        return Err(e);
    }
    Ok(KERNEL[at].get_or_init(|| kernel))
}

/// Set in a child after `fork()`: kernel AIO contexts are not inherited (the child's
/// `io_submit` on them fails `EINVAL`) and neither are the reapers, so a forked child runs
/// everything on the thread pool.
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

fn mark_forked_child() {
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

/// Whether kernel AIO works here; the reason if not. Where a seccomp filter is active,
/// `io_setup` is made in a forked child first, so that a filter that kills cannot kill
/// this process.
pub(crate) fn probe() -> Result<(), Unavailable> {
    // io_destroy waits for an RCU grace period (tens of milliseconds), so the check is made
    // once per process: a later failure still surfaces when a context opens the engine.
    static WORKED: AtomicBool = AtomicBool::new(false);
    if KERNEL[0].get().is_some() || WORKED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut id: u64 = 0;
    survive_setup(
        EngineKind::Kaio,
        abi::SYS_IO_SETUP,
        1,
        &mut id as *mut u64 as libc::c_long,
    )?;
    match io_setup(1) {
        Ok(id) => {
            let _ = io_destroy(id);
            WORKED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Unavailable::from_error(EngineKind::Kaio, &e)),
    }
}

/// One request in the kernel: everything the kernel was pointed at, kept until its event is
/// reaped. Boxed; `iocb.aio_data` is its token ([`lend_to_kernel`]).
struct Op {
    /// Read by the kernel at `io_submit` (which also writes `aio_key` back into it) and, for
    /// a poll, at `io_cancel`.
    iocb: Iocb,
    /// The iovec array of a vectored request.
    iovecs: Vec<libc::iovec>,
    request: Inflight,
    local: Arc<Local>,
    kernel: &'static KernelContext,
    /// A poll's entry in `Local::polls`.
    poll_id: Option<u64>,
}

impl Op {
    fn new(mut request: Inflight, local: &Arc<Local>, kernel: &'static KernelContext) -> Op {
        let r = &mut request.request;
        let mut iocb = Iocb {
            aio_fildes: r.raw_fd().unwrap_or(-1) as u32,
            aio_offset: r.offset,
            ..Iocb::default()
        };
        if let Some(reaping) = REAPING.get() {
            iocb.aio_flags = abi::IOCB_FLAG_RESFD;
            iocb.aio_resfd = reaping.ready().as_raw_fd() as u32;
            if r.resfd.is_some() {
                reaping.pace.eventfd_request_started();
            }
        }
        let mut iovecs = Vec::new();
        match r.opcode {
            Opcode::Poll => {
                iocb.aio_lio_opcode = abi::IOCB_CMD_POLL;
                iocb.aio_buf = u64::from(r.poll_events);
            }
            Opcode::Fsync | Opcode::Fdsync => iocb.aio_lio_opcode = r.opcode as u16,
            op => {
                iocb.aio_rw_flags = r.rw_flags.bits() as i32;
                let segments = iovecs_of(&mut r.buffers, 0..usize::MAX);
                let vectored = segments.len() != 1;
                iocb.aio_lio_opcode = match (op.is_read(), vectored) {
                    (true, false) => abi::IOCB_CMD_PREAD,
                    (false, false) => abi::IOCB_CMD_PWRITE,
                    (true, true) => abi::IOCB_CMD_PREADV,
                    (false, true) => abi::IOCB_CMD_PWRITEV,
                };
                if vectored {
                    // On the heap: the kernel reads the array at io_submit, after the op
                    // has moved into its box.
                    iovecs = segments.into_vec();
                    iocb.aio_buf = iovecs.as_ptr() as u64;
                    iocb.aio_nbytes = iovecs.len() as u64;
                } else {
                    iocb.aio_buf = segments[0].iov_base as u64;
                    iocb.aio_nbytes = segments[0].iov_len as u64;
                }
            }
        }
        Op {
            iocb,
            iovecs,
            request,
            local: Arc::clone(local),
            kernel,
            poll_id: None,
        }
    }

    /// Takes the request back from an op the kernel never accepted.
    fn discard(self: Box<Op>) -> Inflight {
        let Op {
            request,
            local,
            poll_id,
            ..
        } = *self;
        local.forget_poll(poll_id);
        signals_eventfd_no_more(&request);
        request
    }

    /// Posts the kernel's result for a reaped (or refused) request into `completions`.
    fn finish(self: Box<Op>, res: i64, completions: &mut Completions) {
        let Op {
            iovecs,
            request,
            local,
            poll_id,
            ..
        } = *self;
        // The kernel let go of the iovecs when it reported the event.
        drop(iovecs);
        signals_eventfd_no_more(&request);
        // The kernel completes a cancelled poll with an empty mask, which a poll that fired
        // never has.
        let cancelled = local.forget_poll(poll_id);
        let res = if cancelled && res == 0 {
            -(libc::ECANCELED as i64)
        } else {
            res
        };
        completions.complete(request, res);
    }
}

/// Counts out of the kernel a request `Op::new` counted in (see `Pace::program_reaps`).
fn signals_eventfd_no_more(request: &Inflight) {
    if request.request.resfd.is_some() {
        if let Some(reaping) = REAPING.get() {
            reaping.pace.eventfd_request_finished();
        }
    }
}

/// Routes reaped kernel events to their requests.
fn dispatch(events: &[IoEvent]) {
    let mut completions = Completions::new();
    for event in events {
        // SAFETY: every iocb submitted to a shared kernel context carries in `aio_data` the
        // token of an `Op` lent for it, and the kernel reports each iocb in exactly one
        // event, reaped once; so this is the only taker of that token.
        let op = unsafe { take_back::<Op>(event.data) };
        op.kernel.release();
        op.finish(event.res, &mut completions);
    }
}

/// An aioctx context's side of the engine, shared with its requests in flight.
struct Local {
    /// The user-space path: fallbacks, and files that are not regular.
    user_space: UserSpace,
    /// Kernel polls in flight, the only kernel requests `io_cancel` can stop. The reaper
    /// removes an entry before it frees the `Op`, so a canceller holding this lock may pass
    /// the entry's iocb address to the kernel.
    polls: Mutex<Pending<PollEntry>>,
    /// Iocbs held back while their submitter is plugged (see `engine::plugged`), with the
    /// kernel context each reserved; all go in one `io_submit` at `flush`. Tokens of
    /// leaked `Op`s.
    plugged: Mutex<Vec<u64>>,
}

struct PollEntry {
    iocb_addr: u64,
    kernel_id: u64,
    key: u64,
    cancelled: bool,
}

impl Keyed for PollEntry {
    fn cancel_key(&self) -> Option<u64> {
        (!self.cancelled).then_some(self.key)
    }
}

impl Local {
    /// Re-issues a request on the thread pool, counted as a fallback.
    fn fall_back(&self, request: Inflight) {
        request.count_fallback();
        self.user_space.run_on_worker(request);
    }

    /// Removes a poll that has completed; whether it had been cancelled.
    fn forget_poll(&self, poll_id: Option<u64>) -> bool {
        poll_id
            .and_then(|id| lock(&self.polls).remove(id))
            .is_some_and(|poll| poll.cancelled)
    }

    /// Cancels the kernel polls `matches` selects (at most `limit`); returns how many will
    /// deliver their event (cancelled, or fired just before).
    fn cancel_polls(&self, matches: impl Fn(u64) -> bool, limit: usize) -> usize {
        let mut polls = lock(&self.polls);
        let chosen = polls.select(matches, |_| true, limit);
        for &id in &chosen {
            let Some(poll) = polls.get_mut(id) else {
                continue;
            };
            poll.cancelled = true;
            // Either the kernel cancels it (EINPROGRESS) or it already fired (EINVAL): in
            // both cases its event is on the way.
            // SAFETY: the entry's iocb lives in an `Op` the reaper frees only after it has
            // removed the entry, which it cannot do while this lock is held.
            let _ = unsafe { io_cancel(poll.kernel_id, poll.iocb_addr as *mut Iocb) };
        }
        chosen.len()
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
                user_space: UserSpace::new(core),
                polls: Mutex::new(Pending::default()),
                plugged: Mutex::new(Vec::new()),
            }),
        })
    }

    fn submit_to_kernel(&self, request: Inflight) {
        let Some(token) = self.lend(request) else {
            return;
        };
        if plugged(self) {
            lock(&self.local.plugged).push(token);
        } else {
            self.submit_tokens(&[token]);
        }
    }

    /// Lends the request to the kernel as an op on a reserved kernel context, its token;
    /// None if no kernel context has room (the request went to the overflow path).
    fn lend(&self, request: Inflight) -> Option<u64> {
        let Some(kernel) = reserve_kernel() else {
            self.overflow(request);
            return None;
        };
        let is_poll = request.request.opcode == Opcode::Poll;
        let key = request.request.key();
        let mut op = Box::new(Op::new(request, &self.local, kernel));
        if is_poll {
            op.poll_id = Some(lock(&self.local.polls).insert(PollEntry {
                iocb_addr: std::ptr::addr_of!(op.iocb) as u64,
                kernel_id: kernel.id,
                key,
                cancelled: false,
            }));
        }
        Some(lend_to_kernel(op, |op, token| op.iocb.aio_data = token))
    }

    /// Hands the kernel the iocbs of these lent ops: one `io_submit` per run of ops on the
    /// same kernel context, again from the first refused one after its error is taken.
    fn submit_tokens(&self, tokens: &[u64]) {
        let mut rest = tokens;
        while let Some(&first) = rest.first() {
            // SAFETY: every token is of an `Op` lent and not yet taken back; only reading
            // which kernel context it reserved, and its iocb's address.
            let kernel_of = |token: u64| unsafe { (*(token as *const Op)).kernel };
            let iocb_of = |token: u64| {
                // SAFETY: as above.
                unsafe { std::ptr::addr_of_mut!((*(token as *mut Op)).iocb) }
            };
            let kernel = kernel_of(first);
            let run = rest
                .iter()
                .take_while(|&&t| std::ptr::eq(kernel_of(t), kernel))
                .count();
            let iocbs: Vec<*mut Iocb> = rest[..run].iter().map(|&t| iocb_of(t)).collect();
            // SAFETY: each iocb, and the buffers and iovecs it names, live in a lent `Op`,
            // freed only once its event is reaped (or below, if the kernel refuses it).
            match unsafe { io_submit(kernel.id, &iocbs) } {
                Ok(accepted) if accepted > 0 => rest = &rest[accepted..],
                result => {
                    let error = result
                        .err()
                        .unwrap_or_else(|| io::Error::from_raw_os_error(libc::EAGAIN));
                    // SAFETY: the kernel refused this iocb, so no event will name it: the
                    // op is ours again.
                    let op = unsafe { take_back::<Op>(first) };
                    kernel.release();
                    self.refused(op, error);
                    rest = &rest[1..];
                }
            }
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
    fn refused(&self, op: Box<Op>, error: io::Error) {
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        let seen =
            (op.iocb.aio_flags & abi::IOCB_FLAG_RESFD != 0).then_some(op.iocb.aio_resfd as RawFd);
        if errno == libc::EAGAIN {
            let request = op.discard();
            self.overflow(request);
        } else if matches!(errno, libc::EBADF | libc::EINVAL)
            && REAPING
                .get()
                .zip(seen)
                .is_some_and(|(reaping, seen)| reaping.renew_ready(seen))
        {
            // The program closed the engine's eventfd: again, with the new one.
            if let Some(token) = self.lend(op.discard()) {
                self.submit_tokens(&[token]);
            }
        } else {
            op.finish(-(errno as i64), &mut Completions::new());
        }
    }

    /// A request for which the shared kernel contexts have no room: the threads engine runs
    /// it (its poller for a poll), counted as a fallback.
    fn overflow(&self, request: Inflight) {
        request.count_fallback();
        if let Err((request, error)) = self.local.user_space.start_in_user_space(request) {
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

    fn completes_inline(&self) -> bool {
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
            _ if !r.mode.regular => return self.local.user_space.start_in_user_space(request),
            _ if r.rw_flags.contains(RwFlags::NOWAIT) => self.submit_to_kernel(request),
            _ => self.try_inline(request),
        }
        Ok(())
    }

    /// The batch is complete: its iocbs go to the kernel together (the lent descriptors
    /// are still open: the submit call has not returned).
    fn flush(&self) {
        let tokens = std::mem::take(&mut *lock(&self.local.plugged));
        if !tokens.is_empty() {
            self.submit_tokens(&tokens);
        }
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        self.local.user_space.cancel(obj).or_else(|error| {
            if self.local.cancel_polls(|key| key == obj, 1) > 0 {
                Ok(())
            } else {
                Err(error)
            }
        })
    }

    fn cancel_all(&self) {
        self.local.user_space.cancel_all();
        self.local.cancel_polls(|_| true, usize::MAX);
    }

    /// The eventfd every iocb signals, while any is in the kernel (none: a wait has nothing
    /// of the kernel's to watch, and a count left from events already taken would only
    /// wake it for nothing).
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.reaping().map(|reaping| reaping.ready())
    }

    /// Takes the events the kernel has ready, of every context, on this thread: a look at
    /// each ring's header, and an `io_getevents` only for a ring with events. The eventfd
    /// is left as it is (see `before_wait`): a program that keeps the device busy finds
    /// events at every call and makes no `read` of it.
    fn reap_ready(&self) {
        if let Some(reaping) = self.reaping() {
            reaping.pace.program_is_reaping();
            reap_all();
        }
    }

    /// Resets the eventfd, then takes what is ready: an event completed after the reset
    /// signals it again, so the wait that follows cannot sleep through it, and one
    /// completed before is taken here (and ends the wait at once).
    fn before_wait(&self) {
        if let Some(reaping) = self.reaping() {
            eventfd_drain(reaping.ready());
            reap_all();
        }
    }
}

impl KaioEngine {
    /// What waiting threads share, if there are requests out to reap and this is the
    /// process that made the kernel contexts: with none out, a wait polls no eventfd
    /// (`ready_fd`) and so needs no reset of it (`before_wait`).
    fn reaping(&self) -> Option<&'static Reaping> {
        let reaping = REAPING.get()?;
        let usable = !FORKED_CHILD.load(Ordering::Relaxed) && any_outstanding();
        usable.then_some(reaping)
    }
}

/// Takes, on this thread, the events every shared kernel context has ready.
fn reap_all() {
    let mut events = [IoEvent::default(); REAP_BATCH];
    for kernel in KERNEL.iter().map_while(|k| k.get()) {
        kernel.reap_now(&mut events);
    }
}

/// Whether any shared kernel context holds requests.
fn any_outstanding() -> bool {
    KERNEL
        .iter()
        .map_while(|k| k.get())
        .any(|k| k.outstanding.load(Ordering::Relaxed) > 0)
}
