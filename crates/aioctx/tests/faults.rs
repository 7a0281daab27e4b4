//! Faults from outside through the Rust API, on every engine: a signal interrupting a
//! blocked `get_events`, and a forked child holding the parent's context. (The C ABI's
//! faults, fd reuse and bad handles among them, are `crates/aioctx-libaio/tests/c/faults.c`;
//! process exit is `process_exit.rs`. In Rust a request holds its file open, so a caller
//! cannot close the fd under it.)

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Context, EngineKind, Request, RequestId};
use common::*;

const FIVE_SECONDS: Option<Duration> = Some(Duration::from_secs(5));

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Installs a SIGUSR2 handler without SA_RESTART (once per process).
fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
                0
            );
        }
    });
}

fn signal_interrupts_get_events_and_the_event_still_comes(engine: EngineKind) {
    install_handler();
    let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
    let (reader, mut writer) = pipe();
    ctx.submit_one(Request::poll(reader.clone(), libc::POLLIN as u16).data(1))
        .unwrap();
    ctx.submit_one(Request::read(reader, vec![0u8; 1], 0).data(2))
        .unwrap();
    // SAFETY: pthread_self has no preconditions.
    let waiter = unsafe { libc::pthread_self() };
    let helper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: the waiter thread outlives this (it joins us); SIGUSR2 has a handler.
        assert_eq!(unsafe { libc::pthread_kill(waiter, libc::SIGUSR2) }, 0);
        std::thread::sleep(Duration::from_millis(100));
        // Two bytes: the read takes one, the other keeps the pipe readable for the poll.
        writer.write_all(b"xy").unwrap();
        writer
    });
    let interrupted = ctx.get_events(2, 2, None).expect_err("interrupted");
    assert_eq!(
        errno_of(&interrupted),
        libc::EINTR,
        "{engine}: {interrupted}"
    );
    assert!(SIGNALLED.load(Ordering::SeqCst));
    let _writer = helper.join().unwrap();
    let mut events = ctx.get_events(2, 2, FIVE_SECONDS).unwrap();
    events.sort_by_key(|e| e.data);
    assert_eq!(events.len(), 2, "{engine}: both events after EINTR");
    assert!(events[0].res & libc::POLLIN as i64 != 0, "{:?}", events[0]);
    assert_eq!(events[1].res, 1);
    assert_eq!(
        &events.pop().unwrap().into_buf::<Vec<u8>>().unwrap()[..],
        b"x"
    );
    ctx.destroy().unwrap();
}

/// Waits up to 60 s for a forked child; its wait status (panics if it does not end).
fn wait_child(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: waits for our own child, status into a local.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(got >= 0);
        if got == pid {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kills and reaps our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    panic!("forked child did not end");
}

/// In the child: every call on the parent's context fails `EINVAL` at once (SPEC §3), its
/// drop returns without touching the parent's engine, and a context of the child's own
/// works. Exit status 0 if so, else the number of the failing check. Uses no test machinery
/// (the child has only this thread).
fn in_forked_child(parents: Context, ids: &[RequestId], file: &Arc<std::fs::File>) -> i32 {
    let einval = |result: std::io::Result<()>| errno_of(&result.unwrap_err()) == libc::EINVAL;
    let mut batch = vec![Request::read(file.clone(), vec![0u8; 4096], 0).data(999)];
    match parents.submit(&mut batch) {
        Err(e) if errno_of(&e) == libc::EINVAL && batch.len() == 1 => {}
        _ => return 1,
    }
    if let Err(e) = parents.submit_one(Request::noop()) {
        if errno_of(&e.error) != libc::EINVAL {
            return 2;
        }
    } else {
        return 2;
    }
    // Neither waits (the parent's events are not the child's to take), with or without
    // a timeout.
    if !einval(parents.get_events(0, 64, Some(Duration::ZERO)).map(drop)) {
        return 3;
    }
    if !einval(parents.get_events(1, 64, None).map(drop)) {
        return 4;
    }
    if !einval(parents.cancel(ids[0])) || !einval(parents.cancel(ids[64])) {
        return 5;
    }
    if !einval(parents.destroy()) {
        return 6;
    }
    if parents.state() != aioctx::State::Dead {
        return 7;
    }
    let engine = parents.engine();
    // Drop (destroy) of the copy returns at once and leaves the parent's engine alone.
    drop(parents);
    let Ok(own) = Context::builder().depth(8).engine(engine).build() else {
        return 10;
    };
    if own
        .submit_one(Request::read(file.clone(), vec![0u8; 4096], 4096))
        .is_err()
    {
        return 11;
    }
    match own.get_events(1, 1, FIVE_SECONDS) {
        Ok(events) if events.len() == 1 && events[0].res == 4096 => {
            let buf = events
                .into_iter()
                .next()
                .unwrap()
                .into_buf::<Vec<u8>>()
                .unwrap();
            if (0..4096).any(|i| buf[i] != pattern(4096 + i)) {
                return 12;
            }
        }
        _ => return 13,
    }
    if own.destroy().is_err() {
        return 14;
    }
    0
}

/// The tag of the parent's pipe read, answered only after the child ended.
const PIPE_READ: u64 = 1000;

/// A forked child uses the parent's context while the parent's O_DIRECT reads and a pipe
/// read are in flight: `EINVAL` for every call, its drop returns, its own context works;
/// the parent gets every event of its own, with the data, and destroys as usual.
fn forked_child_gets_einval_from_the_parent_context(engine: EngineKind) {
    let data = temp_file(4 << 20);
    let direct = open_direct(&data);
    let buffered = open(&data, true, false);
    let (reader, mut writer) = pipe();
    let ctx = Context::builder()
        .depth(128)
        .engine(engine)
        .build()
        .unwrap();
    let mut batch: Vec<Request> = (0..64u64)
        .map(|i| {
            let buf = AlignedBuf::page_aligned(65536).unwrap();
            Request::read(direct.clone(), buf, i * 65536).data(i)
        })
        .collect();
    batch.push(Request::read(reader, vec![0u8; 4], 0).data(PIPE_READ));
    let ids = ctx.submit(&mut batch).unwrap();
    assert_eq!(ids.len(), 65);
    // SAFETY: the child calls only what `in_forked_child` calls and then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let status = in_forked_child(ctx, &ids, &buffered);
        // SAFETY: ends the child without running the parent's destructors or atexit.
        unsafe { libc::_exit(status) };
    }
    let status = wait_child(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{engine}: child failed check {}",
        libc::WEXITSTATUS(status)
    );
    writer.write_all(b"pipe").unwrap();
    let events = ctx
        .get_events(65, 65, Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        events.len(),
        65,
        "{engine}: the parent's requests all complete"
    );
    let mut tags = Vec::new();
    for event in events {
        let (tag, res) = (event.data, event.res);
        tags.push(tag);
        if tag == PIPE_READ {
            let buf = event.into_buf::<Vec<u8>>().unwrap();
            assert_eq!(
                (res, &buf[..]),
                (4, &b"pipe"[..]),
                "{engine}: the pipe read"
            );
            continue;
        }
        assert_eq!(res, 65536, "{engine}: read {tag}");
        let buf = event.into_buf::<AlignedBuf>().unwrap();
        let offset = tag as usize * 65536;
        assert!(
            (0..65536)
                .step_by(511)
                .all(|i| buf[i] == pattern(offset + i)),
            "{engine}: read {tag} holds the file's bytes"
        );
    }
    tags.sort_unstable();
    let expected: Vec<u64> = (0..64).chain([PIPE_READ]).collect();
    assert_eq!(
        tags, expected,
        "{engine}: one event per request of the parent's"
    );
    let extra = ctx.get_events(0, 8, Some(Duration::ZERO)).unwrap();
    assert!(extra.is_empty(), "{engine}: events nobody submitted");
    ctx.destroy().unwrap();
}

/// Destroy with many reads of a pipe and a socket nobody writes (the simulator retries
/// them) returns promptly, 20 times over.
fn destroy_cancels_unanswered_stream_reads_promptly(engine: EngineKind) {
    for _ in 0..20 {
        let (reader, writer) = pipe();
        let (socket, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let socket = Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(socket)));
        let ctx = Context::builder().depth(64).engine(engine).build().unwrap();
        for i in 0..8 {
            ctx.submit_one(Request::read(reader.clone(), vec![0u8; 8], 0).data(i))
                .unwrap();
            ctx.submit_one(Request::read(socket.clone(), vec![0u8; 8], 0).data(8 + i))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(ctx.destroy().is_ok()));
        let destroyed = finished.recv_timeout(Duration::from_secs(10));
        assert_eq!(
            destroyed,
            Ok(true),
            "{engine}: destroy did not return in 10 s"
        );
        drop((writer, peer));
    }
}

/// Destroy with polls and reads of a pipe and a socket waiting (destroy cancels them)
/// returns only once the context let go of both files: the caller's are the only
/// references left, so closing them closes the pipe and the socket (a writer sees EPIPE).
fn destroy_lets_go_of_polled_and_waiting_files_before_it_returns(engine: EngineKind) {
    for round in 0..50 {
        let (reader, writer) = pipe();
        let (socket, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let socket = Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(socket)));
        let ctx = Context::builder().depth(16).engine(engine).build().unwrap();
        for i in 0..4 {
            ctx.submit_one(Request::poll(reader.clone(), libc::POLLIN as u16).data(i))
                .unwrap();
            ctx.submit_one(Request::read(socket.clone(), vec![0u8; 8], 0).data(4 + i))
                .unwrap();
            ctx.submit_one(Request::poll(socket.clone(), libc::POLLIN as u16).data(8 + i))
                .unwrap();
        }
        // Long enough for the process's poll thread to be asleep in poll(2) on them.
        std::thread::sleep(Duration::from_millis(2));
        ctx.destroy().unwrap();
        assert_eq!(
            (Arc::strong_count(&reader), Arc::strong_count(&socket)),
            (1, 1),
            "{engine}, round {round}: the pipe and the socket are still held after destroy"
        );
        drop((writer, peer));
    }
}

macro_rules! engines {
    ($($behaviour:ident),* $(,)?) => {
        $(
            mod $behaviour {
                use super::*;
                #[test]
                fn uring() { $behaviour(EngineKind::Uring) }
                #[test]
                fn kaio() { $behaviour(EngineKind::Kaio) }
                #[test]
                fn threads() { $behaviour(EngineKind::Threads) }
                #[test]
                fn sim() { $behaviour(EngineKind::Sim) }
            }
        )*
    };
}

engines!(
    signal_interrupts_get_events_and_the_event_still_comes,
    forked_child_gets_einval_from_the_parent_context,
    destroy_cancels_unanswered_stream_reads_promptly,
    destroy_lets_go_of_polled_and_waiting_files_before_it_returns,
);
