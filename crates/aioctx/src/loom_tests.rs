//! Model checks (loom) of the lifecycle: every interleaving of destroyers, completions,
//! submitters and get_events waiters. Run by `.ci/run` as
//! `RUSTFLAGS="--cfg aioctx_loom" cargo test -p aioctx --lib --release loom`.
//!
//! Destroy is the real `Lifecycle::destroy`; submitters take the steps `Context::submit`
//! takes (enter the gate, count in, start on the engine, leave the gate). "Caller memory"
//! is a loom `UnsafeCell` that a request writes before it counts itself out; a destroyer
//! reads it once destroy has returned. If destroy could return before the write, loom
//! reports the unsynchronised access (or the stale value); if it could wait forever, loom
//! reports the deadlock.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::doorbell::Doorbell;
use crate::lifecycle::{Lifecycle, State};
use crate::sync::model::lock;

/// A context's lifecycle and doorbell, the memory its requests write, and an engine stub
/// that holds every request it is given as a poll which never fires: only `cancel_all`
/// completes it.
struct Model {
    lifecycle: Lifecycle,
    doorbell: Doorbell,
    caller_memory: UnsafeCell<u32>,
    /// The engine's polls, each waiting for readiness that never comes.
    polls: Mutex<usize>,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            lifecycle: Lifecycle::new(),
            doorbell: Doorbell::new(),
            caller_memory: UnsafeCell::new(0),
            polls: Mutex::new(0),
        })
    }

    fn with_one_request_in_flight() -> Arc<Model> {
        let model = Model::new();
        assert!(model.lifecycle.enter_submit());
        model.lifecycle.enter();
        model.lifecycle.leave_submit();
        model
    }

    /// What `Context::submit` does with a poll: false if the context refused it.
    fn submit_poll(&self) -> bool {
        if !self.lifecycle.enter_submit() {
            return false;
        }
        self.lifecycle.enter();
        // Here the real submit checks the fd: a destroyer may kill meanwhile.
        *lock(&self.polls) += 1;
        self.lifecycle.leave_submit();
        true
    }

    /// The engine's `cancel_all`: completes every held poll with `-ECANCELED`.
    fn cancel_all(&self) {
        let cancelled = std::mem::take(&mut *lock(&self.polls));
        for _ in 0..cancelled {
            self.complete();
        }
    }

    /// What an engine does when a request finishes: write the memory, count out.
    fn complete(&self) {
        self.caller_memory.with_mut(|p| write(p, 1));
        self.lifecycle.exit();
    }

    /// Destroy; true for the first destroyer.
    fn destroy(&self) -> bool {
        let first = self.lifecycle.destroy(&self.doorbell, || self.cancel_all());
        assert_eq!(self.lifecycle.state(), State::Dead);
        first
    }

    /// What the caller does after destroy: reuse the memory.
    fn reused_memory(&self) -> u32 {
        self.caller_memory.with(|p| read(p))
    }
}

/// Explores the interleavings of `f` with at most four preemptions each (loom's advice: bugs
/// of this kind show within two or three; unbounded, three threads with four locks between
/// them are beyond a test run).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(f);
}

// loom's UnsafeCell hands out raw pointers; these two helpers are the only accesses and
// loom checks that they never overlap.
fn write(p: *mut u32, value: u32) {
    // SAFETY: loom's with_mut grants exclusive access for the closure's duration.
    unsafe { *p = value }
}

fn read(p: *const u32) -> u32 {
    // SAFETY: loom's with grants shared access for the closure's duration.
    unsafe { *p }
}

#[test]
fn loom_destroy_waits_for_the_last_completion() {
    model(|| {
        let model = Model::with_one_request_in_flight();
        let completer = {
            let model = Arc::clone(&model);
            thread::spawn(move || model.complete())
        };
        assert!(model.destroy());
        assert_eq!(
            model.reused_memory(),
            1,
            "destroy returned before the write"
        );
        completer.join().unwrap();
    });
}

#[test]
fn loom_two_destroyers_both_wait_and_one_is_first() {
    model(|| {
        let model = Model::with_one_request_in_flight();
        let firsts = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (model, firsts) = (Arc::clone(&model), Arc::clone(&firsts));
                thread::spawn(move || {
                    if model.destroy() {
                        firsts.fetch_add(1, Ordering::Relaxed);
                    }
                    assert_eq!(
                        model.reused_memory(),
                        1,
                        "destroy returned before the write"
                    );
                })
            })
            .collect();
        model.complete();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(firsts.load(Ordering::Relaxed), 1);
    });
}

/// The submitter entered before the kill may reach the engine after it: the gate makes
/// destroy's cancel come after it, so its never-firing poll is cancelled and destroy
/// returns (on the old order, cancel first and no gate, loom finds the deadlock).
#[test]
fn loom_submit_racing_destroy_is_refused_or_cancelled() {
    model(|| {
        let model = Model::new();
        let submitter = {
            let model = Arc::clone(&model);
            thread::spawn(move || model.submit_poll())
        };
        assert!(model.destroy());
        let accepted = submitter.join().unwrap();
        assert_eq!(*lock(&model.polls), 0, "a poll outlived destroy");
        assert_eq!(model.reused_memory(), u32::from(accepted));
    });
}

#[test]
fn loom_two_get_events_waiters_leave_when_destroy_begins() {
    model(|| {
        let model = Model::new();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let model = Arc::clone(&model);
                thread::spawn(move || {
                    while model.lifecycle.is_live() {
                        model
                            .doorbell
                            .wait(|| !model.lifecycle.is_live(), None, None, None)
                            .unwrap();
                    }
                })
            })
            .collect();
        model.destroy();
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn loom_every_get_events_waiter_wakes_for_a_posted_event() {
    model(|| {
        let events = Arc::new(AtomicUsize::new(0));
        let doorbell = Arc::new(Doorbell::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (events, doorbell) = (Arc::clone(&events), Arc::clone(&doorbell));
                thread::spawn(move || {
                    while events.load(Ordering::Acquire) == 0 {
                        doorbell
                            .wait(|| events.load(Ordering::Acquire) > 0, None, None, None)
                            .unwrap();
                    }
                })
            })
            .collect();
        events.store(1, Ordering::Release);
        doorbell.ring();
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}
