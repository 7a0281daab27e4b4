//! The io_uring engine: contexts share a few process-wide io_uring instances.
//!
//! A context costs no descriptor and no thread of its own: it is a name (an owner) on one
//! of at most one instance per CPU, four at most (`set.rs`, `instance.rs`), each with one
//! reaper thread (`reaper.rs`), each mapped and entered by the engine itself (`raw.rs`,
//! where the SQ tail and the CQ head have one owner each). A request becomes one SQE whose
//! `user_data` is the address of the boxed request (`sqe.rs`), so the request (its
//! buffers, its iovecs, its open file) lives exactly until its CQE is taken; the
//! instance's table of what it holds (`in_kernel.rs`) keeps each context's requests apart,
//! so that cancel and destroy touch exactly their own.
//!
//! The submitting thread enters the kernel itself, once per batch, and takes the CQEs that
//! are already there when it returns: a NOOP, or anything io_uring finishes during submit,
//! completes on the caller's thread without a hop to another CPU. Whatever completes later
//! (disk, pipes, io-wq punts) is taken by whichever comes first: a thread waiting in
//! get_events of any context on the instance, which polls the instance's fd and takes the
//! CQEs itself (one wake-up instead of two: about 5x the rate of 1-byte pipe reads at queue
//! depth 1 on a 2-vCPU VM), or the reaper, which posts events as they happen with nobody
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
//! Cancel and destroy use async cancel by `user_data`, under the submission lock of the
//! table that keeps the named request from being freed meanwhile. A request is cancelled
//! at most once: a cancel of a request a cancel already named is `EINVAL`. Destroy cancels
//! its own context's requests and waits for their CQEs, while the other contexts on the
//! instance go on.
//!
//! io_uring ties a request to the thread that submitted it: when that thread exits, the
//! kernel cancels its requests still waiting for a pipe or socket (`-ECANCELED`, though
//! nobody asked). Such a request is submitted again by the thread that takes its CQE, so it
//! completes as it would have under kernel AIO: it holds its file itself (a C caller's
//! number is copied), since the caller may have closed or reused the number by then. Reads
//! and writes of regular files and block devices, which io_uring never arms a poll for and
//! the device bounds, are instead waited for by the thread as it exits (`exit.rs`): the
//! kernel would fail what of them is still to be issued on it. So a C caller's read or
//! write of such a file takes no copy: the kernel resolves the number into its own
//! reference to the file when the enter takes the SQE, before the submit call returns
//! (`Instance::enter_submit`), and nothing uses the number after; it is never submitted
//! again, and an error the kernel gives it anyway (a thread ended without its destructors)
//! is its result.

mod exit;
mod in_kernel;
mod instance;
mod probe;
mod raw;
mod reaper;
mod set;
mod sqe;

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use self::in_kernel::{Fd, Kind, Owner};
use self::instance::{Instance, Locked, NO_REQUEST};
use self::sqe::{prepare, Op};
use super::inline::complete_inline;
use super::{lend_to_kernel, plugged, Engine, EngineKind};
use crate::core::{Core, Inflight};
use crate::request::{Request, RwFlags};

pub(crate) use self::probe::probe;

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Whether a request reads or writes a regular file or a block device (its mode, learnt by
/// submit's checks of the file the number names in this very call), which is never
/// poll-armed and which the thread that submits it waits for as it exits (see the module's
/// last part). Only reads and writes have their mode learnt.
fn is_file_io(request: &Request) -> bool {
    (request.opcode.is_read() || request.opcode.is_write())
        && (request.mode.regular || request.mode.block_device)
}

/// A context's face of its shared io_uring instance.
pub(crate) struct UringEngine {
    instance: &'static Instance,
    owner: Owner,
}

impl UringEngine {
    pub(crate) fn new(_core: &Arc<Core>) -> io::Result<UringEngine> {
        let instance = set::for_new_context()?;
        Ok(UringEngine {
            instance,
            owner: instance.open_context(),
        })
    }

    /// Submits an async cancel of each request in `targets`, which the held submission
    /// lock keeps registered since they were looked up (none: nothing to enter).
    fn cancel_each(&self, mut sub: Locked<'_>, targets: &[u64]) {
        if targets.is_empty() {
            return;
        }
        for &user_data in targets {
            // SAFETY: a cancel SQE points at no memory; it names a request by user_data,
            // which stays registered (so not freed) while the lock is held, and whose
            // address an SQE pushed later (behind this one) is the first that may reuse.
            unsafe {
                self.instance
                    .push(&mut sub, &sqe::cancel(user_data, NO_REQUEST))
            };
        }
        drop(sub);
        self.instance.enter_and_take();
    }
}

impl Engine for UringEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Uring
    }

    fn supports(&self, flags: RwFlags) -> bool {
        RwFlags::ALL.contains(flags)
    }

    /// What is not done inline holds its file before it enters the ring, unless it is a
    /// read or write of a regular file or a block device (see the module's last part).
    fn runs_lent_fds(&self) -> bool {
        true
    }

    fn completes_inline(&self) -> bool {
        true
    }

    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        if !self.instance.is_current() {
            // A forked child's copy of a parent's context: its ring is not mapped here.
            return Err((request, einval()));
        }
        // What the page cache serves costs less as one plain syscall than as an SQE.
        let Some(mut request) = complete_inline(request) else {
            return Ok(());
        };
        if !self.instance.enters_here() {
            // The program closed the instance's number before this thread first entered it.
            return Err((request, einval()));
        }
        // A request in the ring may be submitted again later, unless it is file I/O on a
        // lent number (see the module's last part).
        let file_io = is_file_io(&request.request);
        let fd = if file_io && request.request.file.is_none() {
            Fd::Lent
        } else if let Err(e) = request.request.hold_file() {
            return Err((request, e));
        } else {
            Fd::Held
        };
        let key = request.request.key();
        let signals_eventfd = request.request.resfd.is_some();
        let mut sub = self.instance.submission();
        if !sub.in_kernel.is_open(self.owner) {
            // cancel_all ran: the context is dying and starts nothing more.
            return Err((request, einval()));
        }
        let op = Box::new(Op {
            inflight: request,
            iovecs: Vec::new(),
        });
        let mut entry = None;
        let user_data = lend_to_kernel(op, |op, token| {
            entry = Some(prepare(op).user_data(token));
        });
        if file_io {
            self.instance.file_io_starts();
        }
        sub.in_kernel
            .register(self.owner, user_data, key, Kind { fd, file_io });
        if signals_eventfd {
            // Its eventfd's reader waits for it now: a napping reaper goes back to posting
            // every completion at once.
            self.instance.pace.eventfd_request_started();
        }
        if let Some(entry) = entry {
            // SAFETY: the SQE points into the lent box, which `finish` takes back only
            // after the CQE was taken.
            unsafe { self.instance.push(&mut sub, &entry) };
        }
        drop(sub);
        if !plugged(self) {
            self.instance.enter_and_take();
        }
        Ok(())
    }

    fn flush(&self) {
        // A batch done wholly inline (the page cache served it) needs no enter.
        if self.instance.is_current() && !self.instance.sq_is_empty() {
            self.instance.enter_and_take();
        }
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        if !self.instance.is_current() {
            return Err(einval());
        }
        let mut sub = self.instance.submission();
        match sub.in_kernel.cancel_one(self.owner, obj) {
            Some(user_data) => {
                self.cancel_each(sub, &[user_data]);
                Ok(())
            }
            None => Err(einval()),
        }
    }

    fn cancel_all(&self) {
        if self.instance.is_current() {
            let mut sub = self.instance.submission();
            let targets = sub.in_kernel.cancel_all(self.owner);
            self.cancel_each(sub, &targets);
        }
    }

    /// The instance's fd polls readable while CQEs of any of its contexts wait.
    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.instance
            .is_current()
            .then(|| self.instance.fd())
            .flatten()
    }

    fn reap_ready(&self) {
        if self.instance.is_current() {
            self.instance.pace.program_is_reaping();
            self.instance.take_for_waiter();
        }
    }
}

impl Drop for UringEngine {
    /// Runs after destroy waited for every request of the context: nothing of it is left in
    /// the table (the CQEs of its cancels, which complete no request, may still come).
    fn drop(&mut self) {
        if self.instance.is_current() {
            self.instance.submission().in_kernel.forget(self.owner);
        }
    }
}
