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

use aioctx::{AlignedBuf, Context, EngineKind, Request};
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

/// In the child: a new context works. Exit status 0 if so, else the number of the failing
/// check. Uses no test machinery (the child has only this thread).
fn in_forked_child(ctx: &Context, file: &Arc<std::fs::File>) -> i32 {
    let Ok(own) = Context::builder().depth(8).engine(ctx.engine()).build() else {
        return 4;
    };
    if own
        .submit_one(Request::read(file.clone(), vec![0u8; 4096], 4096))
        .is_err()
    {
        return 5;
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
                return 6;
            }
        }
        _ => return 7,
    }
    if own.destroy().is_err() {
        return 8;
    }
    0
}

fn forked_child_cannot_use_the_parent_context(engine: EngineKind) {
    let data = temp_file(4 << 20);
    let direct = open_direct(&data);
    let buffered = open(&data, true, false);
    let ctx = Context::builder().depth(64).engine(engine).build().unwrap();
    let mut batch: Vec<Request> = (0..64u64)
        .map(|i| {
            let buf = AlignedBuf::page_aligned(65536).unwrap();
            Request::read(direct.clone(), buf, i * 65536).data(i)
        })
        .collect();
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 64);
    // SAFETY: the child calls only what `in_forked_child` calls and then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let status = in_forked_child(&ctx, &buffered);
        // SAFETY: ends the child without running the parent's destructors or atexit.
        unsafe { libc::_exit(status) };
    }
    let events = ctx
        .get_events(64, 64, Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        events.len(),
        64,
        "{engine}: the parent's reads all complete"
    );
    for event in events {
        assert_eq!(event.res, 65536);
        let offset = event.data as usize * 65536;
        let buf = event.into_buf::<AlignedBuf>().unwrap();
        assert!((0..65536)
            .step_by(511)
            .all(|i| buf[i] == pattern(offset + i)));
    }
    let status = wait_child(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{engine}: child failed check {}",
        libc::WEXITSTATUS(status)
    );
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
    forked_child_cannot_use_the_parent_context,
    destroy_cancels_unanswered_stream_reads_promptly,
);
