//! Model checks (loom) of the lifecycle: every interleaving of destroyers, completions,
//! submitters and get_events waiters. Run by `.ci/run` as
//! `RUSTFLAGS="--cfg loom" cargo test -p aioctx --lib --release loom`.
//!
//! "Caller memory" is a loom `UnsafeCell` that a request writes before it counts itself
//! out; a destroyer reads it once destroy has waited. If destroy could return before the
//! write, loom reports the unsynchronised access (or the stale value).

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::doorbell::Doorbell;
use crate::lifecycle::{Lifecycle, State};

/// A context's lifecycle plus the memory one request of it writes.
struct Model {
    lifecycle: Lifecycle,
    caller_memory: UnsafeCell<u32>,
}

impl Model {
    fn with_one_request_in_flight() -> Arc<Model> {
        let model = Arc::new(Model {
            lifecycle: Lifecycle::new(),
            caller_memory: UnsafeCell::new(0),
        });
        assert!(model.lifecycle.enter());
        model
    }

    /// What an engine does when the request finishes: write the memory, count out.
    fn complete(&self) {
        self.caller_memory.with_mut(|p| unsafe_free_write(p, 1));
        self.lifecycle.exit();
    }

    /// What the caller does after destroy: reuse the memory.
    fn destroy_then_reuse(&self) -> bool {
        let first = self.lifecycle.kill();
        self.lifecycle.wait_requests_done();
        assert_eq!(self.lifecycle.state(), State::Dead);
        self.caller_memory
            .with(|p| assert_eq!(read(p), 1, "destroy returned before the request wrote"));
        first
    }
}

// loom's UnsafeCell hands out raw pointers; these two helpers are the only accesses and
// loom checks that they never overlap.
fn unsafe_free_write(p: *mut u32, value: u32) {
    // SAFETY: loom's with_mut grants exclusive access for the closure's duration.
    unsafe { *p = value }
}

fn read(p: *const u32) -> u32 {
    // SAFETY: loom's with grants shared access for the closure's duration.
    unsafe { *p }
}

#[test]
fn loom_destroy_waits_for_the_last_completion() {
    loom::model(|| {
        let model = Model::with_one_request_in_flight();
        let completer = {
            let model = Arc::clone(&model);
            thread::spawn(move || model.complete())
        };
        assert!(model.destroy_then_reuse());
        completer.join().unwrap();
    });
}

#[test]
fn loom_two_destroyers_both_wait_and_one_is_first() {
    loom::model(|| {
        let model = Model::with_one_request_in_flight();
        let firsts = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (model, firsts) = (Arc::clone(&model), Arc::clone(&firsts));
                thread::spawn(move || {
                    if model.destroy_then_reuse() {
                        firsts.fetch_add(1, Ordering::Relaxed);
                    }
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

#[test]
fn loom_submit_racing_destroy_is_refused_or_waited_for() {
    loom::model(|| {
        let model = Arc::new(Model {
            lifecycle: Lifecycle::new(),
            caller_memory: UnsafeCell::new(1),
        });
        let submitter = {
            let model = Arc::clone(&model);
            thread::spawn(move || {
                if model.lifecycle.enter() {
                    model.complete();
                }
            })
        };
        assert!(model.destroy_then_reuse());
        submitter.join().unwrap();
    });
}

#[test]
fn loom_get_events_waiter_leaves_when_destroy_begins() {
    loom::model(|| {
        let lifecycle = Arc::new(Lifecycle::new());
        let doorbell = Arc::new(Doorbell::new());
        let waiter = {
            let (lifecycle, doorbell) = (Arc::clone(&lifecycle), Arc::clone(&doorbell));
            thread::spawn(move || {
                while lifecycle.is_live() {
                    doorbell
                        .wait(|| !lifecycle.is_live(), None, None, None)
                        .unwrap();
                }
            })
        };
        lifecycle.kill();
        doorbell.ring();
        waiter.join().unwrap();
    });
}

#[test]
fn loom_get_events_waiter_wakes_for_a_posted_event() {
    loom::model(|| {
        let events = Arc::new(AtomicUsize::new(0));
        let doorbell = Arc::new(Doorbell::new());
        let waiter = {
            let (events, doorbell) = (Arc::clone(&events), Arc::clone(&doorbell));
            thread::spawn(move || {
                while events.load(Ordering::Acquire) == 0 {
                    doorbell
                        .wait(|| events.load(Ordering::Acquire) > 0, None, None, None)
                        .unwrap();
                }
            })
        };
        events.store(1, Ordering::Release);
        doorbell.ring();
        waiter.join().unwrap();
    });
}
