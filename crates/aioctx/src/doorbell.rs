//! How get_events waiters sleep and completions wake them.
//!
//! A waiter registers, re-checks its condition, and sleeps on the context's eventfd; a
//! completion that finds waiters registered signals the eventfd. Sleeping in `ppoll` (not a
//! futex) is what lets `io_pgetevents` install its signal mask atomically and lets a signal
//! interrupt the wait with `EINTR`. Under `--cfg loom` a counter and condvar stand in for the
//! eventfd so the protocol itself can be model-checked.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::sync::model::{fence, AtomicUsize};

pub(crate) struct Doorbell {
    /// Threads between `register` and the end of their sleep. Waiters write it; completions
    /// read it to skip the eventfd write when nobody sleeps.
    waiters: AtomicUsize,
    bell: Bell,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Rung, or the condition already held.
    Rung,
    TimedOut,
}

impl Doorbell {
    pub(crate) fn new() -> Doorbell {
        Doorbell {
            waiters: AtomicUsize::new(0),
            bell: Bell::new(),
        }
    }

    /// Wakes every sleeper, if there is one. Callers publish their state change (an event in
    /// the ring, the dying bit) before ringing; the fence pairs with the one in `wait` so
    /// that either the waiter sees the change or we see the waiter.
    pub(crate) fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.bell.ring();
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
        self.bell.prepare()?;
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let woken = if ready() {
            Ok(Woken::Rung)
        } else {
            self.bell.sleep(timeout, sigmask, also)
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        woken
    }
}

/// The eventfd, made by the first waiter: most contexts are never waited on (programs that
/// reap the ring themselves, batch tools), and need no descriptor for it.
#[cfg(not(loom))]
struct Bell(std::sync::OnceLock<std::fs::File>);

#[cfg(not(loom))]
impl Bell {
    fn new() -> Bell {
        Bell(std::sync::OnceLock::new())
    }

    /// Makes sure the eventfd exists; called before a waiter registers.
    fn prepare(&self) -> io::Result<()> {
        if self.0.get().is_none() {
            // A racing waiter may set it first; then ours is simply closed.
            let _ = self.0.set(crate::sys::fd::eventfd()?);
        }
        Ok(())
    }

    fn ring(&self) {
        use std::os::fd::AsFd;
        // Waiters make the eventfd before they register, so a registered waiter's is here.
        if let Some(eventfd) = self.0.get() {
            crate::sys::fd::eventfd_signal(eventfd.as_fd(), 1);
        }
    }

    fn sleep(
        &self,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
        also: Option<BorrowedFd<'_>>,
    ) -> io::Result<Woken> {
        use crate::sys::fd::{eventfd_drain, wait_readable, Wait};
        use std::os::fd::AsFd;
        let eventfd = self.0.get().expect("prepare made the eventfd").as_fd();
        let waited = wait_readable(eventfd, also, timeout, sigmask)?;
        // Draining may swallow a ring meant for another sleeper; reapers that leave events
        // behind ring again (see Context::reap), so no event is left without a wake-up.
        eventfd_drain(eventfd);
        Ok(match waited {
            Wait::Ready => Woken::Rung,
            Wait::TimedOut => Woken::TimedOut,
        })
    }
}

#[cfg(loom)]
struct Bell {
    rung: loom::sync::Mutex<bool>,
    cv: loom::sync::Condvar,
}

#[cfg(loom)]
impl Bell {
    fn new() -> Bell {
        Bell {
            rung: loom::sync::Mutex::new(false),
            cv: loom::sync::Condvar::new(),
        }
    }

    fn prepare(&self) -> io::Result<()> {
        Ok(())
    }

    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn sleep(
        &self,
        _timeout: Option<Duration>,
        _sigmask: Option<u64>,
        _also: Option<BorrowedFd<'_>>,
    ) -> io::Result<Woken> {
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            rung = self.cv.wait(rung).unwrap();
        }
        *rung = false;
        Ok(Woken::Rung)
    }
}
