//! The engines that run requests, behind one trait, and the choice among them.
//!
//! An engine is opened per context; it receives requests that already passed the
//! context's checks, owns each until it calls `Inflight::complete`, and cancels what it
//! can. Everything about the lifecycle (slots, counting, waking, destroy) stays in the
//! shared code beneath the engines (`core.rs`, `lifecycle.rs`, `context.rs`).

// A request an engine cannot start comes back whole in the `Err` (moved, never copied to
// the heap), so that the caller gets it back unstarted; the size is the request's.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::str::FromStr;
use std::sync::Arc;

use crate::buf::Buffers;
use crate::core::{Core, Inflight};
use crate::request::RwFlags;

pub use probe::{Probe, Unavailable};

mod blocking;
pub(crate) mod inline;
pub(crate) mod kaio;
mod pace;
mod pending;
mod poller;
pub(crate) mod pool;
mod probe;
pub(crate) mod sim;
mod threads;
mod uring;

/// What an engine does with a context's requests.
pub(crate) trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Whether the engine honours these `RWF_*` flags (else submit fails `EOPNOTSUPP`).
    fn supports(&self, flags: RwFlags) -> bool;

    /// Whether `start` takes requests on a lent descriptor (`Request::lent`) and calls
    /// `Request::hold_file` for each one whose number it would use after the submit call
    /// returns (a reference the kernel took inside the call needs none); else the context
    /// makes every request hold its file before `start`.
    fn runs_lent_fds(&self) -> bool {
        false
    }

    /// Whether the engine completes what the page cache serves on the submitting thread
    /// (`inline.rs`): a request on a remembered mode then runs there first, which confirms
    /// the mode or finds it wrong; else the mode is learnt afresh before `start`.
    fn completes_inline(&self) -> bool {
        false
    }

    /// Starts a checked request. On error the request comes back, never started.
    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)>;

    /// Cancels the request of this context whose identity is `obj`: `Ok` if its event will
    /// come (as `-ECANCELED` or its result), `EINVAL` if there is no such request or the
    /// engine cannot stop it.
    fn cancel(&self, obj: u64) -> io::Result<()>;

    /// Cancels every request of this context that may never finish on its own (destroy's
    /// second step). Requests it cannot cancel are left to complete.
    fn cancel_all(&self);

    /// A descriptor that becomes readable when completions are ready for `reap_ready`, so
    /// that a thread waiting in get_events takes them itself instead of waiting for the
    /// engine's own thread to post them (a wake-up on another CPU saved).
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Completes, on the calling thread, the requests whose completions are ready.
    fn reap_ready(&self) {}

    /// Readies `ready_fd` for a wait that follows at once: whatever completes after this
    /// makes it readable. Completions it takes end the wait before it sleeps.
    fn before_wait(&self) {}

    /// Hands the kernel what `start` held back while this thread was plugged (see
    /// [`plugged`]). Called once the batch is complete.
    fn flush(&self) {}
}

thread_local! {
    /// The engine this thread is submitting a batch to, by address, or 0 (the kernel's
    /// per-task `blk_plug`): an engine that can pass many requests to the kernel in one
    /// call holds them until `flush`, so a batch costs one system call and, for a device,
    /// one doorbell. Per engine, so that a submit to another context inside the batch is
    /// not held back with it.
    static PLUGGED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn address_of(engine: &dyn Engine) -> usize {
    engine as *const dyn Engine as *const () as usize
}

/// Whether the calling thread is inside a batch submit to `engine`.
pub(crate) fn plugged(engine: &dyn Engine) -> bool {
    PLUGGED.with(|p| p.get()) == address_of(engine)
}

/// Runs `submit_all` plugged for `engine`, then flushes it (also if `submit_all` panics).
pub(crate) fn with_plug<R>(engine: &dyn Engine, submit_all: impl FnOnce() -> R) -> R {
    struct Unplug<'a>(&'a dyn Engine, usize);
    impl Drop for Unplug<'_> {
        fn drop(&mut self) {
            PLUGGED.with(|p| p.set(self.1));
            self.0.flush();
        }
    }
    let outer = PLUGGED.with(|p| p.replace(address_of(engine)));
    let _unplug = Unplug(engine, outer);
    submit_all()
}

/// Completes requests taken off an engine's queue with `-ECANCELED`; returns how many.
pub(crate) fn complete_cancelled(requests: Vec<Inflight>) -> usize {
    let count = requests.len();
    for request in requests {
        request.complete(-(libc::ECANCELED as i64));
    }
    count
}

/// Cancel for engines that keep requests in a queue of their own and polls in the
/// poller: `queued` is what was taken off the queue for `obj` (at most one); failing
/// that, a poll of `core` with that identity is cancelled.
pub(crate) fn cancel_queued_or_poll(
    queued: Vec<Inflight>,
    core: &Arc<Core>,
    obj: u64,
) -> io::Result<()> {
    let found = match complete_cancelled(queued) {
        0 => poller::cancel_polls(core, |key| key == obj, 1),
        n => n,
    };
    if found > 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// What a forked child's copy of a parent's context holds in place of the parent's engine,
/// which it leaks (see `Drop for Context`): it refuses everything.
pub(crate) struct Detached;

impl Engine for Detached {
    fn kind(&self) -> EngineKind {
        EngineKind::Auto
    }

    fn supports(&self, _flags: RwFlags) -> bool {
        false
    }

    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        Err((request, io::Error::from_raw_os_error(libc::EINVAL)))
    }

    fn cancel(&self, _obj: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn cancel_all(&self) {}
}

/// The iovecs of one transfer: most have one or a few, which take no allocation (the
/// inline storage moves with the value, so what hands its address to the kernel for
/// longer than a call keeps a `Vec`).
pub(crate) type Iovecs = smallvec::SmallVec<[libc::iovec; 4]>;

/// The iovecs of the bytes `window` of a request's buffers (all of them: `0..usize::MAX`),
/// for the vectored syscalls and the kernel-facing engines. A segment wholly before the
/// window is left out; an empty one inside it is kept.
pub(crate) fn iovecs_of(buffers: &mut Buffers, window: std::ops::Range<usize>) -> Iovecs {
    let mut skip = window.start;
    let mut left = window.end.saturating_sub(window.start);
    buffers
        .segments()
        .into_iter()
        .filter_map(|(base, len)| {
            let skipped = skip.min(len);
            skip -= skipped;
            if skipped == len && len > 0 {
                return None;
            }
            let len = (len - skipped).min(left);
            left -= len;
            Some(libc::iovec {
                // Within the segment: `skipped` is at most its length.
                iov_base: base.wrapping_add(skipped).cast(),
                iov_len: len,
            })
        })
        .collect()
}

/// Lends a boxed value to the kernel under a token, its address (an iocb's `aio_data`, an
/// SQE's `user_data`), which `stamp` writes into the value itself before anything else
/// knows of it. The value lives until [`take_back`] is called with the token, once.
pub(crate) fn lend_to_kernel<T>(value: Box<T>, stamp: impl FnOnce(&mut T, u64)) -> u64 {
    let raw = Box::into_raw(value);
    let token = raw as u64;
    // SAFETY: `raw` is the live box just leaked; nothing else knows of it yet.
    stamp(unsafe { &mut *raw }, token);
    token
}

/// Takes back the value lent under `token`.
///
/// # Safety
/// `token` came from [`lend_to_kernel`] for a `T` and is taken back at most once (the
/// kernel reports each iocb or SQE in one event, reaped once; or it refused it).
pub(crate) unsafe fn take_back<T>(token: u64) -> Box<T> {
    // SAFETY: the caller's promise: a live box leaked by `lend_to_kernel`, taken once.
    unsafe { Box::from_raw(token as *mut T) }
}

/// The engines, by name (`AIOCTX_ENGINE`, `--engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// The best engine that works here.
    Auto,
    /// io_uring: all contexts share a few io_uring instances (one per CPU, four at most),
    /// each with one reaper thread posting completions nobody waits for; a context holds
    /// no fd and no thread of its own.
    Uring,
    /// The kernel's Linux AIO system calls, with shared kernel contexts; buffered I/O the
    /// kernel would do inside `io_submit` falls back to the thread pool.
    Kaio,
    /// A bounded worker pool shared by all contexts; works anywhere.
    Threads,
    /// The deterministic, fault-injecting simulator (`AIOCTX_SIM`); never chosen by auto.
    Sim,
}

impl EngineKind {
    /// Every concrete engine, best first (the order `Auto` tries them in; it never picks
    /// the simulator).
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Uring,
        EngineKind::Kaio,
        EngineKind::Threads,
        EngineKind::Sim,
    ];

    /// The engine's name, as `AIOCTX_ENGINE` and the command spell it.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Uring => "uring",
            EngineKind::Kaio => "kaio",
            EngineKind::Threads => "threads",
            EngineKind::Sim => "sim",
        }
    }

    /// The engine named by `AIOCTX_ENGINE`, or `Auto` if it is unset or empty.
    pub fn from_env() -> io::Result<EngineKind> {
        match std::env::var("AIOCTX_ENGINE") {
            Ok(name) if !name.is_empty() => name.parse(),
            _ => Ok(EngineKind::Auto),
        }
    }

    /// The concrete engine this choice stands for here.
    pub fn resolve(self) -> EngineKind {
        match self {
            // Probing sets engines up and tears them down: do it once per process.
            EngineKind::Auto => *AUTO.get_or_init(|| {
                probe_all()
                    .into_iter()
                    .find(|p| p.available() && p.kind != EngineKind::Sim)
                    .map_or(EngineKind::Threads, |p| p.kind)
            }),
            kind => kind,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = io::Error;

    fn from_str(name: &str) -> io::Result<EngineKind> {
        std::iter::once(EngineKind::Auto)
            .chain(EngineKind::ALL)
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = std::iter::once(EngineKind::Auto)
                    .chain(EngineKind::ALL)
                    .map(EngineKind::name)
                    .collect();
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown engine '{name}' (known: {})", known.join(", ")),
                )
            })
    }
}

static AUTO: std::sync::OnceLock<EngineKind> = std::sync::OnceLock::new();

/// Probes every engine, best first.
pub fn probe_all() -> Vec<Probe> {
    EngineKind::ALL
        .into_iter()
        .map(|kind| Probe {
            kind,
            result: probe(kind),
        })
        .collect()
}

fn probe(kind: EngineKind) -> Result<(), Unavailable> {
    match kind {
        EngineKind::Uring => uring::probe(),
        EngineKind::Kaio => kaio::probe(),
        EngineKind::Threads | EngineKind::Sim => Ok(()),
        // Not in `ALL`: auto is a choice, not an engine.
        EngineKind::Auto => Err(Unavailable::Other(libc::EINVAL)),
    }
}

/// Opens the engine for a new context. For `Auto`, an engine that did not probe well, or
/// probed well but cannot be opened for this context (for any reason: out of descriptors,
/// locked memory, ...), gives way to the next one; each one passed over is added to
/// `skipped` with its reason.
pub(crate) fn open(
    kind: EngineKind,
    core: &Arc<Core>,
    skipped: &mut Vec<Probe>,
) -> io::Result<Box<dyn Engine>> {
    if kind != EngineKind::Auto {
        return open_concrete(kind, core);
    }
    let mut first_error = None;
    for probe in probe_all() {
        if probe.kind == EngineKind::Sim {
            continue;
        }
        let result = match probe.result {
            Ok(()) => match open_concrete(probe.kind, core) {
                Ok(engine) => return Ok(engine),
                Err(e) => Err(Unavailable::from_error(probe.kind, &e)),
            },
            Err(reason) => Err(reason),
        };
        if let Err(reason) = &result {
            first_error.get_or_insert_with(|| io::Error::from(reason.clone()));
        }
        skipped.push(Probe {
            kind: probe.kind,
            result,
        });
    }
    Err(first_error.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOSYS)))
}

fn open_concrete(kind: EngineKind, core: &Arc<Core>) -> io::Result<Box<dyn Engine>> {
    Ok(match kind {
        // Where a seccomp filter could kill the setup call, it is probed in a child first.
        EngineKind::Uring => {
            if probe::seccomp_filter_active() {
                uring::probe()?;
            }
            Box::new(uring::UringEngine::new(core)?)
        }
        EngineKind::Kaio => {
            if probe::seccomp_filter_active() {
                kaio::probe()?;
            }
            Box::new(kaio::KaioEngine::new(core)?)
        }
        EngineKind::Threads => Box::new(threads::ThreadsEngine::new(core)),
        EngineKind::Sim => Box::new(sim::SimEngine::new(core, sim::SimConfig::from_env()?)?),
        // `open` resolves Auto before it gets here.
        EngineKind::Auto => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    })
}
