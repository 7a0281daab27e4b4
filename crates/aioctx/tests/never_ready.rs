//! SPEC §1 "Requests that would never finish are cancelled first": reads and writes of
//! pipes, FIFOs and sockets whose peer never comes, on every engine. Destroy cancels them
//! and returns promptly (also for a write already partly done), nothing touches their
//! memory or their file afterwards, and `cancel` of one answers `EINPROGRESS` (`Ok`) with
//! its event `-ECANCELED`.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use aioctx::{Context, EngineKind, Request, SharedMem};
use common::*;

/// "Promptly", generously: the machine is shared and loaded; a destroy that waits for a
/// peer waits forever, so any bound tells the two apart.
const PROMPTLY: Duration = Duration::from_secs(20);

/// More than any pipe or socket here holds, so a write of it never completes on its own.
const MORE_THAN_FITS: usize = 16 << 20;

fn ctx(engine: EngineKind) -> Context {
    Context::builder()
        .depth(64)
        .engine(engine)
        .build()
        .expect("context")
}

/// Destroys `ctx` on another thread; fails the test if destroy does not return promptly.
fn destroy_promptly(ctx: Context) -> Context {
    let (done, returned) = mpsc::channel();
    std::thread::spawn(move || {
        let result = ctx.destroy();
        let _ = done.send((ctx, result));
    });
    let (ctx, result) = returned
        .recv_timeout(PROMPTLY)
        .expect("destroy did not return: it waits for a peer that never comes");
    result.expect("destroy");
    assert_eq!(ctx.in_flight(), 0);
    ctx
}

fn socket_pair() -> (Arc<File>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (Arc::new(File::from(OwnedFd::from(ours))), theirs)
}

/// A FIFO as (read end, write end), already unlinked. The read end is opened read-write,
/// so that opening either end never waits for the other.
fn fifo() -> (Arc<File>, Arc<File>) {
    let path = std::env::temp_dir().join(format!(
        "aioctx-never-ready-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let read = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let write = OpenOptions::new().write(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (Arc::new(read), Arc::new(write))
}

/// Reads what is left in a pipe once every writer is gone: what was written, and proof
/// that nobody still holds its write end (else this never reaches EOF).
fn drain_to_eof(mut read: File) -> usize {
    let (done, drained) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = done.send(read.read_to_end(&mut all).map(|_| all.len()));
    });
    drained
        .recv_timeout(PROMPTLY)
        .expect("the pipe's write end is still held after destroy")
        .unwrap()
}

/// Reads of a file that never gets data: after destroy, data that arrives is left in the
/// file, and the memory the reads were given stays as it was.
fn reads_are_cancelled_and_let_go(engine: EngineKind, file: Arc<File>, mut feed: impl Write) {
    let ctx = ctx(engine);
    let mem = Arc::new(SharedMem::map(4 * 16).unwrap());
    for i in 0..4 {
        let read = Request::read_shared(Arc::clone(&file), &mem, i * 16..(i + 1) * 16, 0);
        ctx.submit_one(read.unwrap().data(i as u64)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let ctx = destroy_promptly(ctx);
    assert_eq!(ctx.stats().completed, 4);
    feed.write_all(b"late data").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        mem.words().iter().all(|w| w.load(Ordering::Relaxed) == 0),
        "a read ran after destroy"
    );
    let mut left = [0u8; 9];
    (&*file).read_exact(&mut left).unwrap();
    assert_eq!(&left, b"late data");
}

fn destroy_cancels_a_pipe_read_that_never_gets_data(engine: EngineKind) {
    let (read, write) = pipe();
    reads_are_cancelled_and_let_go(engine, read, write);
}

fn destroy_cancels_a_fifo_read_that_never_gets_data(engine: EngineKind) {
    let (read, write) = fifo();
    reads_are_cancelled_and_let_go(engine, read, &*write);
}

fn destroy_cancels_a_socket_read_that_never_gets_data(engine: EngineKind) {
    let (ours, theirs) = socket_pair();
    reads_are_cancelled_and_let_go(engine, ours, theirs);
}

/// A write bigger than the file holds, then one more behind it: destroy returns, and the
/// first's partial write is all that ever reached the file.
fn destroy_cancels_writes_to_a_full(engine: EngineKind, file: Arc<File>) -> Context {
    let ctx = ctx(engine);
    let big = Request::write(Arc::clone(&file), vec![1u8; MORE_THAN_FITS], 0);
    ctx.submit_one(big.data(1)).unwrap();
    let behind = Request::write(Arc::clone(&file), vec![2u8; 4096], 0);
    ctx.submit_one(behind.data(2)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    destroy_promptly(ctx)
}

fn destroy_cancels_a_write_to_a_full_pipe(engine: EngineKind) {
    let (read, write) = pipe();
    let ctx = destroy_cancels_writes_to_a_full(engine, Arc::new(write));
    assert_eq!(ctx.stats().completed, 2);
    let written = drain_to_eof(Arc::try_unwrap(read).unwrap());
    assert!(
        written > 0 && written < MORE_THAN_FITS,
        "{written} bytes written"
    );
}

fn destroy_cancels_a_write_to_a_full_fifo(engine: EngineKind) {
    let (_read, write) = fifo();
    destroy_cancels_writes_to_a_full(engine, write);
}

fn destroy_cancels_a_write_to_a_full_socket(engine: EngineKind) {
    let (ours, _theirs) = socket_pair();
    destroy_cancels_writes_to_a_full(engine, ours);
}

/// A write of more than the pipe holds, part of it already written when destroy comes:
/// destroy returns, and nothing more is written after it.
fn destroy_returns_with_a_write_partly_done(engine: EngineKind) {
    let (read, write) = pipe();
    let ctx = ctx(engine);
    let big = Request::write(Arc::new(write), vec![1u8; MORE_THAN_FITS], 0);
    ctx.submit_one(big.data(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // Room for more, so that the write is in the middle of its transfer when destroy runs.
    let mut first = vec![0u8; 8192];
    (&*read).read_exact(&mut first).unwrap();
    let ctx = destroy_promptly(ctx);
    assert_eq!(ctx.stats().completed, 1);
    let written = 8192 + drain_to_eof(Arc::try_unwrap(read).unwrap());
    assert!(written < MORE_THAN_FITS, "{written} bytes written");
}

/// The peer end of what `open` gives is declared after the context, so that a failing
/// check drops it first and the context's drop (destroy) cannot wait for it.
fn cancel_of_a_read_is_einprogress_then_ecanceled(
    engine: EngineKind,
    open: impl FnOnce() -> (Arc<File>, Box<dyn std::any::Any>),
) {
    let ctx = ctx(engine);
    let (read, _peer) = open();
    let id = ctx
        .submit_one(Request::read(read, vec![0u8; 16], 0).data(7))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    ctx.cancel(id).expect("a waiting pipe read is cancellable");
    let events = ctx.get_events(1, 1, Some(PROMPTLY)).unwrap();
    assert_eq!(
        (events[0].data, events[0].res),
        (7, -(libc::ECANCELED as i64))
    );
    assert_eq!(
        errno_of(&ctx.cancel(id).unwrap_err()),
        libc::EINVAL,
        "the request is gone"
    );
}

fn cancel_of_a_pipe_read_is_einprogress_then_ecanceled(engine: EngineKind) {
    cancel_of_a_read_is_einprogress_then_ecanceled(engine, || {
        let (read, write) = pipe();
        (read, Box::new(write))
    });
}

fn cancel_of_a_socket_read_is_einprogress_then_ecanceled(engine: EngineKind) {
    cancel_of_a_read_is_einprogress_then_ecanceled(engine, || {
        let (ours, theirs) = socket_pair();
        (ours, Box::new(theirs))
    });
}

fn cancel_of_a_write_to_a_full_pipe_is_einprogress_then_ecanceled(engine: EngineKind) {
    let ctx = ctx(engine);
    let (_read, write) = pipe();
    let write = Arc::new(write);
    let big = Request::write(Arc::clone(&write), vec![1u8; MORE_THAN_FITS], 0);
    ctx.submit_one(big.data(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let behind = Request::write(write, vec![2u8; 4096], 0);
    let behind = ctx.submit_one(behind.data(2)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    ctx.cancel(behind)
        .expect("a write waiting for room is cancellable");
    let mut events = Vec::new();
    while !events.iter().any(|e: &aioctx::Completion| e.data == 2) {
        events.extend(ctx.get_events(1, 2, Some(PROMPTLY)).unwrap());
    }
    let behind = events.iter().find(|e| e.data == 2).unwrap();
    assert_eq!(behind.res, -(libc::ECANCELED as i64));
}

// ---- process exit ----

/// Set in the child the exit test runs: how the child leaves (`return` or `exit`).
const CHILD_EXIT: &str = "AIOCTX_NEVER_READY_EXIT";

/// Submits a pipe read, a full-pipe write, a write partly done and a socket read that never
/// become ready, then leaves as `how` says: returning (the context is dropped, which is
/// destroy) or `exit` with the context live.
fn requests_that_never_finish_then_leave(engine: EngineKind, how: &str) {
    let (read, _write) = pipe();
    let (_read_end, write) = pipe();
    let (ours, _theirs) = socket_pair();
    // Declared last, dropped first: the peers are still there when the context goes.
    let ctx = ctx(engine);
    let write = Arc::new(write);
    ctx.submit_one(Request::read(read, vec![0u8; 16], 0))
        .unwrap();
    ctx.submit_one(Request::write(
        Arc::clone(&write),
        vec![1u8; MORE_THAN_FITS],
        0,
    ))
    .unwrap();
    ctx.submit_one(Request::write(write, vec![2u8; 16], 0))
        .unwrap();
    ctx.submit_one(Request::read(ours, vec![0u8; 16], 0))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    if how == "exit" {
        std::process::exit(0);
    }
}

/// Runs this test binary again as a child that does the above on `engine` and leaves
/// `how`; the child must exit, with success, promptly.
fn child_exits_promptly(engine: EngineKind, how: &str) {
    let test = format!(
        "{}::process_exits_promptly_with_requests_waiting",
        engine.name()
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test, "--test-threads=1"])
        .env(CHILD_EXIT, how)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < PROMPTLY {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the child ({how}) failed: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the child ({how}) did not exit: something waits for a peer that never comes");
}

fn process_exits_promptly_with_requests_waiting(engine: EngineKind) {
    match std::env::var(CHILD_EXIT) {
        Ok(how) => requests_that_never_finish_then_leave(engine, &how),
        Err(_) => {
            child_exits_promptly(engine, "return");
            child_exits_promptly(engine, "exit");
        }
    }
}

// ---- the threads and kaio engines: writes complete whole, cancellable between chunks ----
// (uring and sim complete a write to a pipe with the bytes that fit at once, as io_uring
// does; the simulator does not reopen FIFOs.)

fn cancel_of_a_fifo_read_is_einprogress_then_ecanceled(engine: EngineKind) {
    /// The read end is also a writer, so a failing check unblocks a stuck read with data.
    struct FeedOnDrop(Arc<File>);
    impl Drop for FeedOnDrop {
        fn drop(&mut self) {
            let _ = (&*self.0).write_all(b"x");
        }
    }
    cancel_of_a_read_is_einprogress_then_ecanceled(engine, || {
        let (read, write) = fifo();
        (read, Box::new(FeedOnDrop(write)))
    });
}

fn a_write_longer_than_the_pipe_completes_whole_once_drained(engine: EngineKind) {
    let (read, write) = pipe();
    let ctx = ctx(engine);
    let len = 1 << 20;
    ctx.submit_one(Request::write(Arc::new(write), vec![3u8; len], 0).data(1))
        .unwrap();
    let drainer = std::thread::spawn(move || {
        let mut all = Vec::new();
        (&*read).read_to_end(&mut all).unwrap();
        all
    });
    let events = ctx.get_events(1, 1, Some(PROMPTLY)).unwrap();
    assert_eq!(
        events[0].res, len as i64,
        "the whole write, as a blocking one"
    );
    ctx.destroy().unwrap();
    let all = drainer.join().unwrap();
    assert_eq!(all.len(), len);
    assert!(all.iter().all(|&b| b == 3));
}

/// A vectored write of more than the pipe holds goes on where each chunk stopped, also
/// in the middle of a buffer: the bytes arrive whole and in order.
fn a_vectored_write_resumes_where_it_stopped(engine: EngineKind) {
    let ctx = ctx(engine);
    let (read, write) = pipe();
    let parts: Vec<Vec<u8>> = (0..5u8)
        .map(|i| (0..100_000u32).map(|j| (j as u8) ^ i).collect())
        .collect();
    let expected: Vec<u8> = parts.concat();
    ctx.submit_one(Request::writev(Arc::new(write), parts, 0).data(1))
        .unwrap();
    let drainer = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut chunk = vec![0u8; 777];
        loop {
            match (&*read).read(&mut chunk).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let events = ctx.get_events(1, 1, Some(PROMPTLY)).unwrap();
    assert_eq!(events[0].res, expected.len() as i64);
    ctx.destroy().unwrap();
    assert!(
        drainer.join().unwrap() == expected,
        "bytes lost, doubled or reordered"
    );
}

fn cancel_of_a_partly_done_write_reports_the_bytes_written(engine: EngineKind) {
    let ctx = ctx(engine);
    let (read, write) = pipe();
    let id = ctx
        .submit_one(Request::write(Arc::new(write), vec![4u8; MORE_THAN_FITS], 0).data(1))
        .unwrap();
    // Take more than the pipe holds, so that the write went on in chunks, then let it
    // fill the pipe again.
    let before = 4 << 16;
    (&*read).read_exact(&mut vec![0u8; before]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    ctx.cancel(id)
        .expect("a write waiting for room is cancellable");
    let events = ctx.get_events(1, 1, Some(PROMPTLY)).unwrap();
    let after = drain_to_eof(Arc::try_unwrap(read).unwrap());
    assert!(after > 0, "the write filled the pipe again");
    assert_eq!(
        events[0].res,
        (before + after) as i64,
        "the event reports the bytes written, never -ECANCELED after a partial write"
    );
    assert_eq!(errno_of(&ctx.cancel(id).unwrap_err()), libc::EINVAL);
}

macro_rules! engines {
    ($($engine:ident => $kind:expr),* $(,)?) => {
        $(mod $engine {
            use super::*;
            engines!(@tests $kind;
                destroy_cancels_a_pipe_read_that_never_gets_data,
                destroy_cancels_a_fifo_read_that_never_gets_data,
                destroy_cancels_a_socket_read_that_never_gets_data,
                destroy_cancels_a_write_to_a_full_pipe,
                destroy_cancels_a_write_to_a_full_fifo,
                destroy_cancels_a_write_to_a_full_socket,
                destroy_returns_with_a_write_partly_done,
                cancel_of_a_pipe_read_is_einprogress_then_ecanceled,
                cancel_of_a_socket_read_is_einprogress_then_ecanceled,
                cancel_of_a_write_to_a_full_pipe_is_einprogress_then_ecanceled,
                process_exits_promptly_with_requests_waiting);
        })*
    };
    (@whole_writes $($engine:ident => $kind:expr),* $(,)?) => {
        $(mod $engine {
            use super::*;
            engines!(@tests $kind;
                cancel_of_a_fifo_read_is_einprogress_then_ecanceled,
                a_write_longer_than_the_pipe_completes_whole_once_drained,
                a_vectored_write_resumes_where_it_stopped,
                cancel_of_a_partly_done_write_reports_the_bytes_written);
        })*
    };
    (@tests $kind:expr; $($test:ident),*) => {
        $(#[test]
        fn $test() {
            super::$test($kind);
        })*
    };
}

engines! {
    uring => EngineKind::Uring,
    kaio => EngineKind::Kaio,
    threads => EngineKind::Threads,
    sim => EngineKind::Sim,
}

mod whole_writes {
    use super::*;
    engines! { @whole_writes
        kaio => EngineKind::Kaio,
        threads => EngineKind::Threads,
    }
}
