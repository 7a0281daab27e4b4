//! io_uring contexts share the process's few instances: cancel and destroy on a shared
//! instance touch exactly their own context's requests.
//!
//! One test in its own binary (its own process), so that no other test makes contexts
//! meanwhile: contexts are dealt to instances in turn, so with more contexts than the
//! process may have instances (one per CPU, at most four), every instance holds two or more.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use aioctx::{AlignedBuf, Context, EngineKind, Request, State};
use common::*;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const ECANCELED: i64 = -(libc::ECANCELED as i64);

/// More than twice the most instances a process makes.
const CONTEXTS: usize = 9;

/// Pipe reads never written: data = 1.
const PIPE_READ: u64 = 1;
/// O_DIRECT reads of the file: data = 2 + i.
const DIRECT_READS: u64 = 8;

struct Loaded {
    ctx: Context,
    pipe_read_end: Arc<File>,
    pipe_write_end: File,
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .count()
}

/// A context with a pipe read that never completes and O_DIRECT reads in flight.
fn loaded(direct: &Arc<File>) -> Loaded {
    let ctx = Context::with_engine(32, EngineKind::Uring).expect("io_uring context");
    let (pipe_read_end, pipe_write_end) = pipe();
    ctx.submit_one(Request::read(Arc::clone(&pipe_read_end), vec![0u8; 8], 0).data(PIPE_READ))
        .expect("submit pipe read");
    for i in 0..DIRECT_READS {
        let read = Request::read(
            Arc::clone(direct),
            AlignedBuf::page_aligned(64 * 1024).expect("aligned buffer"),
            i * 64 * 1024,
        );
        ctx.submit_one(read.data(2 + i))
            .expect("submit direct read");
    }
    Loaded {
        ctx,
        pipe_read_end,
        pipe_write_end,
    }
}

#[test]
fn cancel_and_destroy_on_a_shared_instance_touch_only_their_own_context() {
    let file = temp_file(DIRECT_READS as usize * 64 * 1024);
    let direct = open_direct(&file);
    let fds_before = fd_count();
    let mut contexts: Vec<Loaded> = (0..CONTEXTS).map(|_| loaded(&direct)).collect();
    assert!(
        fd_count() <= fds_before + 2 * CONTEXTS + 4,
        "{CONTEXTS} contexts (and a pipe each) share a few instances: {} fds from {fds_before}",
        fd_count()
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

    for (number, other) in contexts.iter().enumerate() {
        let ctx = &other.ctx;
        // Its O_DIRECT reads complete normally, with the file's bytes.
        let mut done = ctx
            .get_events(DIRECT_READS as usize, DIRECT_READS as usize, WAIT)
            .expect("get_events");
        assert_eq!(done.len(), DIRECT_READS as usize, "context {number}");
        done.sort_by_key(|e| e.data);
        for (i, event) in done.into_iter().enumerate() {
            assert_eq!(event.data, 2 + i as u64, "context {number}");
            assert_eq!(event.res, 64 * 1024, "context {number}: read {i}");
            let buf = event.into_buf().expect("buffer back");
            let at = i * 64 * 1024;
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
            let buf = events
                .pop()
                .and_then(|e| e.into_buf())
                .expect("buffer back");
            assert_eq!(&buf[..], b"12345678");
        } else {
            ctx.cancel(PIPE_READ).expect("still cancellable");
            assert_eq!(
                ctx.cancel(PIPE_READ).unwrap_err().raw_os_error(),
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
        assert_eq!(ctx.in_flight(), 0, "context {number}");
    }
    for other in contexts {
        other.ctx.destroy().expect("destroy");
    }
}
