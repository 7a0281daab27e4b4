//! `Context`: the kernel's kioctx in user space. Read this file first.
//!
//! A request's path: `submit` enters the submitters' gate, counts the request in, takes a
//! ring slot, checks it, hands it to the engine and leaves the gate; the engine runs it and
//! calls `Inflight::complete` (core.rs), which posts the event, signals the request's
//! eventfd, wakes waiters, and only then counts the request out. Destroy
//! (`Context::destroy`) closes the gate, waits for the submitters inside to leave, cancels
//! what its engine can cancel, and waits until the count is zero: after that nothing of the
//! context touches caller memory again (lifecycle.rs has the order and why).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buf::{Buf, IoBuf};
use crate::core::{Core, Counters, Inflight};
use crate::doorbell::{Doorbell, Woken};
use crate::engine::inline::{self, Remembered};
use crate::engine::sim::{SimConfig, SimEngine, SimMachine};
use crate::engine::{self, Engine, EngineKind, Probe};
use crate::eventfds::KnownEventfds;
use crate::in_call::InCall;
use crate::lifecycle::{Lifecycle, State};
use crate::request::{Opcode, Request};
use crate::ring::{Ring, Sink};
use crate::sys::abi::{self, IoEvent};
use crate::sys::fd;

pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// One completed request, as `get_events` returns it to a Rust caller.
#[derive(Debug)]
pub struct Completion {
    /// The request's `data` tag.
    pub data: u64,
    id: RequestId,
    /// Bytes transferred (a poll: the ready mask), or a negative errno.
    pub res: i64,
    /// The second result word; 0 on every engine (as the kernel's AIO).
    pub res2: i64,
    bufs: Vec<Buf>,
}

impl Completion {
    /// The completion of a request that never ran, failed with `error`.
    #[cfg(feature = "tokio")]
    pub(crate) fn failed(error: io::Error) -> Completion {
        let code = error.raw_os_error().unwrap_or(libc::EIO);
        Completion {
            data: 0,
            id: RequestId(0),
            res: -i64::from(code),
            res2: 0,
            bufs: Vec::new(),
        }
    }

    /// The request this completes: what `submit` returned for it.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// `res` as a Result: bytes transferred, or the error.
    pub fn result(&self) -> io::Result<usize> {
        if self.res < 0 {
            // An errno is small; anything else is no errno at all, and reads as EIO.
            let code = i32::try_from(self.res.unsigned_abs()).unwrap_or(libc::EIO);
            Err(errno(code))
        } else {
            Ok(usize::try_from(self.res).unwrap_or(usize::MAX))
        }
    }

    /// The request's first (usually only) buffer, handed back as the type that went in:
    /// None if the request had no buffer or `B` is not its type.
    pub fn into_buf<B: IoBuf>(self) -> Option<B> {
        self.into_bufs().and_then(|bufs| bufs.into_iter().next())
    }

    /// All of the request's buffers, handed back in order as the type that went in.
    pub fn into_bufs<B: IoBuf>(self) -> Option<Vec<B>> {
        self.bufs.into_iter().next()?.into_typed()
    }
}

/// The identity of one accepted request, as `submit` returns it: what `cancel` takes and
/// what its [`Completion::id`] says. Unique among the requests of a context in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// The id of the request whose raw identity (a C caller's iocb address) is `obj`.
    #[doc(hidden)]
    pub fn from_obj(obj: u64) -> RequestId {
        RequestId(obj)
    }
}

/// Rust requests are numbered with this bit set, so they never take the identity of a C
/// caller's iocb (a user-space address, below it).
const RUST_REQUEST: u64 = 1 << 63;

/// A request the context did not accept, with the reason; the caller gets it back whole.
#[derive(Debug)]
pub struct SubmitError {
    /// Why it was not accepted (the errno SPEC §2 names).
    pub error: io::Error,
    /// The request, whole: never executed.
    pub request: Request,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} request not accepted: {}",
            self.request.opcode(),
            self.error
        )
    }
}

impl std::error::Error for SubmitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SubmitError> for io::Error {
    fn from(e: SubmitError) -> io::Error {
        e.error
    }
}

/// Counters of a context's life so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests accepted by submit.
    pub submitted: u64,
    /// Completions delivered (reaped).
    pub completed: u64,
    /// Requests that completed as cancelled (`ECANCELED`).
    pub cancelled: u64,
    /// Requests an engine handed to the thread pool because it could not run them without
    /// blocking (kaio: buffered I/O that came back `EAGAIN` under `RWF_NOWAIT`).
    pub fallbacks: u64,
    /// Events lost because a C caller corrupted the ring's `head`.
    pub lost: u64,
}

/// Distinguishes contexts in the ring header's `id` word.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// An AIO context: a completion ring, an engine, and a lifecycle whose destroy waits.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use aioctx::{Context, Request};
///
/// let ctx = Context::builder().depth(32).build()?;
/// let file = Arc::new(std::fs::File::open("/etc/hostname")?);
/// ctx.submit_one(Request::read(file, vec![0u8; 4096], 0).data(1))?;
/// let done = ctx.get_events(1, 1, Some(Duration::from_secs(5)))?;
/// let n = done[0].result()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Context {
    core: Arc<Core>,
    engine: Box<dyn Engine>,
    eventfds: KnownEventfds,
    /// The number of the next Rust request (its `RequestId`); any submitter takes one.
    next_request: AtomicU64,
    /// The engines `auto` passed over for this context, best first, each with its reason.
    skipped: Vec<Probe>,
}

impl Context {
    /// A builder for a context: depth, engine, workers, simulator.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn build(
        nr_events: u32,
        open: impl FnOnce(&Arc<Core>) -> io::Result<Box<dyn Engine>>,
    ) -> io::Result<Context> {
        check_nr_events(nr_events)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let core = Arc::new(Core {
            ring: Ring::new(nr_events, id)?,
            lifecycle: Lifecycle::new(),
            doorbell: Doorbell::new(),
            counters: Counters::default(),
        });
        let engine = open(&core)?;
        Ok(Context {
            core,
            engine,
            eventfds: KnownEventfds::default(),
            next_request: AtomicU64::new(0),
            skipped: Vec::new(),
        })
    }

    /// The engine this context runs on.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }

    /// Why this context does not run on a better engine: the engines `auto` passed over,
    /// best first, each with the reason (its probe's, or why its setup failed for this
    /// context: `EMFILE`, `ENOMEM`, ...). Empty for an engine asked for by name.
    pub fn skipped_engines(&self) -> &[Probe] {
        &self.skipped
    }

    /// How many requests may be in flight or unreaped at once (at least `nr_events`).
    pub fn capacity(&self) -> u32 {
        self.core.ring.capacity()
    }

    /// The context's life-cycle state now (open, destroying, destroyed).
    pub fn state(&self) -> State {
        self.core.lifecycle.state()
    }

    /// Requests started and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.core.lifecycle.in_flight()
    }

    /// The context's counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.core.counters;
        Stats {
            submitted: c.submitted.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed) + self.core.ring.lost(),
        }
    }

    /// The completion ring in the kernel's `aio_ring` layout; the C ABI's context handle.
    /// It stays mapped while this context (or a request of it) lives.
    pub fn ring_ptr(&self) -> *mut abi::AioRingHeader {
        self.core.ring.as_ptr()
    }

    /// Where, from the handle, the ring's memory holds its identity token, and the token:
    /// memory holding it there is this context's ring, wherever the caller moved it.
    #[doc(hidden)]
    pub fn ring_identity(&self) -> (usize, u64) {
        self.core.ring.identity_at()
    }

    /// Records that a C caller moved the ring (`mremap`) to `handle`, recognised by its
    /// identity; `ring_ptr` is that address from now on. False if this ring cannot move.
    #[doc(hidden)]
    pub fn ring_moved_to(&self, handle: *mut abi::AioRingHeader) -> bool {
        self.core.ring.moved_to(handle)
    }

    /// A snapshot of the ring's header words, as a C reader of the handle sees them.
    pub fn ring_header(&self) -> abi::AioRingHeader {
        self.core.ring.header()
    }

    /// Submits requests from the front of `requests`, as `io_submit`: at most
    /// `capacity()` of them; accepted ones are removed from the vector (they are in
    /// flight). Returns the ids of those accepted, in order; an error only if the first
    /// failed. The requests not accepted stay in `requests`, never executed.
    pub fn submit(&self, requests: &mut Vec<Request>) -> io::Result<Vec<RequestId>> {
        let limit = requests.len().min(self.capacity() as usize);
        let mut batch = std::mem::take(requests).into_iter();
        let mut failure = None;
        let accepted = self.batch(|| {
            let mut accepted = Vec::with_capacity(limit);
            while accepted.len() < limit {
                let Some(request) = batch.next() else { break };
                match self.submit_one(request) {
                    Ok(id) => accepted.push(id),
                    Err(SubmitError { error, request }) => {
                        requests.push(request);
                        failure = Some(error);
                        break;
                    }
                }
            }
            accepted
        });
        requests.extend(batch);
        match failure {
            Some(error) if accepted.is_empty() => Err(error),
            _ => Ok(accepted),
        }
    }

    /// Runs `submit_all` (submits to this context) as one batch: engines that can hand the
    /// kernel many requests in one call (io_uring) hold them until the batch ends, so it
    /// costs one system call and one device doorbell. `submit` batches by itself; the C ABI
    /// wraps its `io_submit` loop in this.
    pub fn batch<R>(&self, submit_all: impl FnOnce() -> R) -> R {
        let _in_call = InCall::enter();
        if self.core.lifecycle.forked_away() {
            // A forked child's copy: every submit in it fails `EINVAL`, and the engine's
            // queues (some shared with the parent) are not flushed from here.
            return submit_all();
        }
        engine::with_plug(&*self.engine, submit_all)
    }

    /// Submits one request and returns its id; on failure it comes back with the error.
    pub fn submit_one(&self, request: Request) -> Result<RequestId, SubmitError> {
        let _in_call = InCall::enter();
        match self.admit() {
            Ok(admission) => self.launch(admission, request),
            Err(error) => Err(SubmitError { error, request }),
        }
    }

    /// Submits the request `decode` builds once the context is known live and a ring slot is
    /// taken, so that errors come in the kernel's order (`EAGAIN` for a full ring before
    /// anything the decoder finds). For the C ABI, which resolves fds in `decode`.
    pub fn submit_with(&self, decode: impl FnOnce() -> io::Result<Request>) -> io::Result<()> {
        let _in_call = InCall::enter();
        let admission = self.admit()?;
        let request = decode()?;
        self.launch(admission, request)
            .map(drop)
            .map_err(io::Error::from)
    }

    /// The eventfd a C caller's `aio_resfd` names (see [`resolve_eventfd`]).
    pub(crate) fn resolve_eventfd(&self, raw: RawFd) -> io::Result<Arc<File>> {
        self.eventfds.resolve(raw)
    }

    /// Enters the submitters' gate, counts a request in and takes its ring slot.
    fn admit(&self) -> io::Result<Admission<'_>> {
        if !self.core.lifecycle.enter_submit() {
            return Err(errno(libc::EINVAL));
        }
        self.core.lifecycle.enter();
        let mut admission = Admission {
            core: &self.core,
            slot: false,
            counted: true,
        };
        if !self.core.ring.reserve_slot() {
            return Err(errno(libc::EAGAIN));
        }
        admission.slot = true;
        Ok(admission)
    }

    /// Checks an admitted request and starts it on the engine; the admission leaves the
    /// gate only once the engine has it (or refused it), so that destroy's cancel finds it.
    fn launch(&self, admission: Admission<'_>, request: Request) -> Result<RequestId, SubmitError> {
        let mut admission = admission;
        let mut request = request;
        if request.mode_remembered && !self.engine.completes_inline() {
            // No transfer runs here before the engine's choices: the mode is learnt now.
            if let Err(error) = request.relearn_mode() {
                return Err(SubmitError { error, request });
            }
        }
        let mut checked = self.check(&mut request);
        if checked.is_err() && request.mode_remembered {
            // Found on a remembered mode: the number is looked at first (a number that
            // names nothing is EBADF before anything else, as the kernel's fget).
            checked = request
                .relearn_mode()
                .and_then(|()| self.check(&mut request));
        }
        if let Err(error) = checked {
            return Err(SubmitError { error, request });
        }
        if !self.engine.runs_lent_fds() {
            if let Err(error) = request.hold_file() {
                return Err(SubmitError { error, request });
            }
        }
        let number = self.next_request.fetch_add(1, Ordering::Relaxed);
        let id = RequestId(*request.obj.get_or_insert(RUST_REQUEST | number));
        // From here the request's count and slot are the Inflight's to give back.
        admission.slot = false;
        admission.counted = false;
        let inflight = Inflight::new(request, Arc::clone(&self.core));
        let started = if inflight.request.mode_remembered {
            match inline::on_remembered_mode(inflight) {
                Remembered::Done => Ok(()),
                Remembered::Kept(inflight) => self.engine.start(inflight),
                Remembered::Relearnt(mut inflight) => match self.check(&mut inflight.request) {
                    Ok(()) => self.engine.start(inflight),
                    Err(error) => Err((inflight, error)),
                },
                Remembered::Refused(inflight, error) => Err((inflight, error)),
            }
        } else {
            self.engine.start(inflight)
        };
        match started {
            Ok(()) => {
                self.core.counters.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(id)
            }
            Err((inflight, error)) => Err(SubmitError {
                error,
                request: inflight.unstarted(),
            }),
        }
    }

    /// The submit-time checks of SPEC §2 that a typed request can still fail, in order.
    fn check(&self, request: &mut Request) -> io::Result<()> {
        if let Some(resfd) = &request.resfd {
            if !self.eventfds.is_eventfd(resfd) {
                return Err(errno(libc::EINVAL));
            }
        }
        let op = request.opcode;
        if op == Opcode::Noop {
            return Ok(());
        }
        if request.file.is_none() && request.lent.is_none() {
            return Err(errno(libc::EBADF));
        }
        if op.is_read() || op.is_write() {
            let mode = match (&request.file, request.mode_known) {
                (_, true) => request.mode,
                (Some(file), false) => fd::open_mode(file.as_fd())?,
                (None, false) => return Err(errno(libc::EBADF)),
            };
            if (op.is_read() && !mode.readable) || (op.is_write() && !mode.writable) {
                return Err(errno(libc::EBADF));
            }
            if mode.directory {
                return Err(errno(libc::EINVAL));
            }
            request.mode = mode;
        }
        if (op.is_read() || op.is_write()) && request.mode.regular && request.offset < 0 {
            return Err(errno(libc::EINVAL));
        }
        if (op.is_sync() || op == Opcode::Poll) && !request.rw_flags.is_empty() {
            return Err(errno(libc::EINVAL));
        }
        if !self.engine.supports(request.rw_flags) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// Waits for at least `min` events (or `timeout`), then returns up to `max`, oldest
    /// first, with their buffers. As `io_getevents`: `EINVAL` if `min > max` or the context
    /// is destroyed (while waiting: the events taken so far, else `EINVAL`).
    pub fn get_events(
        &self,
        min: usize,
        max: usize,
        timeout: Option<Duration>,
    ) -> io::Result<Vec<Completion>> {
        let mut completions = Vec::new();
        self.reap(min, max, timeout, None, &mut |event, mut bufs| {
            for buf in &mut bufs {
                buf.complete(event.res);
            }
            completions.push(Completion {
                data: event.data,
                id: RequestId(event.obj),
                res: event.res,
                res2: event.res2,
                bufs,
            });
            Ok(())
        })?;
        Ok(completions)
    }

    /// `get_events` into raw `io_event`s, with an optional kernel signal mask installed for
    /// the wait (`io_pgetevents`); `EINTR` if a signal arrives before any event is taken.
    /// `deliver` writes each event out, oldest first; an event it fails to deliver stays in
    /// the ring and ends the call, which then returns the count delivered before it, or that
    /// failure if it was the first (as the kernel's `copy_to_user` into the caller's array).
    pub fn get_events_raw(
        &self,
        min: usize,
        max: usize,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
        deliver: &mut dyn FnMut(IoEvent) -> io::Result<()>,
    ) -> io::Result<usize> {
        let mut failure = None;
        let taken = self.reap(min, max, timeout, sigmask, &mut |event, bufs| {
            deliver(event).map_err(|error| {
                failure = Some(error);
                bufs
            })
        })?;
        match failure {
            Some(error) if taken == 0 => Err(error),
            _ => Ok(taken),
        }
    }

    /// The one reaping loop behind both faces of get_events.
    fn reap(
        &self,
        min: usize,
        max: usize,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
        sink: &mut Sink<'_>,
    ) -> io::Result<usize> {
        let _in_call = InCall::enter();
        if min > max || !self.core.lifecycle.is_live() {
            return Err(errno(libc::EINVAL));
        }
        // A timeout too far to represent (`Duration::MAX`) is no limit.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let ring = &self.core.ring;
        let mut taken = 0;
        // Completions the engine holds are taken on this thread first: no hop to another.
        self.engine.reap_ready();
        loop {
            let took = ring.take(max - taken, sink);
            taken += took.count;
            // An event the sink refused stays first in the ring: waiting cannot help.
            if took.refused || taken >= min {
                break;
            }
            if !self.core.lifecycle.is_live() {
                return if taken > 0 {
                    Ok(taken)
                } else {
                    Err(errno(libc::EINVAL))
                };
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                break;
            }
            self.engine.before_wait();
            let ready = || ring.unreaped() > 0 || !self.core.lifecycle.is_live();
            let woken = self
                .core
                .doorbell
                .wait(ready, remaining, sigmask, self.engine.ready_fd());
            // Completions the engine holds are taken on this thread: no hop through another.
            self.engine.reap_ready();
            match woken {
                Ok(Woken::Rung) => {}
                Ok(Woken::TimedOut) => {
                    taken += ring.take(max - taken, sink).count;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) && taken > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(taken)
    }

    /// Cancels the in-flight request `id`. `Ok` means what the kernel's `-EINPROGRESS`
    /// means: its event will arrive, with `-ECANCELED` (or its result, if it finished
    /// first). `EINVAL` if no such request can be cancelled (or it was answered before).
    pub fn cancel(&self, id: RequestId) -> io::Result<()> {
        let _in_call = InCall::enter();
        if !self.core.lifecycle.is_live() {
            return Err(errno(libc::EINVAL));
        }
        self.engine.cancel(id.0)
    }

    /// Destroys the context: when this returns, no request of it will ever touch caller
    /// memory again. Every concurrent caller waits for that; the first gets `Ok`, the
    /// others (and later calls) `EINVAL`. Events not reaped are discarded.
    pub fn destroy(&self) -> io::Result<()> {
        let _in_call = InCall::enter();
        let core = &self.core;
        let first = core
            .lifecycle
            .destroy(&core.doorbell, || self.engine.cancel_all());
        if first {
            Ok(())
        } else {
            Err(errno(libc::EINVAL))
        }
    }
}

impl SimMachine {
    /// A new context on this machine: it shares the machine's clock, disk and power supply
    /// with the machine's other contexts.
    pub fn context(&self, nr_events: u32) -> io::Result<Context> {
        Context::build(nr_events, |core| Ok(Box::new(self.engine(core))))
    }
}

impl Drop for Context {
    /// Drop is destroy: it blocks until nothing of the context is in flight. A forked
    /// child's copy of a parent's context is leaked instead: its engine's threads are the
    /// parent's, its locks may be held by them, and part of its memory is shared with the
    /// parent, so nothing of it is torn down here (SPEC §3).
    fn drop(&mut self) {
        if self.core.lifecycle.forked_away() {
            std::mem::forget(std::mem::replace(
                &mut self.engine,
                Box::new(engine::Detached),
            ));
            return;
        }
        let _ = self.destroy();
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("engine", &self.engine())
            .field("capacity", &self.capacity())
            .field("state", &self.state())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// How to make a [`Context`]. Whatever is not set comes from the environment, which is
/// the one place the CLI and the drop-in `libaio.so.1` are configured:
///
/// | variable | default of | meaning |
/// |---|---|---|
/// | `AIOCTX_ENGINE` | [`Builder::engine`] | `auto` (unset), `uring`, `kaio`, `threads` or `sim` |
/// | `AIOCTX_SIM` | [`Builder::simulator`] | the simulator's configuration, as [`SimConfig`]'s `FromStr` reads it |
/// | `AIOCTX_WORKERS` | [`Builder::workers`] | the shared thread pool's size (32 if unset) |
///
/// ```
/// use aioctx::{Context, EngineKind};
/// let ctx = Context::builder().depth(64).engine(EngineKind::Threads).build()?;
/// assert!(ctx.capacity() >= 64);
/// assert_eq!(ctx.engine(), EngineKind::Threads);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until build()"]
pub struct Builder {
    depth: u32,
    engine: Option<EngineKind>,
    workers: Option<usize>,
    simulator: Option<SimConfig>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            depth: 128,
            engine: None,
            workers: None,
            simulator: None,
        }
    }
}

impl Builder {
    /// How many requests may be in flight or unreaped at once, at least (128 if unset).
    pub fn depth(mut self, nr_events: u32) -> Builder {
        self.depth = nr_events;
        self
    }

    /// The engine (else `AIOCTX_ENGINE`, else the best that works here).
    pub fn engine(mut self, kind: EngineKind) -> Builder {
        self.engine = Some(kind);
        self
    }

    /// The most threads the shared worker pool runs. The pool serves every context of the
    /// process, so this sets it for all of them; the last setting wins.
    pub fn workers(mut self, workers: usize) -> Builder {
        self.workers = Some(workers);
        self
    }

    /// Runs the context on the simulator with this configuration (the engine is `Sim`).
    pub fn simulator(mut self, config: SimConfig) -> Builder {
        self.simulator = Some(config);
        self.engine = Some(EngineKind::Sim);
        self
    }

    /// Makes the context. Errors as `io_setup`: `EINVAL` for a depth of 0 or an absurd
    /// one; `EAGAIN` for more than `/proc/sys/fs/aio-max-nr` events; an unknown
    /// `AIOCTX_ENGINE` or `AIOCTX_SIM`: `InvalidInput`.
    pub fn build(self) -> io::Result<Context> {
        if let Some(workers) = self.workers.filter(|&n| n > 0) {
            engine::pool::set_workers(workers);
        }
        let kind = match self.engine {
            Some(kind) => kind,
            None => EngineKind::from_env()?,
        };
        match (kind, self.simulator) {
            (EngineKind::Sim, Some(config)) => Context::build(self.depth, |core| {
                Ok(Box::new(SimEngine::new(core, config)?))
            }),
            _ => {
                let mut skipped = Vec::new();
                let mut ctx =
                    Context::build(self.depth, |core| engine::open(kind, core, &mut skipped))?;
                ctx.skipped = skipped;
                Ok(ctx)
            }
        }
    }
}

/// A submitter inside the gate, with its request counted in and a ring slot, not yet
/// started: dropping it undoes what it still holds and leaves the gate.
struct Admission<'a> {
    core: &'a Core,
    slot: bool,
    counted: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.slot {
            self.core.ring.unreserve_slot();
        }
        if self.counted {
            self.core.lifecycle.exit();
        }
        self.core.lifecycle.leave_submit();
    }
}

/// `io_setup`'s size checks: nonzero, within the kernel's cap, within `aio-max-nr`.
fn check_nr_events(nr_events: u32) -> io::Result<()> {
    if nr_events == 0 || u64::from(nr_events) > abi::MAX_NR_EVENTS {
        return Err(errno(libc::EINVAL));
    }
    if u64::from(nr_events) > aio_max_nr() {
        return Err(errno(libc::EAGAIN));
    }
    Ok(())
}

/// `/proc/sys/fs/aio-max-nr` (the kernel's default if unreadable).
fn aio_max_nr() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/aio-max-nr")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65536)
}

/// The eventfd a C caller's `aio_resfd` names, held open for a request of `ctx` (`EBADF`
/// if it names nothing). Resolving the same eventfd again costs one `kcmp` instead of a
/// dup and a `/proc` lookup (see `eventfds.rs`). For the C ABI, inside
/// [`Context::submit_with`]; reached through `crate::ffi`.
///
/// # Safety
///
/// `raw` is a number the caller lent for the call (libaio's contract for `aio_resfd`: an
/// eventfd open until `io_submit` returns), or one that names nothing, reported as
/// `EBADF`. The number is only compared and duplicated, never read or written through.
pub unsafe fn resolve_eventfd(ctx: &Context, raw: RawFd) -> io::Result<Arc<File>> {
    ctx.resolve_eventfd(raw)
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::mpsc;

    use super::*;
    use crate::core::hooks;

    /// An engine whose completion path is a thread of its own per request, as a worker's.
    struct CompletesOnItsOwnThread;

    impl Engine for CompletesOnItsOwnThread {
        fn kind(&self) -> EngineKind {
            EngineKind::Threads
        }

        fn supports(&self, flags: crate::request::RwFlags) -> bool {
            flags.is_empty()
        }

        fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
            std::thread::spawn(move || request.complete(0));
            Ok(())
        }

        fn cancel(&self, _obj: u64) -> io::Result<()> {
            Err(errno(libc::EINVAL))
        }

        fn cancel_all(&self) {}
    }

    /// Destroys `ctx` on another thread; panics if it has not returned within a minute.
    fn destroy_returns(ctx: Context) -> io::Result<()> {
        let (done, returned) = mpsc::channel();
        std::thread::spawn(move || done.send(ctx.destroy()));
        returned
            .recv_timeout(Duration::from_secs(60))
            .expect("destroy hung")
    }

    /// The completion of the request tagged `tag` panics (on whichever thread completes
    /// it): its event still arrives, as EIO, and destroy returns.
    fn a_panic_in_completion_does_not_hang_destroy(ctx: Context, tag: u64) {
        hooks::panic_on_completion_of(tag);
        // Engines that complete a NOOP inline panic inside submit; the request was counted
        // in all the same.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            ctx.submit_one(Request::noop().data(tag))
        }));
        // Engines that complete while the caller reaps (the simulator) panic inside
        // get_events; the event is there for the next call.
        let reap = || ctx.get_events(1, 1, Some(Duration::from_secs(60)));
        let events = catch_unwind(AssertUnwindSafe(reap))
            .or_else(|_| catch_unwind(AssertUnwindSafe(reap)))
            .expect("a second reap does not panic")
            .unwrap();
        destroy_returns(ctx).unwrap();
        let event: Vec<_> = events.iter().map(|e| (e.data, e.res)).collect();
        assert_eq!(event, [(tag, -(libc::EIO as i64))]);
    }

    #[test]
    fn a_panic_on_an_engine_thread_does_not_hang_destroy() {
        let ctx = Context::build(8, |_| Ok(Box::new(CompletesOnItsOwnThread))).unwrap();
        a_panic_in_completion_does_not_hang_destroy(ctx, 0x5eed_0001);
    }

    #[test]
    fn a_panic_in_the_simulators_completion_does_not_hang_destroy() {
        let ctx = Context::builder()
            .depth(8)
            .simulator(SimConfig::default())
            .build()
            .unwrap();
        a_panic_in_completion_does_not_hang_destroy(ctx, 0x5eed_0002);
    }

    #[test]
    fn a_panic_in_the_thread_pools_completion_does_not_hang_destroy() {
        let ctx = Context::builder()
            .depth(8)
            .engine(EngineKind::Threads)
            .build()
            .unwrap();
        a_panic_in_completion_does_not_hang_destroy(ctx, 0x5eed_0003);
    }

    #[test]
    fn a_destroy_with_a_request_left_uncompleted_by_a_panic_returns() {
        // The panic strikes while the test still holds requests in flight behind it.
        let ctx = Context::build(8, |_| Ok(Box::new(CompletesOnItsOwnThread))).unwrap();
        hooks::panic_on_completion_of(0x5eed_0004);
        ctx.submit_one(Request::noop().data(0x5eed_0004)).unwrap();
        destroy_returns(ctx).unwrap();
    }

    #[test]
    fn get_events_with_the_longest_timeout_waits_without_limit() {
        let ctx = Context::builder()
            .depth(8)
            .simulator(SimConfig::default())
            .build()
            .unwrap();
        ctx.submit_one(Request::noop().data(9)).unwrap();
        let events = ctx.get_events(1, 1, Some(Duration::MAX)).unwrap();
        assert_eq!(events[0].data, 9);
    }
}
