//! How the one reaper thread of a shared instance parks, naps and is woken.
//!
//! The reaper posts the completions nobody waits for (eventfd users, programs that read the
//! ring directly or stopped calling): it sleeps in `io_uring_enter`, woken by the next CQE.
//! While the program reaps through get_events itself (which takes the CQEs of every context
//! on the instance) and no request out signals an eventfd, it only naps a tick at a time,
//! so that it does not wake on the other CPU for every CQE, on the program's time; and
//! while nothing is out then, it parks on a condvar, woken by the submitter that pushes
//! the next SQE.
//!
//! The park/unpark protocol is model-checked under `--cfg aioctx_loom` (the tests below): a pushed
//! SQE always finds the reaper awake or wakes it (that an eventfd request always ends a nap
//! is checked in `engine/pace.rs`).

use std::sync::atomic::Ordering;

use super::instance::Instance;
use crate::sync::model::{fence, lock, wait, AtomicUsize, Condvar, Mutex};

/// What the reaper and the threads that push SQEs share to park and wake it.
pub(super) struct Parking {
    /// SQEs pushed whose CQE was not yet taken (requests and cancels, of every context).
    /// Incremented under the submission lock, decremented under the completion lock.
    pending: AtomicUsize,
    /// 1 while the reaper is parked (or about to be); written by the reaper under `lock`,
    /// read by pushers to skip the wake-up when it is not.
    parked: AtomicUsize,
    /// Orders a wake-up against the reaper's last look before it sleeps.
    lock: Mutex<()>,
    unpark: Condvar,
}

impl Parking {
    pub(super) fn new() -> Parking {
        Parking {
            pending: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            unpark: Condvar::new(),
        }
    }

    /// Counts an SQE pushed; `wake` after the enter that submits it.
    pub(super) fn pushed(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts CQEs taken, after the completion queue's new head was published.
    pub(super) fn taken(&self, cqes: usize) {
        if cqes > 0 {
            self.pending.fetch_sub(cqes, Ordering::Relaxed);
        }
    }

    /// Wakes the reaper if it is parked while SQEs are out. The fence pairs with the one in
    /// `park`: either the reaper sees the pending SQE or we see it parked.
    pub(super) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) == 1 && self.pending.load(Ordering::Relaxed) > 0 {
            let _parking = lock(&self.lock);
            self.unpark.notify_one();
        }
    }

    /// Returns once an SQE is out.
    pub(super) fn park(&self) {
        let mut parking = lock(&self.lock);
        loop {
            self.parked.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.pending.load(Ordering::Relaxed) > 0 {
                self.parked.store(0, Ordering::Relaxed);
                return;
            }
            parking = wait(&self.unpark, parking);
        }
    }
}

/// The reaper thread of `instance`: posts completions as they happen, for ever (an
/// instance lives as long as the process).
///
/// While the program does not reap itself, the reaper waits in the kernel even with
/// nothing out: the CQE of the next SQE wakes it there, so that the submitter need not
/// (a futex call and a wake-up on the other CPU per burst of requests, for a program that
/// waits on an eventfd and lets every burst complete before the next, as QEMU does). It
/// parks only before a nap, which it does not start with nothing out.
pub(super) fn run(instance: &'static Instance) {
    // Registers the ring with this thread while its number surely names it: whatever the
    // program closes later, the reaper still waits for CQEs and hands in SQEs.
    instance.enters_here();
    loop {
        if instance.pace.program_reaps() {
            instance.parking.park();
            instance.pace.nap();
            instance.take_all();
        } else {
            instance.wait_and_take_all();
        }
    }
}

#[cfg(all(test, aioctx_loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::thread;

    use super::Parking;

    /// What a thread that pushes an SQE does.
    fn push(parking: &Parking) {
        parking.pushed();
        parking.wake();
    }

    #[test]
    fn loom_parked_reaper_wakes_for_a_pushed_sqe() {
        loom::model(|| {
            let parking = Arc::new(Parking::new());
            let pusher = {
                let parking = Arc::clone(&parking);
                thread::spawn(move || push(&parking))
            };
            parking.park();
            pusher.join().unwrap();
        });
    }

    /// Two contexts on one instance push at once while the reaper takes the CQEs one by
    /// one: it never sleeps through an SQE of either. (Three threads: bounded to three
    /// preemptions, which keeps the run to seconds.)
    #[test]
    fn loom_two_contexts_pushing_never_leave_the_reaper_asleep() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let parking = Arc::new(Parking::new());
            let pushers: Vec<_> = (0..2)
                .map(|_| {
                    let parking = Arc::clone(&parking);
                    thread::spawn(move || push(&parking))
                })
                .collect();
            for _ in 0..2 {
                parking.park();
                parking.taken(1);
            }
            for pusher in pushers {
                pusher.join().unwrap();
            }
        });
    }

    /// A program thread that takes a CQE before the reaper gets to it leaves the reaper
    /// parked until the next SQE, never asleep past it.
    #[test]
    fn loom_cqe_taken_by_the_program_then_a_new_sqe_wakes_the_reaper() {
        loom::model(|| {
            let parking = Arc::new(Parking::new());
            push(&parking);
            let program = {
                let parking = Arc::clone(&parking);
                thread::spawn(move || {
                    parking.taken(1);
                    push(&parking);
                })
            };
            parking.park();
            program.join().unwrap();
            parking.park();
        });
    }
}
