//! Soak, per engine, each in a child process of its own so that its figures are its own:
//! 100,000 contexts created, used (one read) and destroyed in sequence, then 10,000 live at
//! once (each with a read done), then all destroyed. Open fds (`/proc/self/fd`), threads and
//! RSS (`/proc/self/status`) and mappings and mapped memory (`/proc/self/maps`) are printed
//! before and after, and must come back to their level after a warm-up, within the margins
//! below, on every engine. The same soak then runs on the kernel's AIO through the system
//! libaio (dlopen'ed by its path, never the drop-in), which stops at `fs.aio-max-nr`: its
//! figures are printed beside aioctx's for comparison, not judged.
//!
//! While 10,000 contexts are live, every engine runs under `RLIMIT_NOFILE` 1024 and is
//! judged on fds and threads at the peak too (SPEC §3: a context costs no fd and no thread;
//! uring contexts share a few process-wide io_uring instances and their reapers). Every
//! child caps glibc's malloc arenas (`M_ARENA_MAX`), which threads would otherwise multiply,
//! mapped and kept.
//!
//! `AIOCTX_SOAK_CONTEXTS` scales the 100,000 (and the 10,000 as a tenth of it).

use std::fs::File;
use std::io::Write;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{Context, EngineKind, Request};

/// Allowed growth after the soak, over the level after the warm-up (the figures are also
/// printed with these margins).
const FD_MARGIN: i64 = 2;
const THREAD_MARGIN: i64 = 4;
const RSS_MARGIN_KIB: i64 = 32 * 1024;
const MAPPINGS_MARGIN: i64 = 32;
/// Address space, not memory: malloc keeps what 10,000 live contexts spread over its
/// arenas mapped after they are freed (RSS comes back; 40–64 MiB here, one thread arena's
/// reserve at most), so a leak shows in RSS and mappings first.
const MAPPED_MARGIN_KIB: i64 = 96 * 1024;
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

/// Caps glibc's malloc arenas: each thread that allocates may otherwise get one (64 MiB
/// mapped, kept after the thread ends), which would hide what the library maps.
fn cap_malloc_arenas() {
    // SAFETY: mallopt only sets a malloc tuning parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
}

fn soak_child(engine: EngineKind, contexts: usize) -> ExitCode {
    cap_malloc_arenas();
    let (path, file) = data_file();
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
    let live_count = contexts / 10;
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
    let after = settled();
    let _ = std::fs::remove_file(&path);
    println!(
        "soak {engine}: margins: +{FD_MARGIN} fds, +{THREAD_MARGIN} threads, \
         +{RSS_MARGIN_KIB} KiB RSS, +{MAPPINGS_MARGIN} mappings, +{MAPPED_MARGIN_KIB} KiB mapped; \
         live: +{LIVE_FD_MARGIN} fds, +{LIVE_THREAD_MARGIN} threads"
    );
    println!("soak {engine}: before:           {before}");
    println!("soak {engine}: after {contexts} in sequence ({sequential:.1?}): {after_sequence}");
    let stopped = live_error.map_or(String::new(), |e| format!(" (then: {e})"));
    println!("soak {engine}: {reached} of {live_count} live{stopped}: {peak}");
    println!("soak {engine}: all destroyed ({live_time:.1?}): {after}");
    let mut failures = Vec::new();
    for (name, figures) in [("sequence", after_sequence), ("end", after)] {
        let grew = [
            ("fds", figures.fds - before.fds, FD_MARGIN),
            ("threads", figures.threads - before.threads, THREAD_MARGIN),
            ("RSS KiB", figures.rss_kib - before.rss_kib, RSS_MARGIN_KIB),
            (
                "mappings",
                figures.mappings - before.mappings,
                MAPPINGS_MARGIN,
            ),
            (
                "mapped KiB",
                figures.mapped_kib - before.mapped_kib,
                MAPPED_MARGIN_KIB,
            ),
        ];
        for (what, growth, margin) in grew {
            if growth > margin {
                failures.push(format!(
                    "{what} grew by {growth} at the {name} (margin {margin})"
                ));
            }
        }
    }
    if reached < live_count {
        failures.push(format!(
            "only {reached} of {live_count} contexts could be live"
        ));
    }
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
    for failure in &failures {
        println!("soak {engine}: FAILED: {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type SetupFn = unsafe extern "C" fn(libc::c_int, *mut u64) -> libc::c_int;
type DestroyFn = unsafe extern "C" fn(u64) -> libc::c_int;
type SubmitFn =
    unsafe extern "C" fn(u64, libc::c_long, *mut *const aioctx::ffi::abi::Iocb) -> libc::c_int;
type GeteventsFn = unsafe extern "C" fn(
    u64,
    libc::c_long,
    libc::c_long,
    *mut aioctx::ffi::abi::IoEvent,
    *mut libc::timespec,
) -> libc::c_int;

/// The system libaio's entry points (libaio 0.3.x, x86-64), as `dlsym` finds them.
struct SystemLibaio {
    path: String,
    setup: SetupFn,
    destroy: DestroyFn,
    submit: SubmitFn,
    getevents: GeteventsFn,
}

/// The system's libaio, opened by the paths Debian installs it at (never the drop-in, which
/// only `LD_LIBRARY_PATH` or `LD_PRELOAD` would find); None if it is not installed.
fn system_libaio() -> Option<SystemLibaio> {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ];
    let names = ["libaio.so.1t64", "libaio.so.1"];
    for path in dirs
        .iter()
        .flat_map(|d| names.iter().map(move |n| format!("{d}/{n}")))
    {
        let c_path = std::ffi::CString::new(path.clone()).ok()?;
        // SAFETY: dlopen of a library by path; a missing one is NULL.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            continue;
        }
        let symbol = |name: &str| {
            let name = std::ffi::CString::new(name).unwrap();
            // SAFETY: looks a symbol up in the library just opened.
            let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
            assert!(!address.is_null(), "{path} has no {name:?}");
            address
        };
        // SAFETY: libaio's functions have exactly these C signatures (libaio.h).
        return Some(unsafe {
            SystemLibaio {
                setup: std::mem::transmute::<*mut libc::c_void, SetupFn>(symbol("io_setup")),
                destroy: std::mem::transmute::<*mut libc::c_void, DestroyFn>(symbol("io_destroy")),
                submit: std::mem::transmute::<*mut libc::c_void, SubmitFn>(symbol("io_submit")),
                getevents: std::mem::transmute::<*mut libc::c_void, GeteventsFn>(symbol(
                    "io_getevents",
                )),
                path,
            }
        });
    }
    None
}

/// The kernel's AIO through the system libaio: one read per context in sequence until
/// `contexts`, the first error or 20 s (each io_destroy waits for an RCU grace period), then
/// as many live, each with a read done, as it allows (it stops at `fs.aio-max-nr`, with
/// `EAGAIN`), up to `contexts`; then all destroyed.
fn kernel_child(contexts: usize) -> ExitCode {
    cap_malloc_arenas();
    let Some(aio) = system_libaio() else {
        println!("soak kernel: no system libaio installed: no comparison");
        return ExitCode::SUCCESS;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (path, file) = data_file();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
    let mut buf = vec![0u8; 4096];
    // A warm-up, as for the engines.
    for _ in 0..10 {
        if let Ok(ctx) = kernel_cycle(&aio, fd, &mut buf, true) {
            // SAFETY: destroys the context just made; its one read was reaped.
            unsafe { (aio.destroy)(ctx) };
        }
    }
    let before = settled();
    let mut cycles = 0;
    let mut stopped = String::from("no error");
    for _ in 0..contexts {
        if Instant::now() > deadline {
            stopped = String::from("20 s limit");
            break;
        }
        match kernel_cycle(&aio, fd, &mut buf, true) {
            Ok(ctx) => {
                // SAFETY: destroys the context just made; its one read was reaped.
                unsafe { (aio.destroy)(ctx) };
                cycles += 1;
            }
            Err(e) => {
                stopped = e.to_string();
                break;
            }
        }
    }
    let after_sequence = settled();
    let mut live = Vec::new();
    let mut live_stopped = String::from("no error");
    // The kernel releases destroyed contexts' share of aio-nr asynchronously: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    while live.len() < contexts {
        match kernel_cycle(&aio, fd, &mut buf, true) {
            Ok(ctx) => live.push(ctx),
            Err(e) => {
                live_stopped = e.to_string();
                break;
            }
        }
    }
    let peak = Figures::now();
    let start = Instant::now();
    // Each io_destroy waits for an RCU grace period (some 40 ms here): 32 threads at once
    // share them, or the thousands live would take minutes.
    std::thread::scope(|s| {
        for part in live.chunks(live.len().div_ceil(32).max(1)) {
            let destroy = aio.destroy;
            s.spawn(move || {
                for ctx in part {
                    // SAFETY: destroys contexts this function made, with nothing in flight.
                    unsafe { destroy(*ctx) };
                }
            });
        }
    });
    let destroy_time = start.elapsed();
    let after = settled();
    let _ = std::fs::remove_file(&path);
    println!("soak kernel ({}): before: {before}", aio.path);
    println!("soak kernel: {cycles} of {contexts} in sequence ({stopped}): {after_sequence}");
    println!(
        "soak kernel: {} live ({live_stopped}; fs.aio-max-nr {}): {peak}",
        live.len(),
        std::fs::read_to_string("/proc/sys/fs/aio-max-nr")
            .unwrap_or_default()
            .trim()
    );
    println!("soak kernel: all destroyed ({destroy_time:.1?}): {after}");
    ExitCode::SUCCESS
}

/// io_setup(4) through libaio, with `read` one read submitted and reaped; the context.
fn kernel_cycle(aio: &SystemLibaio, fd: i32, buf: &mut [u8], read: bool) -> std::io::Result<u64> {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes the new context into `ctx`; libaio returns -errno.
    let ret = unsafe { (aio.setup)(4, &mut ctx) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    if !read {
        return Ok(ctx);
    }
    let iocb = aioctx::ffi::abi::Iocb {
        aio_fildes: fd as u32,
        aio_buf: buf.as_mut_ptr() as u64,
        aio_nbytes: buf.len() as u64,
        ..Default::default()
    };
    let mut list = [&iocb as *const _];
    // SAFETY: one iocb whose buffer lives until its event is reaped below.
    let submitted = unsafe { (aio.submit)(ctx, 1, list.as_mut_ptr()) };
    assert_eq!(submitted, 1, "io_submit");
    let mut event = aioctx::ffi::abi::IoEvent::default();
    // SAFETY: room for one event; no timeout (a cached read completes).
    let got = unsafe { (aio.getevents)(ctx, 1, 1, &mut event, std::ptr::null_mut()) };
    assert_eq!((got, event.res), (1, 4096));
    Ok(ctx)
}

/// All children run at once: each one's figures are its own process's.
fn spawn_child(name: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--child", name])
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH")
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
