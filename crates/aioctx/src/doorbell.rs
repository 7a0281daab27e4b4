//! How get_events waiters sleep and completions wake them.
//!
//! Each sleeping thread sleeps on a bell of its own (an eventfd made once per thread, not
//! per context: a context costs no descriptor). A waiter puts its bell in the context's
//! list, re-checks its condition, and sleeps; `ring` signals every bell in the list, so a
//! posted event and a destroy wake all the threads waiting, not the first one alone.
//! Sleeping in `ppoll` (not a futex) is what lets `io_pgetevents` install its signal mask
//! atomically and lets a signal interrupt the wait with `EINTR`. Under `--cfg aioctx_loom` a flag
//! and condvar per waiter stand in for the eventfd, so the protocol itself can be
//! model-checked.

// Pure logic over the sync primitives: the raw edges live in `sys/`.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::sync::model::{fence, lock, AtomicUsize, Mutex};

pub(crate) struct Doorbell {
    /// How many bells are in `sleepers`. Waiters write it; completions read it to skip the
    /// lock when nobody waits.
    waiters: AtomicUsize,
    /// The bells of the threads between `wait`'s registration and the end of their sleep.
    sleepers: Mutex<Vec<Bell>>,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Rung, or the condition already held (or a stale ring: callers re-check).
    Rung,
    /// The timeout passed (never under loom, whose model of the wait has none).
    #[cfg_attr(aioctx_loom, allow(dead_code))]
    TimedOut,
}

impl Doorbell {
    pub(crate) fn new() -> Doorbell {
        Doorbell {
            waiters: AtomicUsize::new(0),
            sleepers: Mutex::new(Vec::new()),
        }
    }

    /// Wakes every registered waiter. Callers publish their state change (an event in the
    /// ring, the dying bit) before ringing; the fence pairs with the one in `wait` so that
    /// either the waiter sees the change or we see the waiter.
    pub(crate) fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Acquire) > 0 {
            for bell in lock(&self.sleepers).iter() {
                bell.ring();
            }
        }
    }

    /// Sleeps until rung, `also` is readable, or `timeout` passes, unless `ready()` already
    /// holds once this thread is registered. `sigmask` is installed for the sleep (see
    /// module docs).
    pub(crate) fn wait(
        &self,
        ready: impl Fn() -> bool,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
        also: Option<BorrowedFd<'_>>,
    ) -> io::Result<Woken> {
        let bell = Bell::this_thread()?;
        lock(&self.sleepers).push(bell.clone());
        // Release: a ringer that sees the count also sees the bell in the list.
        self.waiters.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        let woken = if ready() {
            Ok(Woken::Rung)
        } else {
            bell.sleep(timeout, sigmask, also)
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        let mut sleepers = lock(&self.sleepers);
        if let Some(at) = sleepers.iter().position(|b| b.is(&bell)) {
            sleepers.swap_remove(at);
        }
        woken
    }
}

/// A thread's eventfd, made the first time the thread waits (and again in a forked child,
/// whose inherited copy would share its counter with the parent's thread).
#[cfg(not(aioctx_loom))]
#[derive(Clone)]
struct Bell(std::sync::Arc<std::fs::File>);

#[cfg(not(aioctx_loom))]
impl Bell {
    fn this_thread() -> io::Result<Bell> {
        use std::cell::RefCell;
        thread_local! {
            static BELL: RefCell<Option<(u32, Bell)>> = const { RefCell::new(None) };
        }
        let pid = crate::sys::fork::pid() as u32;
        // Not available only while the thread's locals are being torn down.
        let unavailable = |_| io::Error::from_raw_os_error(libc::EAGAIN);
        BELL.try_with(|cell| {
            let mut cell = cell.try_borrow_mut().ok();
            match cell.as_deref() {
                Some(Some((made_in, bell))) if *made_in == pid => Ok(bell.clone()),
                _ => {
                    let bell = Bell(std::sync::Arc::new(crate::sys::fd::eventfd()?));
                    // Re-entered (a signal handler waiting inside a wait): not cached.
                    if let Some(cell) = cell.as_deref_mut() {
                        *cell = Some((pid, bell.clone()));
                    }
                    Ok(bell)
                }
            }
        })
        .map_err(unavailable)?
    }

    fn is(&self, other: &Bell) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }

    fn ring(&self) {
        use std::os::fd::AsFd;
        crate::sys::fd::eventfd_signal(self.0.as_fd(), 1);
    }

    fn sleep(
        &self,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
        also: Option<BorrowedFd<'_>>,
    ) -> io::Result<Woken> {
        use crate::sys::fd::{eventfd_drain, wait_readable, Wait};
        use std::os::fd::AsFd;
        let eventfd = self.0.as_fd();
        let waited = wait_readable(eventfd, also, timeout, sigmask)?;
        // Only this thread sleeps on this eventfd: draining swallows nobody else's ring.
        eventfd_drain(eventfd);
        Ok(match waited {
            Wait::Ready => Woken::Rung,
            Wait::TimedOut => Woken::TimedOut,
        })
    }
}

/// A waiter's bell under loom: a flag and a condvar, one per wait.
#[cfg(aioctx_loom)]
#[derive(Clone)]
struct Bell(loom::sync::Arc<(loom::sync::Mutex<bool>, loom::sync::Condvar)>);

#[cfg(aioctx_loom)]
impl Bell {
    fn this_thread() -> io::Result<Bell> {
        Ok(Bell(loom::sync::Arc::new((
            loom::sync::Mutex::new(false),
            loom::sync::Condvar::new(),
        ))))
    }

    fn is(&self, other: &Bell) -> bool {
        loom::sync::Arc::ptr_eq(&self.0, &other.0)
    }

    fn ring(&self) {
        *lock(&self.0 .0) = true;
        self.0 .1.notify_all();
    }

    fn sleep(
        &self,
        _timeout: Option<Duration>,
        _sigmask: Option<u64>,
        _also: Option<BorrowedFd<'_>>,
    ) -> io::Result<Woken> {
        let mut rung = lock(&self.0 .0);
        while !*rung {
            rung = crate::sync::model::wait(&self.0 .1, rung);
        }
        *rung = false;
        Ok(Woken::Rung)
    }
}
