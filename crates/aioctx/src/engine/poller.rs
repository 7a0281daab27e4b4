//! One thread for the whole process that waits for `POLL` requests to become ready, so
//! that a poll which never fires holds no worker and can always be cancelled.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, OnceLock};

use super::complete_cancelled;
use crate::core::{Core, Inflight};
use std::sync::{Mutex, MutexGuard};

use crate::sync::lock;
use crate::sys::fd;

pub(crate) struct Poller {
    waiting: Mutex<Waiting>,
    /// Rung when the waiting set changes, so the poll thread rebuilds its fd array.
    wake: File,
}

#[derive(Default)]
struct Waiting {
    next_id: u64,
    polls: Vec<(u64, Inflight)>,
    /// Whether this process has a poll thread (a forked child starts without one).
    thread_running: bool,
}

/// The process's poller; its thread starts with the first poll.
pub(crate) fn poller() -> io::Result<&'static Poller> {
    static POLLER: OnceLock<io::Result<&'static Poller>> = OnceLock::new();
    POLLER
        .get_or_init(|| {
            let poller: &'static Poller = Box::leak(Box::new(Poller {
                waiting: Mutex::new(Waiting::default()),
                wake: fd::eventfd()?,
            }));
            // SAFETY: the handlers are plain functions that live as long as the process.
            unsafe {
                libc::pthread_atfork(
                    Some(poller_before_fork),
                    Some(poller_after_fork_in_parent),
                    Some(poller_after_fork_in_child),
                )
            };
            Ok(poller)
        })
        .as_ref()
        .copied()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

/// Completes with `-ECANCELED` the polls of `core` that `matches` selects (at most
/// `limit`); returns how many.
pub(crate) fn cancel_polls(core: &Arc<Core>, matches: impl Fn(u64) -> bool, limit: usize) -> usize {
    poller().map_or(0, |p| p.cancel(core, matches, limit))
}

/// Hands a POLL request to the process's poller.
pub(crate) fn start_poll(request: Inflight) -> Result<(), (Inflight, io::Error)> {
    match poller() {
        Ok(poller) => poller.add(request),
        Err(e) => Err((request, e)),
    }
}

thread_local! {
    /// The poller's lock, held by the forking thread across `fork()`, so that the child
    /// never inherits it locked by a thread that does not exist there.
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<MutexGuard<'static, Waiting>>> =
        const { std::cell::RefCell::new(None) };
}

extern "C" fn poller_before_fork() {
    if let Ok(poller) = poller() {
        let waiting = lock(&poller.waiting);
        HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(waiting));
    }
}

extern "C" fn poller_after_fork_in_parent() {
    HELD_ACROSS_FORK.with(|held| held.borrow_mut().take());
}

/// The child has no poll thread, and the polls belong to the parent's contexts, dead in
/// the child: they are leaked, never completed. The wake eventfd is shared with the
/// parent, so the child gets its own under the same number (else its poll thread would
/// swallow the parent's wake-ups).
extern "C" fn poller_after_fork_in_child() {
    HELD_ACROSS_FORK.with(|held| {
        if let Some(mut waiting) = held.borrow_mut().take() {
            std::mem::forget(std::mem::take(&mut waiting.polls));
            waiting.thread_running = false;
        }
    });
    if let Ok(poller) = poller() {
        let _ = fd::replace_with_new_eventfd(poller.wake.as_fd());
    }
}

impl Poller {
    /// Waits for the request's file to become ready for its events; fails only if the poll
    /// thread cannot be started.
    pub(crate) fn add(&'static self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        let mut waiting = lock(&self.waiting);
        if !waiting.thread_running {
            if let Err(e) = std::thread::Builder::new()
                .name("aioctx-poller".into())
                .spawn(move || self.run())
            {
                return Err((request, e));
            }
            waiting.thread_running = true;
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        waiting.polls.push((id, request));
        drop(waiting);
        fd::eventfd_signal(self.wake.as_fd(), 1);
        Ok(())
    }

    /// Completes with `-ECANCELED` the polls of `core` that `matches` selects (at most
    /// `limit`); returns how many.
    pub(crate) fn cancel(
        &self,
        core: &Arc<Core>,
        matches: impl Fn(u64) -> bool,
        limit: usize,
    ) -> usize {
        let cancelled: Vec<Inflight> = {
            let mut waiting = lock(&self.waiting);
            let mut taken = Vec::new();
            let mut at = 0;
            while at < waiting.polls.len() && taken.len() < limit {
                let request = &waiting.polls[at].1;
                if request.belongs_to(core) && matches(request.request.key()) {
                    taken.push(waiting.polls.remove(at).1);
                } else {
                    at += 1;
                }
            }
            taken
        };
        let count = complete_cancelled(cancelled);
        if count > 0 {
            fd::eventfd_signal(self.wake.as_fd(), 1);
        }
        count
    }

    fn run(&self) {
        loop {
            // The files are cloned so that they stay open while we poll them, even if their
            // request is cancelled meanwhile; the next round lets go of them.
            let watched: Vec<(u64, Arc<File>, i16)> = lock(&self.waiting)
                .polls
                .iter()
                .filter_map(|(id, r)| {
                    let events = r.request.poll_mask() as i16;
                    r.request.file.clone().map(|f| (*id, f, events))
                })
                .collect();
            let mut pollfds: Vec<libc::pollfd> =
                std::iter::once((self.wake.as_raw_fd(), libc::POLLIN))
                    .chain(
                        watched
                            .iter()
                            .map(|(_, f, events)| (f.as_raw_fd(), *events)),
                    )
                    .map(|(fd, events)| libc::pollfd {
                        fd,
                        events,
                        revents: 0,
                    })
                    .collect();
            if fd::poll(&mut pollfds).is_err() {
                continue;
            }
            fd::eventfd_drain(self.wake.as_fd());
            let ready: Vec<(u64, i16)> = watched
                .iter()
                .zip(&pollfds[1..])
                .filter(|(_, p)| p.revents != 0)
                .map(|((id, _, events), p)| (*id, p.revents & events))
                .collect();
            self.complete_ready(&ready);
        }
    }

    fn complete_ready(&self, ready: &[(u64, i16)]) {
        if ready.is_empty() {
            return;
        }
        let done: Vec<(Inflight, i16)> = {
            let mut waiting = lock(&self.waiting);
            let mut done = Vec::new();
            for &(id, mask) in ready {
                if let Some(at) = waiting.polls.iter().position(|(i, _)| *i == id) {
                    done.push((waiting.polls.swap_remove(at).1, mask));
                }
            }
            done
        };
        for (request, mask) in done {
            request.complete(i64::from(mask as u16));
        }
    }
}
