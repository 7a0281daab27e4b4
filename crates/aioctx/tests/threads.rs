//! The thread-pool engine's own promises: destroy waits for requests a worker is running
//! (they cannot be stopped), and queued requests can be cancelled.

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
    std::env::set_var("AIOCTX_WORKERS", "4");
    (
        guard,
        Context::with_engine(nr, EngineKind::Threads).unwrap(),
    )
}

fn submit_pipe_reads(ctx: &Context, count: usize, mem: &Arc<SharedMem>) -> std::fs::File {
    let (r, w) = pipe();
    for i in 0..count {
        let request = Request::read_shared(r.clone(), mem, i * 16..(i + 1) * 16, 0).unwrap();
        ctx.submit_one(request.data(i as u64)).unwrap();
    }
    w
}

#[test]
fn destroy_waits_for_reads_blocked_on_a_pipe() {
    let (_one_at_a_time, ctx) = small_pool_context(128);
    let mem = Arc::new(SharedMem::map(64 * 16).unwrap());
    let writer = submit_pipe_reads(&ctx, 64, &mem);
    // Let the four workers take their reads and block in them.
    std::thread::sleep(Duration::from_millis(100));
    let released_at = Mutex::new(None);
    let returned_at = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            *released_at.lock().unwrap() = Some(Instant::now());
            drop(writer);
        });
        ctx.destroy().unwrap();
        Instant::now()
    });
    let released_at = released_at.lock().unwrap().expect("writer ran");
    assert!(
        returned_at >= released_at,
        "destroy returned before the blocked reads were released"
    );
    assert_eq!(ctx.in_flight(), 0);
    assert_eq!(ctx.stats().completed, 64);
    assert_eq!(
        ctx.stats().cancelled,
        60,
        "four reads ran; the queued rest were cancelled"
    );
}

#[test]
fn waiter_gets_einval_while_destroy_still_waits() {
    let (_one_at_a_time, ctx) = small_pool_context(16);
    let mem = Arc::new(SharedMem::map(2 * 16).unwrap());
    let writer = submit_pipe_reads(&ctx, 2, &mem);
    std::thread::sleep(Duration::from_millis(100));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| ctx.get_events(1, 1, None));
        let destroyer = s.spawn(|| ctx.destroy());
        let waited = waiter.join().unwrap();
        assert_eq!(errno_of(&waited.unwrap_err()), libc::EINVAL);
        assert!(
            !destroyer.is_finished(),
            "destroy waits for the blocked reads"
        );
        drop(writer);
        destroyer.join().unwrap().unwrap();
    });
}

#[test]
fn queued_read_is_cancelled() {
    let (_one_at_a_time, ctx) = small_pool_context(16);
    let mem = Arc::new(SharedMem::map(6 * 16).unwrap());
    let writer = submit_pipe_reads(&ctx, 6, &mem);
    std::thread::sleep(Duration::from_millis(50));
    ctx.cancel(5)
        .expect("the last read is still queued behind four blocked workers");
    let events = ctx.get_events(1, 1, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        (events[0].data, events[0].res),
        (5, -(libc::ECANCELED as i64))
    );
    drop(writer);
}

/// The pool serves contexts in turn: one request of a context that arrives behind a long
/// queue of another's runs after at most a round of the others, not after all of them.
#[test]
fn pool_serves_contexts_in_turn() {
    let (_one_at_a_time, busy) = small_pool_context(64);
    let quiet = Context::with_engine(8, EngineKind::Threads).unwrap();
    let file = temp_file(64 * 4096);
    let direct = open_direct(&file);
    for i in 0..64u64 {
        let buf = aioctx::AlignedBuf::page_aligned(4096).unwrap();
        busy.submit_one(Request::read(direct.clone(), buf, i * 4096))
            .unwrap();
    }
    let buf = aioctx::AlignedBuf::page_aligned(4096).unwrap();
    quiet.submit_one(Request::read(direct, buf, 0)).unwrap();
    assert_eq!(
        quiet
            .get_events(1, 1, Some(Duration::from_secs(10)))
            .unwrap()
            .len(),
        1
    );
    let busy_done = busy.stats().completed;
    assert!(
        busy_done < 32,
        "the quiet context waited for {busy_done} of the busy one's 64 reads"
    );
}
