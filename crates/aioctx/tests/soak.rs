//! Soak, per engine, each in a child process of its own so that its figures are its own:
//! 100,000 contexts created, used (one read) and destroyed in sequence, then 10,000 live at
//! once (each with a read done), then all destroyed. Open fds (`/proc/self/fd`), threads and
//! RSS (`/proc/self/status`) and mapped memory (`/proc/self/maps`) must come back to their
//! level after a warm-up, within the margins below; the figures are printed. The same soak
//! then runs on the kernel's AIO (the system calls libaio wraps), which stops at
//! `fs.aio-max-nr`: reported, not judged.
//!
//! While 10,000 contexts are live, kaio and threads run under `RLIMIT_NOFILE` 1024 (SPEC §3:
//! a context costs no fd and no thread); uring and sim still hold a thread (and uring an fd)
//! per context on this branch, so their child raises the limit for that part, their peak
//! is reported, not judged, and so is their mapped memory (glibc keeps the malloc arenas
//! those threads made).
//!
//! `AIOCTX_SOAK_CONTEXTS` scales the 100,000 (and the 10,000 as a tenth of it).

use std::fs::File;
use std::io::Write;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{Context, EngineKind, Request};

/// Allowed growth after the soak, over the level after the warm-up.
const FD_MARGIN: i64 = 2;
const THREAD_MARGIN: i64 = 4;
const RSS_MARGIN_KIB: i64 = 32 * 1024;
const MAPPINGS_MARGIN: i64 = 32;
const MAPPED_MARGIN_KIB: i64 = 64 * 1024;
/// What "no fd and no thread of its own" allows at 10,000 live contexts.
const LIVE_FD_MARGIN: i64 = 16;
const LIVE_THREAD_MARGIN: i64 = 40;

#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    fds: i64,
    threads: i64,
    rss_kib: i64,
    mappings: i64,
    mapped_kib: i64,
}

impl Figures {
    fn now() -> Figures {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| -> i64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
        };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped_bytes: u64 = maps
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|range| range.split_once('-'))
            .map(|(a, b)| u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap())
            .sum();
        Figures {
            // Less the descriptor read_dir itself holds open.
            fds: std::fs::read_dir("/proc/self/fd").unwrap().count() as i64 - 1,
            threads: field("Threads:"),
            rss_kib: field("VmRSS:"),
            mappings: maps.lines().count() as i64,
            mapped_kib: (mapped_bytes / 1024) as i64,
        }
    }
}

/// The figures once threads and fds stop changing (an engine may let go of a context's
/// thread or ring shortly after destroy returned), for at most 5 s.
fn settled() -> Figures {
    // Memory freed to malloc but kept by it is not the library's: give it back first.
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe { libc::malloc_trim(0) };
    let mut last = Figures::now();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = Figures::now();
        if (now.fds, now.threads) == (last.fds, last.threads) {
            return now;
        }
        last = now;
    }
    last
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fds, {} threads, RSS {} KiB, {} mappings ({} KiB)",
            self.fds, self.threads, self.rss_kib, self.mappings, self.mapped_kib
        )
    }
}

fn set_nofile(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this (child) process's own limit, into a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

fn data_file() -> (std::path::PathBuf, Arc<File>) {
    let path = std::env::temp_dir().join(format!("aioctx-soak-{}", std::process::id()));
    File::create(&path)
        .unwrap()
        .write_all(&[0x3cu8; 4096])
        .unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    (path, file)
}

/// One read through `ctx`, checked.
fn use_once(ctx: &Context, file: &Arc<File>) {
    ctx.submit_one(Request::read(file.clone(), vec![0u8; 4096], 0).data(7))
        .unwrap();
    let done = ctx.get_events(1, 1, Some(Duration::from_secs(10))).unwrap();
    assert_eq!((done.len(), done[0].data, done[0].res), (1, 7, 4096));
    assert!(done
        .into_iter()
        .next()
        .unwrap()
        .into_buf::<Vec<u8>>()
        .unwrap()[..]
        .iter()
        .all(|&b| b == 0x3c));
}

fn cycle(engine: EngineKind, file: &Arc<File>) {
    let ctx = Context::builder().depth(4).engine(engine).build().unwrap();
    use_once(&ctx, file);
    ctx.destroy().unwrap();
}

fn soak_child(engine: EngineKind, contexts: usize) -> ExitCode {
    let (path, file) = data_file();
    let costs_fd_or_thread = matches!(engine, EngineKind::Uring | EngineKind::Sim);
    set_nofile(1024);
    for _ in 0..1000 {
        cycle(engine, &file);
    }
    let before = settled();
    let start = Instant::now();
    for _ in 0..contexts {
        cycle(engine, &file);
    }
    let sequential = start.elapsed();
    let after_sequence = settled();
    if costs_fd_or_thread {
        set_nofile(1 << 20);
    }
    // A uring context holds a reaper thread on this branch: some 8,000 of them exhaust
    // vm.max_map_count (each thread's stack, guard and signal stack are mappings) and a
    // reaper panics. Until the shared rings land, uring keeps 2,000 live.
    let live_count = if engine == EngineKind::Uring {
        contexts / 50
    } else {
        contexts / 10
    };
    let start = Instant::now();
    let mut live = Vec::with_capacity(live_count);
    let mut live_error = None;
    while live.len() < live_count {
        match Context::builder().depth(4).engine(engine).build() {
            Ok(ctx) => live.push(ctx),
            Err(e) => {
                live_error = Some(e);
                break;
            }
        }
    }
    let reached = live.len();
    for ctx in &live {
        use_once(ctx, &file);
    }
    let peak = Figures::now();
    drop(live);
    let live_time = start.elapsed();
    set_nofile(1024);
    let after = settled();
    let _ = std::fs::remove_file(&path);
    println!("soak {engine}: before:           {before}");
    println!("soak {engine}: after {contexts} in sequence ({sequential:.1?}): {after_sequence}");
    let stopped = live_error.map_or(String::new(), |e| format!(" (then: {e})"));
    println!("soak {engine}: {reached} of {live_count} live{stopped}: {peak}");
    println!("soak {engine}: all destroyed ({live_time:.1?}): {after}");
    let mut failures = Vec::new();
    for (name, figures) in [("sequence", after_sequence), ("end", after)] {
        let mut grew = vec![
            ("fds", figures.fds - before.fds, FD_MARGIN),
            ("threads", figures.threads - before.threads, THREAD_MARGIN),
            ("RSS KiB", figures.rss_kib - before.rss_kib, RSS_MARGIN_KIB),
        ];
        // glibc keeps the malloc arenas (64 MiB mapped each, up to 8 per core) that threads
        // made: mapped memory is judged where a context costs no thread.
        if !costs_fd_or_thread {
            grew.push((
                "mappings",
                figures.mappings - before.mappings,
                MAPPINGS_MARGIN,
            ));
            grew.push((
                "mapped KiB",
                figures.mapped_kib - before.mapped_kib,
                MAPPED_MARGIN_KIB,
            ));
        }
        for (what, growth, margin) in grew {
            if growth > margin {
                failures.push(format!(
                    "{what} grew by {growth} at the {name} (margin {margin})"
                ));
            }
        }
    }
    if !costs_fd_or_thread && reached < live_count {
        failures.push(format!(
            "only {reached} of {live_count} contexts could be live"
        ));
    }
    if !costs_fd_or_thread {
        if peak.fds - before.fds > LIVE_FD_MARGIN {
            failures.push(format!(
                "{live_count} live contexts hold {} fds",
                peak.fds - before.fds
            ));
        }
        if peak.threads - before.threads > LIVE_THREAD_MARGIN {
            failures.push(format!(
                "{live_count} live contexts hold {} threads",
                peak.threads - before.threads
            ));
        }
    }
    for failure in &failures {
        println!("soak {engine}: FAILED: {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The kernel's AIO, through the system calls libaio wraps: one read per context in
/// sequence until `contexts`, the first error or 20 s (each io_destroy waits for an RCU
/// grace period), then as many live as it allows, up to a hundredth of `contexts`.
fn kernel_child(contexts: usize) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (path, file) = data_file();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
    let before = Figures::now();
    let mut buf = vec![0u8; 4096];
    let mut cycles = 0;
    let mut stopped = String::from("no error");
    for _ in 0..contexts {
        if Instant::now() > deadline {
            stopped = String::from("20 s limit");
            break;
        }
        match kernel_cycle(fd, &mut buf, true) {
            Ok(ctx) => {
                // SAFETY: destroys the context just made; its one read was reaped.
                unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
                cycles += 1;
            }
            Err(e) => {
                stopped = e.to_string();
                break;
            }
        }
    }
    let after_sequence = Figures::now();
    let mut live = Vec::new();
    let mut live_stopped = String::from("no error");
    while live.len() < contexts / 100 {
        match kernel_cycle(fd, &mut buf, false) {
            Ok(ctx) => live.push(ctx),
            Err(e) => {
                live_stopped = e.to_string();
                break;
            }
        }
    }
    let peak = Figures::now();
    let start = Instant::now();
    for ctx in &live {
        // SAFETY: destroys contexts this function made, with nothing in flight.
        unsafe { libc::syscall(libc::SYS_io_destroy, *ctx) };
    }
    let after = Figures::now();
    let destroy_time = start.elapsed();
    let _ = std::fs::remove_file(&path);
    println!("soak kernel: before: {before}");
    println!("soak kernel: {cycles} of {contexts} in sequence ({stopped}): {after_sequence}");
    println!("soak kernel: {} live ({live_stopped}): {peak}", live.len());
    println!("soak kernel: all destroyed ({destroy_time:.1?}): {after}");
    ExitCode::SUCCESS
}

/// io_setup(4), with `read` one read submitted and reaped; the context.
fn kernel_cycle(fd: i32, buf: &mut [u8], read: bool) -> std::io::Result<u64> {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes the new context into `ctx`.
    if unsafe { libc::syscall(libc::SYS_io_setup, 4, &mut ctx) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !read {
        return Ok(ctx);
    }
    let iocb = aioctx::sys::abi::Iocb {
        aio_fildes: fd as u32,
        aio_buf: buf.as_mut_ptr() as u64,
        aio_nbytes: buf.len() as u64,
        ..Default::default()
    };
    let mut list = [&iocb as *const _];
    // SAFETY: one iocb whose buffer lives until its event is reaped below.
    let submitted = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()) };
    assert_eq!(submitted, 1, "{}", std::io::Error::last_os_error());
    let mut event = aioctx::sys::abi::IoEvent::default();
    // SAFETY: room for one event; no timeout (a cached read completes).
    let got = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            1,
            1,
            &mut event,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    assert_eq!((got, event.res), (1, 4096));
    Ok(ctx)
}

/// All children run at once: each one's figures are its own process's.
fn spawn_child(name: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--child", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn soak child")
}

fn finish_child(child: std::process::Child) -> bool {
    let out = child.wait_with_output().expect("soak child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.success()
}

fn main() -> ExitCode {
    let contexts: usize = std::env::var("AIOCTX_SOAK_CONTEXTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--child" {
        return match args[2].as_str() {
            "kernel" => kernel_child(contexts),
            name => soak_child(name.parse().expect("engine"), contexts),
        };
    }
    // `cargo test` passes libtest's options (a filter, --nocapture, ...): run everything.
    let (mut passed, mut failed) = (0, 0);
    let children: Vec<_> = EngineKind::ALL
        .iter()
        .map(|engine| (engine, spawn_child(engine.name())))
        .collect();
    let kernel = spawn_child("kernel");
    for (engine, child) in children {
        let ok = finish_child(child);
        println!(
            "test soak_{} ... {}",
            engine.name(),
            if ok { "ok" } else { "FAILED" }
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    finish_child(kernel);
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
