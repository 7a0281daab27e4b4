//! The io_uring engine: cancel of reads that wait, destroy of a context whose requests
//! never finish on their own, submits that do not wait for the disk, and the choice of
//! engine when io_uring is denied.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use aioctx::engine::probe_all;
use aioctx::{Context, EngineKind, Request, RwFlags, State, Unavailable};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const ECANCELED: i64 = -(libc::ECANCELED as i64);

/// A directory of this test's own under /tmp, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("aioctx-uring-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A FIFO opened for reading and writing: reads wait until something is written.
    fn fifo(&self, name: &str) -> Arc<File> {
        let path = self.path(name);
        let status = Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open fifo");
        Arc::new(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uring(nr_events: u32) -> Context {
    let ctx = Context::builder()
        .depth(nr_events)
        .engine(EngineKind::Uring)
        .build()
        .expect("io_uring context");
    assert_eq!(ctx.engine(), EngineKind::Uring);
    ctx
}

#[test]
fn cancel_of_empty_pipe_read_delivers_ecanceled() {
    let scratch = Scratch::new("cancel-pipe");
    let fifo = scratch.fifo("p");
    let ctx = uring(8);
    let id = ctx
        .submit_one(Request::read(fifo, vec![0u8; 16], 0).data(7))
        .expect("submit");
    assert_eq!(ctx.in_flight(), 1);

    ctx.cancel(id)
        .expect("cancel of an in-flight read is in progress");

    let events = ctx.get_events(1, 8, WAIT).expect("get_events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, 7);
    assert_eq!(events[0].res, ECANCELED);
    assert_eq!(ctx.stats().cancelled, 1);
    assert_eq!(ctx.in_flight(), 0);
}

#[test]
fn cancel_of_a_finished_request_is_einval() {
    let ctx = uring(8);
    let done = ctx.submit_one(Request::noop()).expect("submit");
    ctx.get_events(1, 1, WAIT).expect("get_events");
    let err = ctx.cancel(done).expect_err("nothing in flight");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn cancel_racing_completion_yields_exactly_one_event() {
    let scratch = Scratch::new("cancel-race");
    let fifo = scratch.fifo("p");
    let ctx = uring(8);
    let rounds = 300u64;
    for round in 0..rounds {
        let id = ctx
            .submit_one(Request::read(Arc::clone(&fifo), vec![0u8; 1], 0).data(round))
            .expect("submit");
        let start = Arc::new(Barrier::new(2));
        let writer = {
            let (fifo, start) = (Arc::clone(&fifo), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                (&*fifo).write_all(b"x").expect("write fifo");
            })
        };
        start.wait();
        let cancelled = ctx.cancel(id);
        writer.join().expect("writer");
        if let Err(e) = cancelled {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "round {round}");
        }

        let events = ctx.get_events(1, 8, WAIT).expect("get_events");
        assert_eq!(events.len(), 1, "round {round}");
        assert_eq!(events[0].data, round);
        assert!(
            events[0].res == 1 || events[0].res == ECANCELED,
            "round {round}: res {}",
            events[0].res
        );
        if events[0].res == ECANCELED {
            // The byte the cancelled read did not take is still in the FIFO.
            (&*fifo).read_exact(&mut [0u8; 1]).expect("drain fifo");
        }
    }
    let late = ctx
        .get_events(0, 8, Some(Duration::from_millis(50)))
        .expect("get_events");
    assert!(late.is_empty(), "a second event arrived: {late:?}");
    let stats = ctx.stats();
    assert_eq!(stats.submitted, rounds);
    assert_eq!(stats.completed, rounds);
}

#[test]
fn pipe_read_survives_exit_of_its_submitting_thread() {
    let scratch = Scratch::new("thread-exit");
    let fifo = scratch.fifo("p");
    let ctx = Arc::new(uring(8));
    let submitter = {
        let (ctx, fifo) = (Arc::clone(&ctx), Arc::clone(&fifo));
        std::thread::spawn(move || {
            ctx.submit_one(Request::read(fifo, vec![0u8; 3], 0).data(5))
                .expect("submit");
        })
    };
    submitter.join().expect("submitter");

    (&*fifo).write_all(b"abc").expect("write fifo");
    let mut events = ctx.get_events(1, 1, WAIT).expect("get_events");
    assert_eq!(events[0].data, 5);
    assert_eq!(events[0].res, 3, "the read was cancelled with its thread");
    let buf = events
        .pop()
        .and_then(|e| e.into_buf::<Vec<u8>>())
        .expect("buffer back");
    assert_eq!(&buf[..], b"abc");
}

/// What a thread that exits at once leaves in the kernel: buffered reads of a file not in
/// the page cache (woken when the page is read, to be issued again on the submitting
/// thread, which the kernel refuses once the thread is exiting) and O_DIRECT reads of a
/// file whose pages are dirty (written back first, in the kernel's workers).
struct Leftovers {
    scratch: Scratch,
    cold: File,
    direct: File,
}

const BLOCK: usize = 4096;
const READS: usize = 32;

/// The byte at `offset` of the files `Leftovers` reads.
fn byte_at(offset: usize, seed: u8) -> u8 {
    (offset % 251) as u8 ^ seed
}

impl Leftovers {
    fn new(name: &str) -> Leftovers {
        use std::os::unix::fs::OpenOptionsExt;
        let scratch = Scratch::new(name);
        let pattern: Vec<u8> = (0..READS * BLOCK).map(|i| byte_at(i, 0)).collect();
        write_cold(&scratch.path("cold"), &pattern);
        write_cold(&scratch.path("direct"), &pattern);
        let cold = File::open(scratch.path("cold")).expect("open cold");
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(scratch.path("direct"))
            .expect("open direct");
        Leftovers {
            scratch,
            cold,
            direct,
        }
    }

    /// Readies a round: the cold file out of the page cache, the direct one dirty with
    /// `seed`'s bytes.
    fn prepare(&self, seed: u8) {
        use std::os::unix::fs::FileExt;
        drop_page_cache(&self.scratch.path("cold"));
        let bytes: Vec<u8> = (0..READS * BLOCK).map(|i| byte_at(i, seed)).collect();
        let buffered = OpenOptions::new()
            .write(true)
            .open(self.scratch.path("direct"))
            .expect("open direct buffered");
        buffered.write_all_at(&bytes, 0).expect("dirty the pages");
    }
}

/// Reaps `n` events and checks each is a whole block of the bytes `expected` says.
fn reap_whole_blocks(ctx: &Context, n: usize, expected: impl Fn(u64) -> (usize, u8)) {
    let mut reaped = 0;
    while reaped < n {
        for event in ctx.get_events(1, n - reaped, WAIT).expect("get_events") {
            assert_eq!(event.res, BLOCK as i64, "request {:#x}", event.data);
            let (offset, seed) = expected(event.data);
            let buf = event.into_buf::<aioctx::AlignedBuf>();
            if let Some(buf) = buf {
                for (i, &byte) in buf.iter().enumerate() {
                    assert_eq!(byte, byte_at(offset + i, seed), "request at {offset}");
                }
            }
            reaped += 1;
        }
    }
}

#[test]
fn file_reads_survive_exit_of_their_submitting_thread() {
    let leftovers = Leftovers::new("file-thread-exit");
    let cold = Arc::new(leftovers.cold.try_clone().expect("clone"));
    let direct = Arc::new(leftovers.direct.try_clone().expect("clone"));
    let ctx = Arc::new(uring(2 * READS as u32));
    for round in 1..=8u8 {
        leftovers.prepare(round);
        let submitter = {
            let (ctx, cold, direct) = (Arc::clone(&ctx), Arc::clone(&cold), Arc::clone(&direct));
            std::thread::spawn(move || {
                ctx.batch(|| {
                    for i in 0..READS {
                        let at = (i * BLOCK) as u64;
                        let buf = aioctx::AlignedBuf::page_aligned(BLOCK).expect("buffer");
                        ctx.submit_one(Request::read(Arc::clone(&cold), buf, at).data(at))
                            .expect("submit cold");
                        let buf = aioctx::AlignedBuf::page_aligned(BLOCK).expect("buffer");
                        let read = Request::read(Arc::clone(&direct), buf, at).data(at | 1);
                        ctx.submit_one(read).expect("submit direct");
                    }
                })
            })
        };
        submitter.join().expect("submitter");
        reap_whole_blocks(&ctx, 2 * READS, |data| {
            let seed = if data & 1 == 1 { round } else { 0 };
            ((data & !1) as usize, seed)
        });
    }
}

/// A C caller's read of a regular file, on the number it lends for the submit call, into
/// `buf` (which the caller keeps until the event).
fn lent_read(raw: std::os::fd::RawFd, buf: &mut [u8], offset: usize, data: u64) -> Request {
    use aioctx::ffi::{open_mode_raw, LentFd, RawMem, RawParts};
    // SAFETY: the test keeps `raw` open until the submit call returns.
    let mode = unsafe { open_mode_raw(raw) }.expect("mode");
    Request::from(RawParts {
        opcode: aioctx::Opcode::Pread,
        // SAFETY: as above, and its mode was just learnt.
        fd: Arc::new(unsafe { LentFd::new(raw) }),
        offset: offset as i64,
        // SAFETY: the test keeps `buf` until the request's event was reaped.
        segments: vec![unsafe { RawMem::new(buf.as_mut_ptr(), buf.len()) }],
        poll_events: 0,
        rw_flags: RwFlags::empty(),
        data,
        obj: data,
        resfd: None,
        mode: Some(mode),
        mode_remembered: false,
    })
}

/// Checks the bytes of the lent buffers after the events came.
fn check_lent(bufs: &[aioctx::AlignedBuf], seed_of: impl Fn(usize) -> u8) {
    for (index, buf) in bufs.iter().enumerate() {
        let offset = (index % READS) * BLOCK;
        for (i, &byte) in buf.iter().enumerate() {
            assert_eq!(byte, byte_at(offset + i, seed_of(index)), "buffer {index}");
        }
    }
}

/// A C caller's reads take no copy of its fd (see the engine's module): the kernel resolved
/// the number at submit, and the thread waits for them as it exits.
#[test]
fn reads_on_lent_numbers_survive_exit_of_their_submitting_thread() {
    use std::os::fd::AsRawFd;
    let leftovers = Leftovers::new("lent-thread-exit");
    let ctx = Arc::new(uring(2 * READS as u32));
    for round in 1..=8u8 {
        leftovers.prepare(round);
        let mut bufs: Vec<aioctx::AlignedBuf> = (0..2 * READS)
            .map(|_| aioctx::AlignedBuf::page_aligned(BLOCK).expect("buffer"))
            .collect();
        let requests: Vec<Request> = bufs
            .iter_mut()
            .enumerate()
            .map(|(index, buf)| {
                let file = if index < READS {
                    &leftovers.cold
                } else {
                    &leftovers.direct
                };
                let offset = (index % READS) * BLOCK;
                lent_read(file.as_raw_fd(), buf, offset, index as u64)
            })
            .collect();
        let submitter = {
            let ctx = Arc::clone(&ctx);
            std::thread::spawn(move || {
                ctx.batch(|| {
                    for request in requests {
                        ctx.submit_one(request).expect("submit");
                    }
                })
            })
        };
        submitter.join().expect("submitter");
        reap_whole_blocks(&ctx, 2 * READS, |_| (0, 0));
        check_lent(&bufs, |index| if index < READS { 0 } else { round });
    }
}

/// The number of in-flight O_DIRECT reads on a lent number is made to name another file
/// as soon as submit returned: they read the file it named at submit.
#[test]
fn lent_number_reused_right_after_submit_leaves_reads_on_the_original_file() {
    use std::os::fd::AsRawFd;
    let leftovers = Leftovers::new("lent-reuse");
    leftovers.prepare(7);
    let other = File::open(leftovers.scratch.path("cold")).expect("open other");
    let ctx = uring(READS as u32);
    let mut bufs: Vec<aioctx::AlignedBuf> = (0..READS)
        .map(|_| aioctx::AlignedBuf::page_aligned(BLOCK).expect("buffer"))
        .collect();
    let number = leftovers.direct.as_raw_fd();
    ctx.batch(|| {
        for (index, buf) in bufs.iter_mut().enumerate() {
            let read = lent_read(number, buf, index * BLOCK, index as u64);
            ctx.submit_one(read).expect("submit");
        }
    });
    // SAFETY: both numbers are open; `leftovers.direct` owns `number`, which from here on
    // names the other file (and is closed with it).
    assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), number) }, number);
    reap_whole_blocks(&ctx, READS, |_| (0, 0));
    check_lent(&bufs, |_| 7);
}

#[test]
fn destroy_cancels_and_reaps_128_blocked_pipe_reads() {
    let scratch = Scratch::new("destroy-pipes");
    let fifos: Vec<Arc<File>> = (0..8).map(|i| scratch.fifo(&format!("p{i}"))).collect();
    let ctx = uring(128);
    for i in 0..128u64 {
        let fifo = Arc::clone(&fifos[i as usize % fifos.len()]);
        ctx.submit_one(Request::read(fifo, vec![0u8; 64], 0).data(i))
            .expect("submit");
    }
    assert_eq!(ctx.in_flight(), 128);

    ctx.destroy().expect("first destroy");

    // Every request's CQE was taken (and its buffer handed back) before destroy returned.
    assert_eq!(ctx.state(), State::Dead);
    assert_eq!(ctx.in_flight(), 0);
    let stats = ctx.stats();
    assert_eq!(stats.completed, 128);
    assert_eq!(stats.cancelled, 128);
    // And no request is left to read: what is written now stays in the FIFOs.
    for fifo in &fifos {
        (&**fifo).write_all(&[0xa5; 64]).expect("write fifo");
        let mut back = [0u8; 64];
        (&**fifo).read_exact(&mut back).expect("read fifo");
        assert_eq!(back, [0xa5; 64]);
    }
}

#[test]
fn concurrent_destroyers_and_waiters_return_after_pipe_reads_are_reaped() {
    let scratch = Scratch::new("destroyers");
    let fifo = scratch.fifo("p");
    let ctx = Arc::new(uring(32));
    for i in 0..32u64 {
        ctx.submit_one(Request::read(Arc::clone(&fifo), vec![0u8; 8], 0).data(i))
            .expect("submit");
    }
    let waiter = {
        let ctx = Arc::clone(&ctx);
        std::thread::spawn(move || {
            let woken = ctx.get_events(1, 32, None);
            (
                woken.map(|e| e.len()).map_err(|e| e.raw_os_error()),
                ctx.in_flight(),
            )
        })
    };
    let destroyers: Vec<_> = (0..3)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            std::thread::spawn(move || {
                let result = ctx.destroy().map_err(|e| e.raw_os_error());
                (result, ctx.in_flight(), ctx.stats().completed)
            })
        })
        .collect();
    let results: Vec<_> = destroyers
        .into_iter()
        .map(|d| d.join().expect("destroyer"))
        .collect();
    for (_, in_flight, completed) in &results {
        assert_eq!((*in_flight, *completed), (0, 32), "{results:?}");
    }
    let firsts = results.iter().filter(|(r, _, _)| r.is_ok()).count();
    assert_eq!(firsts, 1, "{results:?}");
    for (result, _, _) in &results {
        assert!(result.is_ok() || *result == Err(Some(libc::EINVAL)));
    }
    // The waiter leaves with the cancelled events it took before it saw the context
    // dying, or EINVAL if it took none.
    let (woken, _) = waiter.join().expect("waiter");
    assert!(
        matches!(woken, Ok(n) if n > 0) || woken == Err(Some(libc::EINVAL)),
        "{woken:?}"
    );
}

#[test]
fn destroy_waits_for_reads_racing_their_completion() {
    let scratch = Scratch::new("destroy-race");
    let path = scratch.path("data");
    std::fs::write(&path, vec![0x5au8; 1 << 20]).expect("write data");
    let file = Arc::new(File::open(&path).expect("open data"));
    let fifo = scratch.fifo("p");
    for round in 0..100u64 {
        let ctx = uring(64);
        for i in 0..48u64 {
            let offset = (i * 4096 + round * 512) % (1 << 20);
            ctx.submit_one(Request::read(Arc::clone(&file), vec![0u8; 4096], offset))
                .expect("submit read");
        }
        for _ in 0..8 {
            ctx.submit_one(Request::read(Arc::clone(&fifo), vec![0u8; 8], 0))
                .expect("submit pipe read");
        }
        ctx.destroy().expect("destroy");
        assert_eq!(ctx.in_flight(), 0, "round {round}");
        assert_eq!(ctx.stats().completed, 56, "round {round}");
    }
}

#[test]
fn cold_buffered_read_does_not_block_submit() {
    const LEN: usize = 32 << 20;
    let scratch = Scratch::new("cold");
    let path = scratch.path("cold");
    let pattern: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    write_cold(&path, &pattern);

    let file = Arc::new(File::open(&path).expect("open"));
    let ctx = uring(8);
    ctx.submit_one(Request::read(file, vec![0u8; LEN], 0).data(1))
        .expect("submit");
    // Reading 32 MiB from the device takes milliseconds; submit returned before.
    assert_eq!(ctx.stats().completed, 0, "submit waited for the disk");
    assert_eq!(ctx.in_flight(), 1);

    let mut events = ctx.get_events(1, 1, WAIT).expect("get_events");
    assert_eq!(events[0].res, LEN as i64);
    let buf = events
        .pop()
        .and_then(|e| e.into_buf::<Vec<u8>>())
        .expect("buffer back");
    assert!(
        buf[..] == pattern[..],
        "data read differs from data written"
    );
}

#[test]
fn nowait_read_of_cold_file_fails_with_eagain() {
    let scratch = Scratch::new("nowait");
    let path = scratch.path("cold");
    write_cold(&path, &vec![1u8; 1 << 20]);

    let file = Arc::new(File::open(&path).expect("open"));
    let ctx = uring(8);
    // The kernel's own attempt starts the readahead it then declines to wait for; a fast
    // disk can finish it before the attempt looks (seen under the suite's parallel load),
    // and the read is served. A read that blocked would be served every time.
    let mut results = Vec::new();
    for _ in 0..5 {
        let read =
            Request::read(Arc::clone(&file), vec![0u8; 1 << 20], 0).rw_flags(RwFlags::NOWAIT);
        ctx.submit_one(read).expect("submit");
        let res = ctx.get_events(1, 1, WAIT).expect("get_events")[0].res;
        if res == -(libc::EAGAIN as i64) {
            return;
        }
        results.push(res);
        drop_page_cache(&path);
    }
    panic!("no RWF_NOWAIT read of the cold file failed EAGAIN: {results:?}");
}

#[test]
fn hipri_read_is_accepted_and_reads() {
    let ctx = uring(8);
    let file = Arc::new(File::open("/proc/self/exe").expect("open self"));
    let read = Request::read(file, vec![0u8; 4], 0).rw_flags(RwFlags::HIPRI);
    ctx.submit_one(read).expect("submit");
    let events = ctx.get_events(1, 1, WAIT).expect("get_events");
    assert_eq!(events[0].res, 4);
}

/// Writes `data` (a multiple of 4 KiB) to a new file at `path` with O_DIRECT, so none of it
/// passes through the page cache, and drops whatever pages the file has anyway.
fn write_cold(path: &Path, data: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("create with O_DIRECT");
    let mut chunk = aioctx::AlignedBuf::page_aligned(1 << 20).expect("aligned buffer");
    for piece in data.chunks(1 << 20) {
        chunk[..piece.len()].copy_from_slice(piece);
        file.write_all(&chunk[..piece.len()]).expect("direct write");
    }
    file.sync_all().expect("fsync");
    drop_page_cache(path);
}

/// Drops `path`'s pages from the page cache: `dd iflag=nocache count=0` is
/// posix_fadvise(POSIX_FADV_DONTNEED) over the whole file.
fn drop_page_cache(path: &Path) {
    let status = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .expect("run dd");
    assert!(status.success(), "dd iflag=nocache");
}

/// Set for the child run under the seccomp filter: the filter's mode (`seccomp_exec.c`).
const EXPECT_DENIED: &str = "AIOCTX_TEST_EXPECT_URING_DENIED";

/// Runs in the normal suite and, under a seccomp filter that denies io_uring_setup (by
/// EPERM or by SIGSYS, and io_setup too for `kill-aio`), as the child of the
/// `auto_falls_back_*` tests: the probes neither die nor let the process die.
#[test]
fn auto_explains_every_engine_it_skips() {
    let probes = probe_all();
    assert_eq!(
        probes.iter().map(|p| p.kind).collect::<Vec<_>>(),
        EngineKind::ALL
    );
    for probe in &probes {
        match &probe.result {
            Ok(()) => println!("probe {}: available", probe.kind),
            Err(reason) => println!("probe {}: {reason}", probe.kind),
        }
    }
    let best = probes
        .iter()
        .find(|p| p.available())
        .expect("an engine works");
    if let Ok(mode) = std::env::var(EXPECT_DENIED) {
        let (uring, kaio) = (&probes[0], &probes[1]);
        assert_eq!(
            (uring.kind, kaio.kind),
            (EngineKind::Uring, EngineKind::Kaio)
        );
        let reason = uring.result.as_ref().expect_err("io_uring is denied");
        println!("io_uring denied: {reason}");
        if mode == "eperm" {
            assert_eq!(*reason, Unavailable::Seccomp { killed: false });
            let text = reason.to_string();
            assert!(text.contains("EPERM") && text.contains("seccomp"), "{text}");
        } else {
            assert_eq!(*reason, Unavailable::Seccomp { killed: true });
            assert!(reason.to_string().contains("SIGSYS"), "{reason}");
            // Asked for by name, the engine is refused, not set up: the process lives.
            let Err(err) = Context::builder()
                .depth(8)
                .engine(EngineKind::Uring)
                .build()
            else {
                panic!("uring set up under a filter that kills io_uring_setup");
            };
            assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        }
        if mode == "kill-aio" {
            assert_eq!(kaio.result, Err(Unavailable::Seccomp { killed: true }));
            assert_eq!(best.kind, EngineKind::Threads);
        } else {
            // Docker's default profile allows the AIO syscalls: kernel AIO is next in line.
            assert_eq!(best.kind, EngineKind::Kaio);
        }
    }

    let ctx = Context::builder()
        .depth(8)
        .engine(EngineKind::Auto)
        .build()
        .expect("auto context");
    assert_eq!(ctx.engine(), best.kind);
    // What auto passed over is what did not probe well, with the same reasons.
    let passed_over: Vec<_> = probes
        .iter()
        .take_while(|p| !p.available())
        .cloned()
        .collect();
    assert_eq!(ctx.skipped_engines(), &passed_over[..]);
    println!("auto chose {}", ctx.engine());
    let file = Arc::new(File::open("/proc/self/exe").expect("open self"));
    ctx.submit_one(Request::read(file, vec![0u8; 4], 0).data(1))
        .expect("submit read");
    ctx.submit_one(Request::noop().data(2))
        .expect("submit noop");
    let mut events = ctx.get_events(2, 2, WAIT).expect("get_events");
    events.sort_by_key(|e| e.data);
    assert_eq!(events[0].res, 4);
    assert_eq!(events[1].res, 0);
    let magic = events.remove(0).into_buf::<Vec<u8>>().expect("buffer back");
    assert_eq!(&magic[..], b"\x7fELF");
}

/// Runs `auto_explains_every_engine_it_skips` in a child under a seccomp filter in `mode`
/// (`seccomp_exec.c`); the child's output, once it passed.
fn run_under_seccomp(mode: &str) -> String {
    let scratch = Scratch::new(&format!("seccomp-{mode}"));
    let helper = scratch.path("seccomp_exec");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/seccomp_exec.c");
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&helper)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(built.success(), "cc {}", source.display());

    let me = std::env::current_exe().expect("test binary");
    let out = Command::new(&helper)
        .arg(mode)
        .arg(&me)
        .args([
            "--exact",
            "auto_explains_every_engine_it_skips",
            "--nocapture",
        ])
        .env(EXPECT_DENIED, mode)
        .env_remove("AIOCTX_ENGINE")
        .output()
        .expect("run child under seccomp");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child under seccomp {mode} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    assert!(stdout.contains("seccomp"), "no reason given:\n{stdout}");
    stdout
}

#[test]
fn auto_falls_back_to_kaio_when_seccomp_denies_io_uring() {
    let stdout = run_under_seccomp("eperm");
    assert!(stdout.contains("auto chose kaio"), "{stdout}");
}

/// SECCOMP_RET_KILL_PROCESS on io_uring_setup: the probe's child dies, the process lives.
#[test]
fn auto_falls_back_to_kaio_when_seccomp_kills_io_uring_setup() {
    let stdout = run_under_seccomp("kill");
    assert!(stdout.contains("SIGSYS"), "{stdout}");
    assert!(stdout.contains("auto chose kaio"), "{stdout}");
}

/// SECCOMP_RET_TRAP (a SIGSYS to the caller, as Android's policy sends).
#[test]
fn auto_falls_back_to_kaio_when_seccomp_traps_io_uring_setup() {
    let stdout = run_under_seccomp("trap");
    assert!(stdout.contains("SIGSYS"), "{stdout}");
    assert!(stdout.contains("auto chose kaio"), "{stdout}");
}

/// A filter that kills on io_setup too: both probed in children, the thread pool is left.
#[test]
fn auto_falls_back_to_threads_when_seccomp_kills_both_setups() {
    let stdout = run_under_seccomp("kill-aio");
    assert!(stdout.contains("auto chose threads"), "{stdout}");
}

/// Set for the child of `auto_falls_through_when_io_uring_setup_fails_emfile`.
const NOFILE_CHILD: &str = "AIOCTX_TEST_NOFILE_CHILD";

/// An engine that probed well but cannot be set up for this context, for a reason that is
/// neither ENOSYS nor EPERM (here EMFILE: no descriptor can be made for the ring), gives
/// way to the next under auto, and the context says why. Run in a child process, since
/// the descriptor limit is the process's.
#[test]
fn auto_falls_through_when_io_uring_setup_fails_emfile() {
    const NAME: &str = "auto_falls_through_when_io_uring_setup_fails_emfile";
    if std::env::var_os(NOFILE_CHILD).is_none() {
        let me = std::env::current_exe().expect("test binary");
        let out = Command::new(me)
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(NOFILE_CHILD, "1")
            .env_remove("AIOCTX_ENGINE")
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
        assert!(stdout.contains("auto chose"), "{stdout}");
        return;
    }
    // Probed with descriptors to spare: io_uring works here.
    assert_eq!(probe_all()[0].result, Ok(()));
    let file = Arc::new(File::open("/proc/self/exe").expect("open self"));
    // Every descriptor below a low limit taken: none can be made.
    let limit = 64;
    let saved = set_nofile(limit);
    let mut hold = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        hold.push(f);
    }
    let built = Context::builder().depth(8).engine(EngineKind::Auto).build();
    drop(hold);
    set_nofile(saved);
    let ctx = built.expect("auto context without descriptors");
    assert_ne!(ctx.engine(), EngineKind::Uring);
    let skipped = ctx.skipped_engines();
    assert_eq!(skipped[0].kind, EngineKind::Uring);
    assert_eq!(skipped[0].result, Err(Unavailable::Other(libc::EMFILE)));
    println!(
        "auto chose {} ({}: {})",
        ctx.engine(),
        skipped[0].kind,
        skipped[0].result.as_ref().unwrap_err()
    );
    ctx.submit_one(Request::read(file, vec![0u8; 4], 0).data(1))
        .expect("submit read");
    let mut events = ctx.get_events(1, 1, WAIT).expect("get_events");
    assert_eq!(events[0].res, 4);
    let magic = events.remove(0).into_buf::<Vec<u8>>().expect("buffer back");
    assert_eq!(&magic[..], b"\x7fELF");
}

/// Sets RLIMIT_NOFILE's soft limit; the one it had.
fn set_nofile(soft: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one live local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let old = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        old
    }
}

/// Waits until the ring's tail moves past `tail` (the event was posted), for at most `limit`.
fn posted_within(ctx: &Context, tail: u32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if ctx.ring_header().tail != tail {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// A program that reaped through get_events and then stops calling (it reads the ring, or
/// waits elsewhere) still sees its completions posted, without any call into the library.
#[test]
fn completions_are_posted_after_the_program_stops_calling_get_events() {
    let scratch = Scratch::new("stops-reaping");
    let fifo = scratch.fifo("p");
    let ctx = uring(8);
    ctx.submit_one(Request::noop().data(1))
        .expect("submit noop");
    assert_eq!(ctx.get_events(1, 1, WAIT).expect("get_events").len(), 1);

    ctx.submit_one(Request::read(Arc::clone(&fifo), vec![0u8; 1], 0).data(2))
        .expect("submit read");
    let tail = ctx.ring_header().tail;
    (&*fifo).write_all(b"x").expect("write fifo");
    assert!(
        posted_within(&ctx, tail, Duration::from_secs(5)),
        "the read's event reached the ring with nobody in get_events"
    );
    assert_eq!(ctx.stats().completed, 2);
}

/// More requests than an instance's submission queue holds, submitted in one batch, then
/// destroyed: the full submission queue is entered and retried (nothing dropped), and the
/// cancels' and reads' CQEs, more than the completion queue holds, are all taken (the
/// kernel keeps the overflow until an enter flushes it).
#[test]
fn destroy_of_more_requests_than_the_queues_hold_cancels_them_all() {
    const READS: u64 = 10_000;
    let scratch = Scratch::new("overflow");
    let fifo = scratch.fifo("p");
    let ctx = uring(READS as u32);
    let mut batch: Vec<Request> = (0..READS)
        .map(|i| Request::read(Arc::clone(&fifo), vec![0u8; 8], 0).data(i))
        .collect();
    assert_eq!(
        ctx.submit(&mut batch).expect("submit").len(),
        READS as usize
    );
    assert_eq!(ctx.in_flight(), READS as usize);

    ctx.destroy().expect("destroy");
    let stats = ctx.stats();
    assert_eq!((stats.completed, stats.cancelled), (READS, READS));
    // None of them is left to read: what is written now stays in the FIFO.
    (&*fifo).write_all(&[0x5a; 8]).expect("write fifo");
    let mut back = [0u8; 8];
    (&*fifo).read_exact(&mut back).expect("read fifo");
    assert_eq!(back, [0x5a; 8]);
}

/// More CQEs at once than an instance's completion queue holds, taken by a program that
/// reaps through get_events (so the reaper only naps): the CQEs the kernel keeps aside are
/// flushed and delivered, none lost.
#[test]
fn polls_firing_beyond_the_completion_queue_are_all_reaped_by_get_events() {
    const POLLS: usize = 10_000;
    let scratch = Scratch::new("cq-overflow");
    let fifo = scratch.fifo("p");
    let ctx = uring(POLLS as u32);
    let mut batch: Vec<Request> = (0..POLLS)
        .map(|i| Request::poll(Arc::clone(&fifo), libc::POLLIN as u16).data(i as u64))
        .collect();
    assert_eq!(ctx.submit(&mut batch).expect("submit").len(), POLLS);
    assert!(ctx
        .get_events(0, POLLS, Some(Duration::ZERO))
        .expect("get_events")
        .is_empty());

    (&*fifo).write_all(b"x").expect("write fifo");
    let mut reaped = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reaped < POLLS && std::time::Instant::now() < deadline {
        let events = ctx
            .get_events(1, POLLS, Some(Duration::from_millis(100)))
            .expect("get_events");
        assert!(events.iter().all(|e| e.res & i64::from(libc::POLLIN) != 0));
        reaped += events.len();
    }
    assert_eq!(reaped, POLLS, "every poll's event was delivered");
}

/// Regression (stress crash: double frees of requests): the check whether a batch left
/// SQEs to hand in wrote its snapshot of the SQ tail back after it had let go of the
/// submission lock, so with batches submitted from several threads the tail went behind
/// the kernel's head: SQEs pushed in between were never handed in, and the next enter ran
/// old ones again, completing freed requests a second time. Each request must complete
/// exactly once (a request that never does stops the test after `STUCK` without progress).
#[test]
fn batches_submitted_from_many_threads_complete_each_request_once() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    const SUBMITTERS: u64 = 4;
    const BATCHES: u64 = 20_000;
    const STUCK: Duration = Duration::from_secs(30);
    let ctx = uring(256);
    let seen: Mutex<HashMap<u64, u32>> = Mutex::new(HashMap::new());
    let accepted = AtomicU64::new(0);
    let submitting = AtomicBool::new(true);
    let stuck = AtomicBool::new(false);
    let last_event = Mutex::new(Instant::now());
    let reap = || {
        let events = ctx
            .get_events(1, 64, Some(Duration::from_millis(5)))
            .unwrap();
        if events.is_empty() {
            if last_event.lock().unwrap().elapsed() > STUCK {
                stuck.store(true, Ordering::SeqCst);
            }
            return;
        }
        *last_event.lock().unwrap() = Instant::now();
        let mut seen = seen.lock().unwrap();
        for event in events {
            *seen.entry(event.data).or_insert(0) += 1;
        }
    };
    std::thread::scope(|s| {
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let (ctx, accepted, stuck) = (&ctx, &accepted, &stuck);
                s.spawn(move || {
                    for b in 0..BATCHES {
                        let tag = (t * BATCHES + b) * 4;
                        let mut batch: Vec<Request> = (0..1 + b % 4)
                            .map(|i| Request::noop().data(tag + i))
                            .collect();
                        while !batch.is_empty() && !stuck.load(Ordering::SeqCst) {
                            match ctx.submit(&mut batch) {
                                Ok(ids) => {
                                    accepted.fetch_add(ids.len() as u64, Ordering::Relaxed);
                                }
                                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                                    std::thread::yield_now()
                                }
                                Err(e) => panic!("submit: {e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        let reaper = s.spawn(|| {
            while submitting.load(Ordering::SeqCst) && !stuck.load(Ordering::SeqCst) {
                reap();
            }
        });
        for submitter in submitters {
            submitter.join().unwrap();
        }
        submitting.store(false, Ordering::SeqCst);
        reaper.join().unwrap();
    });
    while (seen.lock().unwrap().len() as u64) < accepted.load(Ordering::Relaxed)
        && !stuck.load(Ordering::SeqCst)
    {
        reap();
    }
    let seen = seen.into_inner().unwrap();
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        twice.is_empty(),
        "requests with more than one event: {twice:?}"
    );
    assert_eq!(
        seen.len() as u64,
        accepted.load(Ordering::Relaxed),
        "accepted requests that never completed"
    );
    assert_eq!(ctx.in_flight(), 0);
}
