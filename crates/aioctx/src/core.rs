//! What engines complete into, beneath them: the part of a context that requests in flight
//! keep alive (`Core`: the ring, the lifecycle, the doorbell, the counters), and `Inflight`,
//! the request an engine owns between start and completion and must complete exactly once.
//!
//! Engines import this module, never `context.rs`: the context's API sits above the
//! engines, and this is all of it they may touch.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::doorbell::Doorbell;
use crate::lifecycle::Lifecycle;
use crate::request::Request;
use crate::ring::Ring;
use crate::sys::abi::IoEvent;
use crate::sys::fd;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) lost: AtomicU64,
}

/// The part of a context that requests in flight keep alive. It never refers to the
/// engine, so a forgotten `Context` leaks instead of freeing memory a request still uses.
pub(crate) struct Core {
    pub(crate) ring: Ring,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) doorbell: Doorbell,
    pub(crate) counters: Counters,
}

/// What an `Inflight` dropped without being completed (an engine's panic, an early return)
/// completes with: the request failed, and its event says so.
const DROPPED: i64 = -(libc::EIO as i64);

/// A request an engine owns between start and completion. It is completed exactly once by
/// type: `complete` consumes it, and dropping one never completed posts its event with
/// `-EIO` and counts it out, so that no panic can leave destroy waiting for it.
#[must_use = "an Inflight must be completed; dropping it fails the request with EIO"]
pub(crate) struct Inflight {
    pub(crate) request: Request,
    core: Arc<Core>,
    /// Set once the request was completed or handed back unstarted: Drop then does nothing.
    settled: bool,
}

impl Inflight {
    /// A request counted in (in flight, with a ring slot), about to be started.
    pub(crate) fn new(request: Request, core: Arc<Core>) -> Inflight {
        Inflight {
            request,
            core,
            settled: false,
        }
    }

    /// Whether this request belongs to the context of `core`.
    pub(crate) fn belongs_to(&self, core: &Arc<Core>) -> bool {
        Arc::ptr_eq(&self.core, core)
    }

    /// Counts in the context's stats that the engine handed this request to the thread pool.
    pub(crate) fn count_fallback(&self) {
        self.core.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Posts the request's event and lets go of it. Called by the engine after its last
    /// access to the request's memory.
    pub(crate) fn complete(mut self, res: i64) {
        #[cfg(test)]
        hooks::maybe_panic(self.request.data);
        self.post(res);
    }

    /// Gives back a request the engine refused to start: it leaves the count and its ring
    /// slot, and no event is posted.
    pub(crate) fn unstarted(mut self) -> Request {
        self.settled = true;
        self.core.ring.unreserve_slot();
        self.core.lifecycle.exit();
        std::mem::replace(&mut self.request, Request::noop())
    }

    fn post(&mut self, res: i64) {
        if let Some(eventfd) = self.post_event(res) {
            fd::eventfd_signal(eventfd.as_fd(), 1);
        }
        self.count_out();
    }

    /// Posts the request's event into the ring and lets go of the request's parts but its
    /// eventfd, which it returns for the caller to signal; `count_out` is still to come.
    fn post_event(&mut self, res: i64) -> Option<Arc<File>> {
        self.settled = true;
        let event = IoEvent {
            data: self.request.data,
            obj: self.request.key(),
            res,
            res2: 0,
        };
        let Request {
            buffers,
            resfd,
            file,
            ..
        } = std::mem::replace(&mut self.request, Request::noop());
        let core = &self.core;
        if res == -(libc::ECANCELED as i64) {
            core.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        // Let go of the file before the request counts out: after destroy, no descriptor
        // of the caller's is held open by the context either.
        drop(file);
        if !core.ring.post(event, buffers.into_owned()) {
            core.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        core.counters.completed.fetch_add(1, Ordering::Relaxed);
        resfd
    }

    /// Wakes the context's waiters and counts the request out, after its event was posted
    /// and its eventfd signalled (SPEC: RESFD ordering: the event is visible before the
    /// eventfd moves; destroy returns only after both).
    fn count_out(&self) {
        self.core.doorbell.ring();
        self.core.lifecycle.exit();
    }
}

/// How many requests a [`Completions`] holds before it wakes their program.
const COMPLETIONS: usize = 32;

/// Requests completed together, as a taker of many completions at once (a batch of CQEs,
/// of kernel events) completes them: each event is posted at once, and what wakes the
/// program is done once for the batch after: each eventfd is signalled once with the count
/// of its requests (a program that signals one eventfd with every request, as QEMU does,
/// paid a `write` per request), each context's doorbell rung once. The requests count out
/// last, so destroy still returns only after their eventfds moved.
pub(crate) struct Completions {
    /// Requests whose event is posted and that are still to count out, with the eventfd
    /// each is still to signal.
    posted: [Option<(Inflight, Option<Arc<File>>)>; COMPLETIONS],
    len: usize,
}

impl Completions {
    pub(crate) fn new() -> Completions {
        Completions {
            posted: [const { None }; COMPLETIONS],
            len: 0,
        }
    }

    /// Posts the request's event; its program is woken at `flush` (or when the batch is
    /// full, or dropped).
    pub(crate) fn complete(&mut self, mut request: Inflight, res: i64) {
        if self.len == COMPLETIONS {
            self.flush();
        }
        #[cfg(test)]
        hooks::maybe_panic(request.request.data);
        let eventfd = request.post_event(res);
        self.posted[self.len] = Some((request, eventfd));
        self.len += 1;
    }

    /// Signals the eventfds of the requests posted, rings their doorbells and counts them
    /// out.
    pub(crate) fn flush(&mut self) {
        let posted = &mut self.posted[..self.len];
        self.len = 0;
        for at in 0..posted.len() {
            let Some(eventfd) = posted[at].as_mut().and_then(|(_, eventfd)| eventfd.take()) else {
                continue;
            };
            let mut count = 1;
            for (_, same) in posted[at + 1..].iter_mut().flatten() {
                if same.as_ref().is_some_and(|e| Arc::ptr_eq(e, &eventfd)) {
                    *same = None;
                    count += 1;
                }
            }
            fd::eventfd_signal(eventfd.as_fd(), count);
        }
        let mut rung: Option<&Arc<Core>> = None;
        for (request, _) in posted.iter().flatten() {
            if !rung.is_some_and(|core| Arc::ptr_eq(core, &request.core)) {
                request.core.doorbell.ring();
                rung = Some(&request.core);
            }
        }
        for (request, _) in posted.iter_mut().filter_map(Option::take) {
            request.core.lifecycle.exit();
        }
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if !self.settled {
            self.post(DROPPED);
        }
    }
}

/// A test-only fault: the completion of the request tagged with a chosen `data` panics
/// before it posts, as an engine bug in its completion path would.
#[cfg(test)]
pub(crate) mod hooks {
    use std::sync::Mutex;

    use crate::sync::lock;

    /// The `data` tags whose next completion panics (tests running at once arm their own).
    static PANIC_ON: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    /// Makes the next completion of a request tagged `data` panic.
    pub(crate) fn panic_on_completion_of(data: u64) {
        lock(&PANIC_ON).push(data);
    }

    pub(super) fn maybe_panic(data: u64) {
        let armed = {
            let mut tags = lock(&PANIC_ON);
            let at = tags.iter().position(|&tag| tag == data);
            at.map(|at| tags.swap_remove(at)).is_some()
        };
        if armed {
            panic!("injected panic in the completion of request {data}");
        }
    }
}
