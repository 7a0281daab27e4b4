//! A process ends with contexts live and requests that will never finish (reads of a pipe
//! and a socket nobody writes, polls that never fire) beside O_DIRECT reads in flight: it
//! exits promptly, on every engine, whichever way it ends. Not a libtest harness: the test
//! runs itself as a child per engine and way of ending, because returning from `main` is
//! one of the ways.
//!
//! Ways of ending (the child's argument):
//! - `return-leaked`: returns from `main` with the contexts leaked (as a C program returning
//!   from main leaves them);
//! - `return-dropped`: returns from `main` with the contexts in locals, so that their drop
//!   (destroy) runs on the way out: destroy cancels the polls and waits for the O_DIRECT
//!   reads; `return-dropped-streams` adds the pipe and socket reads destroy must cancel;
//! - `exit`: `std::process::exit` with the contexts live;
//! - `sigterm`: killed by `SIGTERM` with the contexts live.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Context, EngineKind, Request};

const WAYS: [&str; 5] = [
    "return-leaked",
    "return-dropped",
    "return-dropped-streams",
    "exit",
    "sigterm",
];
/// "Promptly", generously: the machine is shared and loaded.
const PROMPTLY: Duration = Duration::from_secs(20);

/// What the requests that never finish wait on; kept open until the process ends.
struct Peers {
    _pipe_writer: File,
    _socket_peer: UnixStream,
    _file: File,
}

fn direct_file() -> (std::path::PathBuf, File) {
    let path = std::env::temp_dir().join(format!("aioctx-exit-{}", std::process::id()));
    let mut file = File::create(&path).unwrap();
    file.write_all(&vec![0x11u8; 1 << 20]).unwrap();
    file.sync_all().unwrap();
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    (path, direct)
}

/// Contexts with requests in flight that never finish on their own: polls that never fire,
/// with `streams` pipe and socket reads nobody answers, beside O_DIRECT reads.
fn contexts_with_requests(engine: EngineKind, streams: bool) -> (Vec<Context>, Peers) {
    let (reader, writer) = std::io::pipe().unwrap();
    let pipe = Arc::new(File::from(OwnedFd::from(reader)));
    let (socket, socket_peer) = UnixStream::pair().unwrap();
    let socket = Arc::new(File::from(OwnedFd::from(socket)));
    let (path, direct) = direct_file();
    let direct = Arc::new(direct);
    let _ = std::fs::remove_file(&path);
    let mut contexts = Vec::new();
    for _ in 0..4 {
        let ctx = Context::builder()
            .depth(64)
            .engine(engine)
            .build()
            .expect("context");
        let mut batch = Vec::new();
        for i in 0..4u64 {
            if streams {
                batch.push(Request::read(pipe.clone(), vec![0u8; 8], 0).data(i));
                batch.push(Request::read(socket.clone(), vec![0u8; 8], 0).data(10 + i));
            }
            batch.push(Request::poll(pipe.clone(), libc::POLLIN as u16).data(20 + i));
            let buf = AlignedBuf::page_aligned(65536).unwrap();
            batch.push(Request::read(direct.clone(), buf, i * 65536).data(30 + i));
        }
        let n = batch.len();
        assert_eq!(ctx.submit(&mut batch).unwrap().len(), n);
        contexts.push(ctx);
    }
    std::thread::sleep(Duration::from_millis(20));
    let peers = Peers {
        _pipe_writer: File::from(OwnedFd::from(writer)),
        _socket_peer: socket_peer,
        _file: File::open("/dev/null").unwrap(),
    };
    (contexts, peers)
}

fn child(engine: EngineKind, way: &str) -> ExitCode {
    let (contexts, peers) = contexts_with_requests(engine, way != "return-dropped");
    match way {
        "return-leaked" => {
            std::mem::forget(contexts);
            std::mem::forget(peers);
        }
        "return-dropped" | "return-dropped-streams" => {
            // Locals: dropped (destroyed) on the way out of main, peers last.
            let _peers = peers;
            let _contexts = contexts;
            return ExitCode::SUCCESS;
        }
        "exit" => std::process::exit(0),
        "sigterm" => {
            // SAFETY: raise() only sends this process a signal.
            unsafe { libc::raise(libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(600));
        }
        _ => panic!("unknown way {way}"),
    }
    ExitCode::SUCCESS
}

/// Runs this program as a child ending in `way` on `engine`; its status, or None if it did
/// not end within `PROMPTLY` (then it is killed).
fn run_child(engine: EngineKind, way: &str) -> Option<ExitStatus> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--child", engine.name(), way])
        .spawn()
        .expect("spawn child");
    let deadline = Instant::now() + PROMPTLY;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--child" {
        let engine: EngineKind = args[2].parse().expect("engine");
        return child(engine, &args[3]);
    }
    // `cargo test` passes libtest's options (a filter, --nocapture, ...): run everything.
    let mut failed = 0;
    let mut passed = 0;
    for engine in EngineKind::ALL {
        for way in WAYS {
            let start = Instant::now();
            let status = run_child(engine, way);
            let took = start.elapsed();
            let ok = match (way, status) {
                ("sigterm", Some(s)) => {
                    std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGTERM)
                }
                (_, Some(s)) => s.success(),
                (_, None) => false,
            };
            let verdict = if ok { "ok" } else { "FAILED" };
            println!(
                "test process_exits_promptly_{}_{} ... {verdict} ({took:.2?}, {status:?})",
                engine.name(),
                way.replace('-', "_")
            );
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
