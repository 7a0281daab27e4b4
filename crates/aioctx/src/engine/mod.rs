//! The engines that run requests, behind one trait, and the choice among them.
//!
//! An engine is opened per context; it receives requests that already passed the
//! context's checks, owns each until it calls [`Inflight::complete`], and cancels what it
//! can. Everything about the lifecycle (slots, counting, waking, destroy) stays in
//! `context.rs`, shared by all engines.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::str::FromStr;
use std::sync::Arc;

use crate::context::{Core, Inflight};
use crate::request::RwFlags;

mod blocking;
mod poller;
pub mod threads;
mod uring;

/// What an engine does with a context's requests.
pub(crate) trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Whether the engine honours these `RWF_*` flags (else submit fails `EOPNOTSUPP`).
    fn supports(&self, flags: RwFlags) -> bool;

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
}

/// The engines, by name (`AIOCTX_ENGINE`, `--engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// The best engine that works here.
    Auto,
    /// One io_uring per context, with a reaper thread posting its completions.
    Uring,
    /// A bounded worker pool shared by all contexts; works anywhere.
    Threads,
}

impl EngineKind {
    /// Every concrete engine, best first (the order `Auto` tries them in).
    pub const ALL: [EngineKind; 2] = [EngineKind::Uring, EngineKind::Threads];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Uring => "uring",
            EngineKind::Threads => "threads",
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
            EngineKind::Auto => probe_all()
                .into_iter()
                .find(|p| p.available)
                .map_or(EngineKind::Threads, |p| p.kind),
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

/// Whether an engine works here, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub kind: EngineKind,
    pub available: bool,
    /// Why the engine is unavailable (None when it is available).
    pub reason: Option<String>,
}

/// Probes every engine, best first.
pub fn probe_all() -> Vec<Probe> {
    EngineKind::ALL
        .into_iter()
        .map(|kind| {
            let result = match kind {
                EngineKind::Uring => uring::probe(),
                EngineKind::Threads => Ok(()),
                EngineKind::Auto => unreachable!("ALL holds concrete engines only"),
            };
            Probe {
                kind,
                available: result.is_ok(),
                reason: result.err(),
            }
        })
        .collect()
}

/// Opens the engine for a new context.
pub(crate) fn open(kind: EngineKind, core: &Arc<Core>) -> io::Result<Box<dyn Engine>> {
    Ok(match kind.resolve() {
        EngineKind::Uring => Box::new(uring::UringEngine::new(core)?),
        EngineKind::Threads => Box::new(threads::ThreadsEngine::new(core)),
        EngineKind::Auto => unreachable!("resolve returns a concrete engine"),
    })
}
