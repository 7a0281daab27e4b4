//! The thread-pool engine's own promises: reads of a pipe wait without holding a worker
//! and destroy cancels them, queued requests can be cancelled, and the pool serves
//! contexts in turn.

mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aioctx::{Context, EngineKind, Request, SharedMem};
use common::*;

/// Every test here runs with a pool of four workers, so that a few blocked reads fill it,
/// and one at a time (the guard), so that no other test's reads hold those workers.
fn small_pool_context(nr: u32) -> (MutexGuard<'static, ()>, Context) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let ctx = Context::builder()
        .depth(nr)
        .engine(EngineKind::Threads)
        .workers(4)
        .build()
        .unwrap();
    (guard, ctx)
}

fn submit_pipe_reads(ctx: &Context, count: usize, mem: &Arc<SharedMem>) -> std::fs::File {
    let (r, w) = pipe();
    for i in 0..count {
        let request = Request::read_shared(r.clone(), mem, i * 16..(i + 1) * 16, 0).unwrap();
        ctx.submit_one(request.data(i as u64)).unwrap();
    }
    w
}

/// Reads of a pipe nobody writes wait in the poller, not in a worker: more of them than
/// there are workers leave the pool free for a file read, and destroy cancels them all.
#[test]
fn pipe_reads_hold_no_worker_and_destroy_cancels_them() {
    let (_one_at_a_time, ctx) = small_pool_context(128);
    let mem = Arc::new(SharedMem::map(64 * 16).unwrap());
    let _writer = submit_pipe_reads(&ctx, 64, &mem);
    let file = temp_file(4096);
    let direct = open_direct(&file);
    let buf = aioctx::AlignedBuf::page_aligned(4096).unwrap();
    ctx.submit_one(Request::read(direct, buf, 0).data(1000))
        .unwrap();
    let events = ctx.get_events(1, 1, Some(Duration::from_secs(20))).unwrap();
    assert_eq!((events[0].data, events[0].res), (1000, 4096));
    let started = Instant::now();
    ctx.destroy().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ctx.in_flight(), 0);
    assert_eq!(ctx.stats().completed, 65);
    assert_eq!(ctx.stats().cancelled, 64);
}

#[test]
fn waiter_gets_einval_when_destroy_cancels_pipe_reads() {
    let (_one_at_a_time, ctx) = small_pool_context(16);
    let mem = Arc::new(SharedMem::map(2 * 16).unwrap());
    let _writer = submit_pipe_reads(&ctx, 2, &mem);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| ctx.get_events(1, 1, None));
        std::thread::sleep(Duration::from_millis(50));
        ctx.destroy().unwrap();
        // SPEC §1: a waiter takes the events that are there (destroy's cancellations may
        // already be posted when it looks), or gets EINVAL if there are none.
        match waiter.join().unwrap() {
            Err(error) => assert_eq!(errno_of(&error), libc::EINVAL),
            Ok(events) => assert!(events.iter().all(|e| e.res == -(libc::ECANCELED as i64))),
        }
    });
    assert_eq!(ctx.stats().cancelled, 2);
}

#[test]
fn queued_read_is_cancelled() {
    let (_one_at_a_time, ctx) = small_pool_context(256);
    let file = temp_file(256 * 4096);
    let direct = open_direct(&file);
    let mut last = None;
    for i in 0..256u64 {
        let buf = aioctx::AlignedBuf::page_aligned(4096).unwrap();
        last = ctx
            .submit_one(Request::read(direct.clone(), buf, i * 4096).data(i))
            .ok();
    }
    ctx.cancel(last.expect("all 256 reads were accepted"))
        .expect("the last read is still queued behind 255 others and four workers");
    let mut events = Vec::new();
    while events.len() < 256 {
        events.extend(
            ctx.get_events(1, 256, Some(Duration::from_secs(20)))
                .unwrap(),
        );
    }
    let last = events.iter().find(|e| e.data == 255).unwrap();
    assert_eq!(last.res, -(libc::ECANCELED as i64));
}

/// The pool serves contexts in turn: one request of a context that arrives behind a long
/// queue of another's runs after at most a round of the others, not after all of them.
/// The busy queue is submitted as one batch (so it is long when the quiet read arrives,
/// however slow the machine), and the busy context's progress is counted from the quiet
/// read's submit to the moment its event is posted (a spin on the ring's `tail`, no sleep),
/// so a waiter's wake-up latency under load does not count.
#[test]
fn pool_serves_contexts_in_turn() {
    const READ: usize = 256 * 1024;
    const BUSY: u64 = 256;
    const WORKERS: u64 = 4;
    let (_one_at_a_time, busy) = small_pool_context(BUSY as u32);
    let quiet = Context::builder()
        .depth(8)
        .engine(EngineKind::Threads)
        .build()
        .unwrap();
    let file = temp_file(BUSY as usize * READ);
    let direct = open_direct(&file);
    let mut queue: Vec<Request> = (0..BUSY)
        .map(|i| {
            let buf = aioctx::AlignedBuf::page_aligned(READ).unwrap();
            Request::read(direct.clone(), buf, i * READ as u64)
        })
        .collect();
    assert_eq!(busy.submit(&mut queue).unwrap().len(), BUSY as usize);
    let buf = aioctx::AlignedBuf::page_aligned(READ).unwrap();
    let before = busy.stats().completed;
    quiet.submit_one(Request::read(direct, buf, 0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet.ring_header().tail == 0 {
        assert!(Instant::now() < deadline, "the quiet read never completed");
        std::hint::spin_loop();
    }
    let meanwhile = busy.stats().completed - before;
    assert!(
        before + meanwhile < BUSY && meanwhile <= 4 * WORKERS,
        "the quiet read waited for {meanwhile} of the busy context's reads ({before} done before it)"
    );
    let done = quiet
        .get_events(1, 1, Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(done[0].res, READ as i64);
}
