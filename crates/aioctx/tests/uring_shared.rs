//! io_uring contexts share the process's few instances: cancel and destroy on a shared
//! instance touch exactly their own context's requests, and what more contexts put on one
//! instance than its queues hold (SQEs, CQEs) is neither dropped nor mixed up.
//!
//! Contexts are dealt to the instances in turn (one per CPU, at most four), so of more
//! than four contexts made in a row at least two share an instance, whatever other tests
//! of this binary make meanwhile.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Context, EngineKind, Request, RequestId, State};
use common::*;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const ECANCELED: i64 = -(libc::ECANCELED as i64);

/// More than twice the most instances a process makes.
const CONTEXTS: usize = 9;

/// Pipe reads never written: data = 1.
const PIPE_READ: u64 = 1;
/// O_DIRECT reads of the file: data = 2 + i.
const DIRECT_READS: u64 = 8;
const DIRECT_LEN: usize = 64 * 1024;

fn uring(depth: u32) -> Context {
    let ctx = Context::builder()
        .depth(depth)
        .engine(EngineKind::Uring)
        .build()
        .expect("io_uring context");
    assert_eq!(ctx.engine(), EngineKind::Uring);
    ctx
}

struct Loaded {
    ctx: Context,
    pipe_read: RequestId,
    pipe_read_end: Arc<File>,
    pipe_write_end: File,
}

/// Held by each test of this binary: the descriptor and thread counts are the process's,
/// so another test opening pipes meanwhile would be counted as the contexts'.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .count()
}

/// The process's threads, but for io_uring's own io-wq workers (`iou-wrk-*`, `iou-sqp-*`):
/// the kernel starts and ends those for blocking work (O_DIRECT reads may take them) per
/// submitting thread, whatever the contexts.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("list threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| !comm.starts_with("iou-"))
        .count()
}

/// A context with a pipe read that nobody writes and O_DIRECT reads in flight.
fn loaded(direct: &Arc<File>) -> Loaded {
    let ctx = uring(32);
    let (pipe_read_end, pipe_write_end) = pipe();
    let pipe_read = ctx
        .submit_one(Request::read(Arc::clone(&pipe_read_end), vec![0u8; 8], 0).data(PIPE_READ))
        .expect("submit pipe read");
    let mut reads: Vec<Request> = (0..DIRECT_READS)
        .map(|i| {
            let buf = AlignedBuf::page_aligned(DIRECT_LEN).expect("aligned buffer");
            Request::read(Arc::clone(direct), buf, i * DIRECT_LEN as u64).data(2 + i)
        })
        .collect();
    assert_eq!(
        ctx.submit(&mut reads).expect("submit direct reads").len(),
        DIRECT_READS as usize
    );
    Loaded {
        ctx,
        pipe_read,
        pipe_read_end,
        pipe_write_end,
    }
}

/// Two (or more) contexts on one ring, one destroyed with requests of both in flight: it
/// cancels and waits for its own only; the others' reads complete normally with the
/// file's bytes, their pipe reads stay in flight, and each can still be cancelled, once,
/// or completed by a write.
#[test]
fn destroy_on_a_shared_instance_touches_only_its_own_context() {
    let _alone = one_at_a_time();
    let file = temp_file(DIRECT_READS as usize * DIRECT_LEN);
    let direct = open_direct(&file);
    // The process-wide instances and reapers come with the first contexts.
    drop((0..CONTEXTS).map(|_| uring(4)).collect::<Vec<_>>());
    let (fds_before, threads_before) = (fd_count(), thread_count());
    let mut contexts: Vec<Loaded> = (0..CONTEXTS).map(|_| loaded(&direct)).collect();
    assert!(
        fd_count() <= fds_before + 2 * CONTEXTS,
        "{CONTEXTS} contexts (and a pipe each) share the instances: {} fds from {fds_before}",
        fd_count()
    );
    assert!(
        thread_count() <= threads_before + 4,
        "{CONTEXTS} contexts share the reapers: {} threads from {threads_before}",
        thread_count()
    );

    // Destroy the first with requests of every context in flight.
    let first = contexts.remove(0);
    first.ctx.destroy().expect("destroy");
    assert_eq!(first.ctx.state(), State::Dead);
    let stats = first.ctx.stats();
    assert_eq!(
        stats.completed,
        1 + DIRECT_READS,
        "destroy waited for its own"
    );
    assert!(
        stats.cancelled >= 1,
        "its pipe read was cancelled: {stats:?}"
    );
    // Its pipe read took nothing from its pipe.
    (&first.pipe_write_end).write_all(b"y").expect("write pipe");
    let mut byte = [0u8; 1];
    (&*first.pipe_read_end)
        .read_exact(&mut byte)
        .expect("read pipe");
    assert_eq!(&byte, b"y");

    for (number, other) in contexts.iter().enumerate() {
        let ctx = &other.ctx;
        // Its O_DIRECT reads complete normally, with the file's bytes.
        let mut done = Vec::new();
        while done.len() < DIRECT_READS as usize {
            let events = ctx
                .get_events(1, DIRECT_READS as usize, WAIT)
                .expect("get_events");
            assert!(!events.is_empty(), "context {number}: reads lost");
            done.extend(events);
        }
        assert_eq!(done.len(), DIRECT_READS as usize, "context {number}");
        done.sort_by_key(|e| e.data);
        for (i, event) in done.into_iter().enumerate() {
            assert_eq!(event.data, 2 + i as u64, "context {number}");
            assert_eq!(event.res, DIRECT_LEN as i64, "context {number}: read {i}");
            let buf: AlignedBuf = event.into_buf().expect("buffer back");
            let at = i * DIRECT_LEN;
            assert!(
                buf.iter().enumerate().all(|(j, &b)| b == pattern(at + j)),
                "context {number}: read {i} has the wrong bytes"
            );
        }
        // Its pipe read is still in flight, untouched by the other's destroy.
        assert_eq!(ctx.in_flight(), 1, "context {number}");
    }

    // Half of them get their pipe written: the read completes with the data. The others
    // cancel theirs: it is still cancellable, once.
    for (number, other) in contexts.iter_mut().enumerate() {
        let ctx = &other.ctx;
        if number % 2 == 0 {
            other
                .pipe_write_end
                .write_all(b"12345678")
                .expect("write pipe");
            let mut events = ctx.get_events(1, 1, WAIT).expect("get_events");
            assert_eq!((events[0].data, events[0].res), (PIPE_READ, 8));
            let buf: Vec<u8> = events
                .pop()
                .and_then(|e| e.into_buf())
                .expect("buffer back");
            assert_eq!(&buf[..], b"12345678");
        } else {
            ctx.cancel(other.pipe_read).expect("still cancellable");
            assert_eq!(
                ctx.cancel(other.pipe_read).unwrap_err().raw_os_error(),
                Some(libc::EINVAL),
                "answered once"
            );
            let events = ctx.get_events(1, 1, WAIT).expect("get_events");
            assert_eq!((events[0].data, events[0].res), (PIPE_READ, ECANCELED));
            // The cancelled read took nothing from its pipe.
            other.pipe_write_end.write_all(b"x").expect("write pipe");
            let mut byte = [0u8; 1];
            (&*other.pipe_read_end)
                .read_exact(&mut byte)
                .expect("read pipe");
            assert_eq!(&byte, b"x");
        }
    }
    for other in contexts {
        other.ctx.destroy().expect("destroy");
        let stats = other.ctx.stats();
        assert_eq!(stats.completed, 1 + DIRECT_READS, "each its own, once");
    }
}

/// Takes `want` events of `ctx` through get_events; every one must satisfy `check`.
fn reap_all(ctx: &Context, want: usize, check: impl Fn(&aioctx::Completion)) -> usize {
    let mut reaped = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reaped < want && Instant::now() < deadline {
        let events = ctx
            .get_events(1, want - reaped, Some(Duration::from_millis(100)))
            .expect("get_events");
        events.iter().for_each(&check);
        reaped += events.len();
    }
    reaped
}

/// Contexts whose polls, submitted in batches larger than an instance's submission queue
/// (1,024), all fire at once: more CQEs than an instance's completion queue holds (8,192)
/// come at the same time to the instances they share. Each context gets exactly its own
/// events, every one of them (the kernel's overflow is flushed, nothing dropped); a
/// context destroyed meanwhile with as many in flight cancels them all.
#[test]
fn polls_beyond_the_shared_queues_reach_their_own_contexts() {
    let _alone = one_at_a_time();
    const POLLS: usize = 4_000;
    let contexts: Vec<Context> = (0..CONTEXTS).map(|_| uring(POLLS as u32)).collect();
    let (read_end, mut write_end) = pipe();
    for (number, ctx) in contexts.iter().enumerate() {
        let mut batch: Vec<Request> = (0..POLLS)
            .map(|i| {
                Request::poll(Arc::clone(&read_end), libc::POLLIN as u16)
                    .data((number * POLLS + i) as u64)
            })
            .collect();
        assert_eq!(ctx.submit(&mut batch).expect("submit").len(), POLLS);
    }
    // One more context's polls wait on a pipe that is never written; it is destroyed
    // while the others' fire.
    let (idle_read_end, _idle_write_end) = pipe();
    let doomed = uring(POLLS as u32);
    let mut batch: Vec<Request> = (0..POLLS)
        .map(|i| Request::poll(Arc::clone(&idle_read_end), libc::POLLIN as u16).data(i as u64))
        .collect();
    assert_eq!(doomed.submit(&mut batch).expect("submit").len(), POLLS);
    for ctx in &contexts {
        assert_eq!(ctx.in_flight(), POLLS);
    }

    write_end.write_all(b"x").expect("write pipe");
    doomed.destroy().expect("destroy");
    let stats = doomed.stats();
    assert_eq!(
        (stats.completed, stats.cancelled),
        (POLLS as u64, POLLS as u64)
    );
    for (number, ctx) in contexts.iter().enumerate() {
        let mine = (number * POLLS) as u64..((number + 1) * POLLS) as u64;
        let reaped = reap_all(ctx, POLLS, |e| {
            assert!(mine.contains(&e.data), "context {number} got {}", e.data);
            assert!(e.res & i64::from(libc::POLLIN) != 0, "{e:?}");
        });
        assert_eq!(reaped, POLLS, "context {number}: every poll's event");
    }
}
