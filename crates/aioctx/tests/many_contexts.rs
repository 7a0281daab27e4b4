//! SPEC §3: a context costs no file descriptor and no thread of its own, on every engine,
//! so 10,000 live contexts work under the usual `ulimit -n 1024`.
//!
//! Each engine's test runs this test binary again as a child that runs only that test; the
//! child lowers its own RLIMIT_NOFILE soft limit to 1024 before it makes any context (the
//! limits of the shell and of the other tests stay as they are).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{Context, EngineKind, Request};
use common::*;

const CONTEXTS: usize = 10_000;

/// The open-files soft limit the child runs under.
const NOFILE: u64 = 1024;

/// Set, to the engine's name, for the child.
const CHILD: &str = "AIOCTX_TEST_MANY_CONTEXTS_CHILD";

/// Descriptors and threads an engine may add for the whole process while contexts come
/// (shared io_uring instances and their reapers, shared kernel AIO contexts, pool
/// workers): a few, never one per context.
const PROCESS_WIDE_FDS: usize = 8;
const PROCESS_WIDE_THREADS: usize = 40;

/// What may stay after every context is destroyed: descriptors and resident memory (code
/// paged in, the allocator's own bookkeeping).
const FDS_LEFT: usize = 2;
const RSS_LEFT_KIB: u64 = 8 * 1024;

#[test]
fn ten_thousand_live_contexts_on_uring() {
    run(EngineKind::Uring, "ten_thousand_live_contexts_on_uring");
}

#[test]
fn ten_thousand_live_contexts_on_kaio() {
    run(EngineKind::Kaio, "ten_thousand_live_contexts_on_kaio");
}

#[test]
fn ten_thousand_live_contexts_on_threads() {
    run(EngineKind::Threads, "ten_thousand_live_contexts_on_threads");
}

#[test]
fn ten_thousand_live_contexts_on_sim() {
    run(EngineKind::Sim, "ten_thousand_live_contexts_on_sim");
}

/// In the child: the test itself. Else: runs the child and checks that it passed.
fn run(engine: EngineKind, test: &str) {
    if std::env::var(CHILD).as_deref() == Ok(engine.name()) {
        return live_contexts(engine);
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, engine.name())
        .env_remove("AIOCTX_ENGINE")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines().filter(|l| l.starts_with("contexts:")) {
        println!("{line}");
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
}

/// What the process holds, from /proc/self.
#[derive(Clone, Copy, Debug)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

impl Usage {
    /// Measured after the allocator gave back the free pages it keeps (glibc's
    /// `malloc_trim`), so that what stays is what is still allocated.
    fn now() -> Usage {
        // SAFETY: malloc_trim only releases free heap memory; it takes no pointer.
        unsafe { libc::malloc_trim(0) };
        let status = std::fs::read_to_string("/proc/self/status").expect("read status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
        };
        Usage {
            fds: std::fs::read_dir("/proc/self/fd")
                .expect("list fds")
                .count(),
            threads: field("Threads:") as usize,
            rss_kib: field("VmRSS:"),
        }
    }
}

fn lower_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one live local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = NOFILE.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Makes a context and proves it works: a NOOP and a cached read, submitted and reaped
/// without sleeping in get_events (a sleeper would make the context's wake-up eventfd).
fn usable_context(engine: EngineKind, file: &Arc<std::fs::File>, number: usize) -> Context {
    let ctx = Context::builder()
        .depth(4)
        .engine(engine)
        .build()
        .unwrap_or_else(|e| panic!("context {number} on {engine}: {e}"));
    let mut batch = vec![
        Request::noop().data(1),
        Request::read(Arc::clone(file), vec![0u8; 4], 0).data(2),
    ];
    assert_eq!(ctx.submit(&mut batch).expect("submit").len(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while events.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "context {number}: {} of 2 events",
            events.len()
        );
        events.extend(
            ctx.get_events(0, 2, Some(Duration::ZERO))
                .expect("get_events"),
        );
        std::thread::yield_now();
    }
    events.sort_by_key(|e| e.data);
    assert_eq!((events[0].res, events[1].res), (0, 4), "context {number}");
    ctx
}

fn live_contexts(engine: EngineKind) {
    lower_nofile_limit();
    let file = temp_file(4096);
    let reader = open(&file, true, false);
    // The engine's process-wide parts (shared instances, kernel contexts, the pool) are
    // made before the count starts.
    let warm_up: Vec<Context> = (0..64)
        .map(|i| usable_context(engine, &reader, i))
        .collect();
    drop(warm_up);
    let start = Usage::now();

    let mut contexts = Vec::with_capacity(CONTEXTS);
    for number in 0..CONTEXTS {
        contexts.push(usable_context(engine, &reader, number));
        if matches!(number + 1, 100 | 1000 | CONTEXTS) {
            let live = Usage::now();
            println!(
                "contexts: {} live on {engine}: {} fds, {} threads, {} KiB resident (from {} fds, {} threads, {} KiB)",
                number + 1,
                live.fds,
                live.threads,
                live.rss_kib,
                start.fds,
                start.threads,
                start.rss_kib
            );
            assert!(
                live.fds <= start.fds + PROCESS_WIDE_FDS,
                "{} contexts hold fds: {live:?} from {start:?}",
                number + 1
            );
            assert!(
                live.threads <= start.threads + PROCESS_WIDE_THREADS,
                "{} contexts hold threads: {live:?} from {start:?}",
                number + 1
            );
        }
    }
    drop(contexts);

    let end = Usage::now();
    println!(
        "contexts: all destroyed on {engine}: {} fds, {} threads, {} KiB resident",
        end.fds, end.threads, end.rss_kib
    );
    assert!(end.fds <= start.fds + FDS_LEFT, "{end:?} from {start:?}");
    assert!(
        end.threads <= start.threads + PROCESS_WIDE_THREADS,
        "{end:?} from {start:?}"
    );
    assert!(
        end.rss_kib <= start.rss_kib + RSS_LEFT_KIB,
        "{end:?} from {start:?}"
    );
}
