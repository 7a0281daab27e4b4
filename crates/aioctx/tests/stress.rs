//! Stress of the concurrent paths, on every engine, bounded in time (`AIOCTX_STRESS_SECONDS`
//! per engine, default 20; `scripts/stress` runs it longer).
//!
//! Over many short-lived contexts, each round runs at once: submitters of reads and writes
//! of known patterns at distinct offsets (O_DIRECT and buffered), reads into shared memory
//! the test keeps (the canary), pipe and socket reads, polls, fsyncs and no-ops; reapers; a
//! canceller of random in-flight requests; a feeder of the pipes and sockets; and several
//! destroyers. What is checked, per request identity (its `data` tag):
//! - every accepted request has exactly one event or was discarded by destroy, never two;
//!   a refused one has none;
//! - no get_events that starts after destroy returned delivers anything, and no engine
//!   writes into the shared memory after destroy returned (canaries, checked later);
//! - every completed read returns the pattern, every completed write is on disk;
//! - of the concurrent destroyers exactly one returns `Ok`, the others `EINVAL`, and none
//!   returns while a request is in flight or while the context still holds a file or
//!   memory of the caller.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use aioctx::{
    AlignedBuf, Completion, Context, EngineKind, Request, RequestId, SharedMem, SimConfig,
};
use common::*;

const BLOCK: usize = 4096;
/// The pattern file read by the stress: byte i is `pattern(i)`.
const READ_FILE_BLOCKS: usize = 1024;
/// Blocks of the write file: each write of a round takes the next one.
const WRITE_BLOCKS: usize = 512;
/// Where in the write file buffered writes go (direct ones from 0): apart by more than the
/// largest folio (2 MiB), so that no page of the page cache ever covers a block written
/// with O_DIRECT. Where one does, the kernel fails the direct write's page-cache
/// invalidation, warns "Page cache invalidation failure on direct I/O" and reports EIO to
/// the next fsync of the file, as it does under the kernel's own AIO.
const BUFFERED_WRITES_AT: usize = WRITE_BLOCKS * BLOCK + (4 << 20);
/// Blocks of shared memory each round reads into and paints with the canary after destroy.
const SHARED_BLOCKS: usize = 16;
const CANARY: u64 = 0xc3c3_c3c3_c3c3_c3c3;
const PIPE_BYTE: u8 = 0xa5;
const SOCKET_BYTE: u8 = 0x5c;
const SUBMITTERS: usize = 3;
const REAPERS: usize = 2;
const DESTROYERS: usize = 3;
/// A round that has not finished after this long has hung (destroy waits forever, or an
/// event never comes): the test says so and fails instead of hanging CI.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

fn stress_seconds() -> f64 {
    std::env::var("AIOCTX_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(20.0)
}

/// A small, seeded generator: rounds are reproducible in what they choose.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The bytes a write with this tag puts in its block.
fn write_pattern(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(31).wrapping_add(i as u64 / 7) % 253) as u8)
        .collect()
}

/// What a request was, for checking its event.
#[derive(Clone, Debug)]
enum Kind {
    Read { offset: usize, len: usize },
    Write { at: usize, len: usize, direct: bool },
    SharedRead,
    Fsync,
    Pipe,
    Socket,
    Poll,
    Noop,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// None while submit has not answered yet, then whether it accepted the request.
    accepted: Option<bool>,
    events: u32,
    cancels_accepted: u32,
}

/// Files every round of one engine's stress shares.
struct Files {
    read: Arc<File>,
    read_direct: Arc<File>,
    write: Arc<File>,
    write_direct: Arc<File>,
    _read_file: TempFile,
    _write_file: TempFile,
}

impl Files {
    fn new() -> Files {
        let read_file = temp_file(READ_FILE_BLOCKS * BLOCK);
        let write_file = temp_file(0);
        File::options()
            .write(true)
            .open(&write_file.path)
            .unwrap()
            .set_len((BUFFERED_WRITES_AT + WRITE_BLOCKS * BLOCK) as u64)
            .unwrap();
        Files {
            read: open(&read_file, true, false),
            read_direct: open_direct(&read_file),
            write: open(&write_file, true, true),
            write_direct: open_direct(&write_file),
            _read_file: read_file,
            _write_file: write_file,
        }
    }

    fn strong_counts(&self) -> [usize; 4] {
        [
            Arc::strong_count(&self.read),
            Arc::strong_count(&self.read_direct),
            Arc::strong_count(&self.write),
            Arc::strong_count(&self.write_direct),
        ]
    }
}

/// The totals of one engine's run, printed at the end.
#[derive(Default, Debug)]
struct Totals {
    contexts: u64,
    accepted: u64,
    refused: u64,
    events: u64,
    discarded: u64,
    cancels_accepted: u64,
    /// Requests whose cancel was accepted more than once (SPEC: at most once).
    cancelled_twice: u64,
    cancelled_events: u64,
    faults: u64,
    duplicates: u64,
    late_writes: u64,
    /// Contexts whose requests still held a file or shared memory after all joined.
    held_after_destroy: u64,
    /// What they held, for the first few.
    held_details: Vec<String>,
    violations: Violations,
}

/// Violations: every one counted, and the full text of the first few kept, so that no
/// report ever says "1 violation" without saying which.
#[derive(Default, Debug)]
struct Violations {
    count: u64,
    first: Vec<String>,
}

impl Violations {
    /// How many texts are kept (per round, and in all).
    const KEPT: usize = 20;

    fn add(&mut self, what: String) {
        self.count += 1;
        if self.first.len() < Self::KEPT {
            self.first.push(what);
        }
    }
}

/// Everything the threads of one round share.
struct Round<'a> {
    engine: EngineKind,
    ctx: Context,
    files: &'a Files,
    pipe: Arc<File>,
    pipe_writer: File,
    socket: Arc<File>,
    socket_writer: UnixStream,
    shared: Arc<SharedMem>,
    entries: Mutex<HashMap<u64, Entry>>,
    /// Tags accepted and not yet seen complete, for the canceller to pick from.
    candidates: Mutex<Vec<(u64, RequestId)>>,
    next_tag: AtomicU64,
    next_block: AtomicUsize,
    destroying: AtomicBool,
    destroyed: AtomicBool,
    violations: Mutex<Violations>,
    faults: AtomicU64,
    cancelled_events: AtomicU64,
    destroy_results: Mutex<Vec<Option<i32>>>,
}

impl Round<'_> {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().add(what);
    }

    fn make_request(&self, rng: &mut XorShift, tag: u64) -> (Kind, Request) {
        let direct = rng.below(2) == 0;
        match rng.below(16) {
            0..=4 => {
                let (offset, len, buf): (usize, usize, AlignedBuf) = if direct {
                    let len = BLOCK * (1 + rng.below(2));
                    let offset = BLOCK * rng.below(READ_FILE_BLOCKS - 2);
                    (offset, len, AlignedBuf::page_aligned(len).unwrap())
                } else {
                    let len = 1 + rng.below(2 * BLOCK);
                    let offset = rng.below((READ_FILE_BLOCKS - 2) * BLOCK);
                    (offset, len, AlignedBuf::new(len, 1).unwrap())
                };
                let file = if direct {
                    &self.files.read_direct
                } else {
                    &self.files.read
                };
                let request = Request::read(file.clone(), buf, offset as u64);
                (Kind::Read { offset, len }, request)
            }
            5..=7 => {
                let block = self.next_block.fetch_add(1, Ordering::Relaxed);
                if block >= WRITE_BLOCKS {
                    return (Kind::Noop, Request::noop());
                }
                let len = if direct { BLOCK } else { 1 + rng.below(BLOCK) };
                let data = write_pattern(tag, len);
                let at = block * BLOCK + if direct { 0 } else { BUFFERED_WRITES_AT };
                let request = if direct {
                    let mut aligned = AlignedBuf::page_aligned(BLOCK).unwrap();
                    aligned.copy_from_slice(&data);
                    Request::write(self.files.write_direct.clone(), aligned, at as u64)
                } else {
                    Request::write(self.files.write.clone(), data, at as u64)
                };
                (Kind::Write { at, len, direct }, request)
            }
            8..=9 => {
                let block = rng.below(SHARED_BLOCKS);
                let range = block * BLOCK..(block + 1) * BLOCK;
                let offset = (BLOCK * rng.below(READ_FILE_BLOCKS)) as u64;
                let file = if direct {
                    &self.files.read_direct
                } else {
                    &self.files.read
                };
                let request = Request::read_shared(file.clone(), &self.shared, range, offset)
                    .expect("range inside shared memory");
                (Kind::SharedRead, request)
            }
            10 => (Kind::Fsync, Request::fsync(self.files.write.clone())),
            11 => (
                Kind::Pipe,
                Request::read(self.pipe.clone(), vec![0u8; 1 + rng.below(512)], 0),
            ),
            12 => (
                Kind::Socket,
                Request::read(self.socket.clone(), vec![0u8; 1 + rng.below(512)], 0),
            ),
            13 => (
                Kind::Poll,
                Request::poll(self.pipe.clone(), libc::POLLIN as u16),
            ),
            _ => (Kind::Noop, Request::noop()),
        }
    }

    fn submitter(&self, seed: u64) {
        let mut rng = XorShift::new(seed);
        loop {
            let dead_before = self.destroyed.load(Ordering::SeqCst);
            let count = 1 + rng.below(4);
            let mut batch = Vec::with_capacity(count);
            let mut tags = Vec::with_capacity(count);
            {
                let mut entries = self.entries.lock().unwrap();
                for _ in 0..count {
                    let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
                    let (kind, request) = self.make_request(&mut rng, tag);
                    entries.insert(
                        tag,
                        Entry {
                            kind,
                            accepted: None,
                            events: 0,
                            cancels_accepted: 0,
                        },
                    );
                    batch.push(request.data(tag));
                    tags.push(tag);
                }
            }
            let result = self.ctx.submit(&mut batch);
            let ids = result.as_ref().map_or(&[][..], Vec::as_slice);
            let accepted = ids.len();
            {
                let mut entries = self.entries.lock().unwrap();
                for (i, tag) in tags.iter().enumerate() {
                    entries.get_mut(tag).unwrap().accepted = Some(i < accepted);
                }
            }
            self.candidates
                .lock()
                .unwrap()
                .extend(tags.iter().copied().zip(ids.iter().copied()));
            match result {
                Ok(_) if dead_before => {
                    self.violation(format!("submit accepted {accepted} after destroy returned"));
                    return;
                }
                Ok(_) => {}
                Err(e) if errno_of(&e) == libc::EAGAIN => std::thread::yield_now(),
                Err(e) if errno_of(&e) == libc::EINVAL => {
                    if !self.destroying.load(Ordering::SeqCst) {
                        self.violation(format!("submit EINVAL on a live context: {e}"));
                    }
                    return;
                }
                Err(e) => {
                    self.violation(format!("submit failed: {e}"));
                    return;
                }
            }
        }
    }

    fn reaper(&self) {
        loop {
            let dead_before = self.destroyed.load(Ordering::SeqCst);
            match self.ctx.get_events(1, 16, Some(Duration::from_millis(20))) {
                Ok(events) => {
                    if dead_before && !events.is_empty() {
                        self.violation(format!(
                            "{} events delivered by a get_events begun after destroy returned",
                            events.len()
                        ));
                    }
                    for event in events {
                        self.check_event(event);
                    }
                }
                Err(e) if errno_of(&e) == libc::EINVAL => {
                    if !self.destroying.load(Ordering::SeqCst) {
                        self.violation(format!("get_events EINVAL on a live context: {e}"));
                    }
                    return;
                }
                Err(e) if errno_of(&e) == libc::EINTR => {}
                Err(e) => {
                    self.violation(format!("get_events failed: {e}"));
                    return;
                }
            }
        }
    }

    fn check_event(&self, event: Completion) {
        let kind = {
            let mut entries = self.entries.lock().unwrap();
            let Some(entry) = entries.get_mut(&event.data) else {
                return self.violation(format!("event for unknown tag {}", event.data));
            };
            entry.events += 1;
            if entry.events > 1 {
                return self.violation(format!("second event for tag {}", event.data));
            }
            if entry.accepted == Some(false) {
                return self.violation(format!("event for refused tag {}", event.data));
            }
            entry.kind.clone()
        };
        if let Err(what) = self.check_result(&kind, event) {
            self.violation(what);
        }
    }

    /// Whether `res` is an error the engine may give this request (a cancel on every
    /// engine; injected faults on the simulator).
    fn allowed_error(&self, kind: &Kind, res: i64) -> bool {
        let errno = (-res) as i32;
        if errno == libc::ECANCELED {
            self.cancelled_events.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let injected = self.engine == EngineKind::Sim
            && (errno == libc::EIO
                || (errno == libc::ENOSPC && matches!(kind, Kind::Write { .. })));
        if injected {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
        injected
    }

    /// A short transfer is an injected fault on the simulator, a bug elsewhere (the stress
    /// never reads past the end of a file).
    fn allowed_short(&self, got: usize, wanted: usize) -> bool {
        if got == wanted {
            return true;
        }
        let injected = self.engine == EngineKind::Sim && got < wanted;
        if injected {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
        injected
    }

    fn check_result(&self, kind: &Kind, event: Completion) -> Result<(), String> {
        let (tag, res) = (event.data, event.res);
        if res < 0 {
            return if self.allowed_error(kind, res) {
                Ok(())
            } else {
                Err(format!("tag {tag} ({kind:?}) failed with {res}"))
            };
        }
        let n = res as usize;
        match kind {
            Kind::Read { offset, len } => {
                if !self.allowed_short(n, *len) {
                    return Err(format!("tag {tag}: read {n} of {len} bytes"));
                }
                let buf = event
                    .into_buf::<AlignedBuf>()
                    .ok_or("read without its buffer")?;
                let wrong = (0..n).find(|&i| buf[i] != pattern(offset + i));
                match wrong {
                    Some(i) => Err(format!("tag {tag}: read byte {i} at {offset} is wrong")),
                    None => Ok(()),
                }
            }
            Kind::Write { at, len, direct } => {
                if !self.allowed_short(n, *len) {
                    return Err(format!("tag {tag}: wrote {n} of {len} bytes"));
                }
                // Read back the way it was written (see BUFFERED_WRITES_AT).
                let mut on_disk = AlignedBuf::page_aligned(BLOCK).unwrap();
                let file = if *direct {
                    &self.files.write_direct
                } else {
                    &self.files.write
                };
                file.read_exact_at(&mut on_disk[..], *at as u64)
                    .map_err(|e| e.to_string())?;
                if on_disk[..n] == write_pattern(tag, *len)[..n] {
                    Ok(())
                } else {
                    Err(format!(
                        "tag {tag}: the write at {at} is not on disk as written"
                    ))
                }
            }
            Kind::SharedRead => match self.allowed_short(n, BLOCK) {
                true => Ok(()),
                false => Err(format!("tag {tag}: shared read of {n} bytes")),
            },
            Kind::Pipe | Kind::Socket => {
                let byte = if matches!(kind, Kind::Pipe) {
                    PIPE_BYTE
                } else {
                    SOCKET_BYTE
                };
                let buf = event
                    .into_buf::<Vec<u8>>()
                    .ok_or("read without its buffer")?;
                if n == 0 || n > buf.len() || buf[..n].iter().any(|&b| b != byte) {
                    Err(format!(
                        "tag {tag}: {kind:?} read {n} bytes, not the peer's"
                    ))
                } else {
                    Ok(())
                }
            }
            Kind::Poll => match res as i16 & libc::POLLIN != 0 {
                true => Ok(()),
                false => Err(format!("tag {tag}: poll ready with mask {res:#x}")),
            },
            Kind::Fsync | Kind::Noop => match res {
                0 => Ok(()),
                _ => Err(format!("tag {tag}: {kind:?} returned {res}")),
            },
        }
    }

    fn canceller(&self, seed: u64) {
        let mut rng = XorShift::new(seed);
        while !self.destroyed.load(Ordering::SeqCst) {
            let tag = {
                let mut candidates = self.candidates.lock().unwrap();
                if candidates.is_empty() {
                    None
                } else {
                    // Half the time the tag stays a candidate: a request is cancelled again.
                    let i = rng.below(candidates.len());
                    match rng.below(2) {
                        0 => Some(candidates.swap_remove(i)),
                        _ => Some(candidates[i]),
                    }
                }
            };
            let Some((tag, id)) = tag else {
                std::thread::yield_now();
                continue;
            };
            let dead_before = self.destroyed.load(Ordering::SeqCst);
            match self.ctx.cancel(id) {
                Ok(()) if dead_before => {
                    self.violation(format!("cancel of {tag} accepted after destroy returned"))
                }
                Ok(()) => {
                    let mut entries = self.entries.lock().unwrap();
                    entries.get_mut(&tag).unwrap().cancels_accepted += 1;
                }
                Err(e) if errno_of(&e) == libc::EINVAL => {}
                Err(e) => self.violation(format!("cancel of {tag} failed: {e}")),
            }
        }
    }

    /// Writes into the pipe and the socket now and then, and all the time once destroy
    /// began: the reads there always become ready (destroy waits for a transfer a worker
    /// has begun on some engines).
    fn feeder(&self, seed: u64) {
        let mut rng = XorShift::new(seed);
        let chunk_pipe = [PIPE_BYTE; 512];
        let chunk_socket = [SOCKET_BYTE; 512];
        while !self.destroyed.load(Ordering::SeqCst) {
            let _ = (&self.pipe_writer).write(&chunk_pipe);
            let _ = (&self.socket_writer).write(&chunk_socket);
            let pause = if self.destroying.load(Ordering::SeqCst) {
                100
            } else {
                200 + rng.below(3000) as u64
            };
            std::thread::sleep(Duration::from_micros(pause));
        }
    }

    fn destroyer(&self, index: usize, delay: Duration, barrier: &Barrier) {
        if index == 0 {
            std::thread::sleep(delay);
            self.destroying.store(true, Ordering::SeqCst);
        }
        barrier.wait();
        let result = self.ctx.destroy();
        let in_flight = self.ctx.in_flight();
        // Painted at once: an engine writing into it from now on leaves a mark.
        for word in self.shared.words() {
            word.store(CANARY, Ordering::Relaxed);
        }
        self.destroyed.store(true, Ordering::SeqCst);
        if in_flight != 0 {
            self.violation(format!(
                "destroy returned with {in_flight} requests in flight"
            ));
        }
        self.destroy_results
            .lock()
            .unwrap()
            .push(result.err().map(|e| errno_of(&e)));
    }
}

fn context(engine: EngineKind, nr: u32, seed: u64) -> Context {
    if engine == EngineKind::Sim {
        let config = SimConfig {
            seed,
            eio: 0.01,
            enospc: 0.01,
            short: 0.01,
            min_delay: Duration::from_micros(10),
            max_delay: Duration::from_millis(2),
            ..SimConfig::default()
        };
        Context::builder()
            .depth(nr)
            .simulator(config)
            .build()
            .expect("simulated context")
    } else {
        Context::builder()
            .depth(nr)
            .engine(engine)
            .build()
            .expect("context")
    }
}

fn nonblocking_pipe() -> (Arc<File>, File) {
    let (reader, writer) = pipe();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&writer);
    // SAFETY: F_SETFL on a descriptor this function owns.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(ret, 0);
    (reader, writer)
}

fn run_round(engine: EngineKind, files: &Files, seed: u64, totals: &mut Totals) -> Arc<SharedMem> {
    let mut rng = XorShift::new(seed);
    let nr = [4, 16, 64, 256][rng.below(4)];
    let (pipe, pipe_writer) = nonblocking_pipe();
    let (socket, socket_writer) = UnixStream::pair().unwrap();
    socket_writer.set_nonblocking(true).unwrap();
    let socket = Arc::new(File::from(OwnedFd::from(socket)));
    let baseline = files.strong_counts();
    let round = Round {
        engine,
        ctx: context(engine, nr, seed),
        files,
        pipe,
        pipe_writer,
        socket,
        socket_writer,
        shared: Arc::new(SharedMem::map(SHARED_BLOCKS * BLOCK).unwrap()),
        entries: Mutex::new(HashMap::new()),
        candidates: Mutex::new(Vec::new()),
        next_tag: AtomicU64::new(seed << 24),
        next_block: AtomicUsize::new(0),
        destroying: AtomicBool::new(false),
        destroyed: AtomicBool::new(false),
        violations: Mutex::new(Violations::default()),
        faults: AtomicU64::new(0),
        cancelled_events: AtomicU64::new(0),
        destroy_results: Mutex::new(Vec::new()),
    };
    let delay = Duration::from_micros(500 + rng.below(30_000) as u64);
    let barrier = Barrier::new(DESTROYERS);
    std::thread::scope(|s| {
        let round = &round;
        for i in 0..SUBMITTERS {
            s.spawn(move || round.submitter(seed * 100 + i as u64));
        }
        for _ in 0..REAPERS {
            s.spawn(move || round.reaper());
        }
        s.spawn(move || round.canceller(seed * 100 + 50));
        s.spawn(move || round.feeder(seed * 100 + 60));
        let barrier = &barrier;
        for i in 0..DESTROYERS {
            s.spawn(move || round.destroyer(i, delay, barrier));
        }
    });
    tally_round(&round, seed, files, baseline, totals);
    round.shared
}

/// Adds a round (run with `seed`) to the totals; every violation's text names its round.
fn tally_round(round: &Round, seed: u64, files: &Files, baseline: [usize; 4], totals: &mut Totals) {
    totals.contexts += 1;
    let seen = std::mem::take(&mut *round.violations.lock().unwrap());
    let unkept = seen.count - seen.first.len() as u64;
    for v in seen.first {
        totals.violations.add(format!("round {seed}: {v}"));
    }
    if unkept > 0 {
        totals.violations.add(format!(
            "round {seed}: {unkept} more violations, text not kept"
        ));
        totals.violations.count += unkept - 1;
    }
    let mut results = round.destroy_results.lock().unwrap().clone();
    results.sort();
    let mut expected = vec![Some(libc::EINVAL); DESTROYERS - 1];
    expected.insert(0, None);
    if results != expected {
        totals
            .violations
            .add(format!("destroyers returned {results:?}"));
    }
    let mut accepted = 0;
    for (tag, entry) in round.entries.lock().unwrap().iter() {
        match (entry.accepted, entry.events) {
            (Some(true), 0) => totals.discarded += 1,
            (Some(true), 1) => totals.events += 1,
            (Some(false), 0) => totals.refused += 1,
            (Some(true), n) => {
                totals.events += 1;
                totals.duplicates += u64::from(n - 1);
            }
            other => totals
                .violations
                .add(format!("tag {tag} ended as {other:?}")),
        }
        if entry.accepted == Some(true) {
            accepted += 1;
        }
        totals.cancels_accepted += u64::from(entry.cancels_accepted);
        if entry.cancels_accepted > 1 {
            totals.cancelled_twice += 1;
        }
    }
    totals.accepted += accepted;
    totals.faults += round.faults.load(Ordering::Relaxed);
    totals.cancelled_events += round.cancelled_events.load(Ordering::Relaxed);
    let stats = round.ctx.stats();
    if stats.submitted != accepted || stats.completed != stats.submitted {
        totals.violations.add(format!(
            "context counted {stats:?}, the test {accepted} accepted"
        ));
    }
    // Destroy let go of every file and every piece of memory the requests held (SPEC §1;
    // the process's poll thread once kept a polled file open across its poll(2)), and no
    // descriptor the context opened on the caller's files is left (the simulator's disk).
    let ours: [&File; 6] = [
        &files.read,
        &files.read_direct,
        &files.write,
        &files.write_direct,
        &round.pipe,
        &round.socket,
    ];
    let descriptors = descriptors_on(&ours, &[&ours[..], &[&round.pipe_writer]].concat());
    let counts = files.strong_counts();
    let held = [
        (!descriptors.is_empty()).then(|| format!("descriptors {descriptors:?} open on its files")),
        (counts != baseline).then(|| format!("file references {counts:?}, {baseline:?} before")),
        (Arc::strong_count(&round.pipe) != 1).then(|| "a reference to the pipe".to_string()),
        (Arc::strong_count(&round.socket) != 1).then(|| "a reference to the socket".to_string()),
        (Arc::strong_count(&round.shared) != 1).then(|| "a reference to its memory".to_string()),
    ];
    let held: Vec<String> = held.into_iter().flatten().collect();
    if !held.is_empty() {
        totals.held_after_destroy += 1;
        if totals.held_details.len() < Violations::KEPT {
            totals
                .held_details
                .push(format!("round {seed}: held {}", held.join(", ")));
        }
    }
}

/// Blocks of shared memory whose canary changed: late writes.
fn late_writes(mem: &SharedMem) -> u64 {
    let words_per_block = BLOCK / 8;
    mem.words()
        .chunks(words_per_block)
        .filter(|block| block.iter().any(|w| w.load(Ordering::Relaxed) != CANARY))
        .count() as u64
}

fn stress(engine: EngineKind) {
    let seconds = stress_seconds();
    let files = Files::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut totals = Totals::default();
    // Painted memory of earlier rounds, checked a few rounds later and at the end, giving
    // a late write time to land.
    let mut painted: Vec<Arc<SharedMem>> = Vec::new();
    let watchdog = watchdog(engine);
    let mut seed = 1;
    while Instant::now() < deadline || totals.contexts < 8 {
        watchdog.store(seed, Ordering::SeqCst);
        painted.push(run_round(engine, &files, seed, &mut totals));
        if painted.len() > 8 {
            totals.late_writes += late_writes(&painted.remove(0));
        }
        seed += 1;
    }
    watchdog.store(0, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    totals.late_writes += painted.iter().map(|m| late_writes(m)).sum::<u64>();
    println!(
        "stress {engine}: {} contexts, {} requests accepted, {} refused, {} events, \
         {} discarded by destroy, {} cancels accepted ({} requests more than once), {} cancelled events, {} faults \
         injected, {} duplicates, {} late writes, {} contexts holding a file or memory after \
         destroy, {} violations",
        totals.contexts,
        totals.accepted,
        totals.refused,
        totals.events,
        totals.discarded,
        totals.cancels_accepted,
        totals.cancelled_twice,
        totals.cancelled_events,
        totals.faults,
        totals.duplicates,
        totals.late_writes,
        totals.held_after_destroy,
        totals.violations.count
    );
    let details = report_details(engine, &totals);
    assert!(
        totals.violations.count == 0,
        "{engine}: {} violations:\n{details}",
        totals.violations.count
    );
    assert_eq!(totals.duplicates, 0, "{engine}: duplicate events");
    // SPEC §2 io_cancel: a request answers -EINPROGRESS at most once.
    assert_eq!(
        totals.cancelled_twice, 0,
        "{engine}: requests whose cancel was accepted twice"
    );
    assert_eq!(totals.late_writes, 0, "{engine}: late writes");
    assert_eq!(
        totals.held_after_destroy, 0,
        "{engine}: contexts still holding a file or memory after destroy:\n{details}"
    );
    assert!(totals.events > 0, "{engine}: no request completed");
    assert!(totals.discarded + totals.events == totals.accepted);
    if engine == EngineKind::Sim {
        assert!(totals.faults > 0, "the simulator injected no fault");
    }
}

/// Prints the text of every violation kept and of what contexts held after destroy, one a
/// line, beside the summary, and writes them to `stress-<engine>.txt` under the target's
/// temporary directory (in case the output is cut); returns them.
fn report_details(engine: EngineKind, totals: &Totals) -> String {
    let mut lines = Vec::new();
    for (i, v) in totals.violations.first.iter().enumerate() {
        let count = totals.violations.count;
        lines.push(format!(
            "stress {engine}: violation {} of {count}: {v}",
            i + 1
        ));
    }
    for held in &totals.held_details {
        lines.push(format!("stress {engine}: after destroy, {held}"));
    }
    let text = lines.join("\n");
    if !text.is_empty() {
        println!("{text}");
    }
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stress-{engine}.txt"));
    let _ = std::fs::write(&path, format!("{text}\n"));
    format!("{text}\n(also in {})", path.display())
}

/// A thread that ends the process if one round runs past `ROUND_LIMIT` (a hang), naming
/// the engine and the round; the returned cell holds the running round's seed (0: done).
fn watchdog(engine: EngineKind) -> Arc<AtomicU64> {
    let round = Arc::new(AtomicU64::new(u64::MAX));
    let watched = Arc::clone(&round);
    std::thread::spawn(move || {
        let (mut seen, mut since) = (u64::MAX, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = watched.load(Ordering::SeqCst);
            if now == 0 {
                return;
            }
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > ROUND_LIMIT {
                eprintln!("stress {engine}: round {now} hung for {ROUND_LIMIT:?}");
                std::process::exit(101);
            }
        }
    });
    round
}

#[test]
fn stress_kaio() {
    stress(EngineKind::Kaio);
}

#[test]
fn stress_threads() {
    stress(EngineKind::Threads);
}

#[test]
fn stress_sim() {
    stress(EngineKind::Sim);
}

#[test]
fn stress_uring() {
    stress(EngineKind::Uring);
}

/// Two stresses at once on uring in one process: their contexts share the process's few
/// io_uring instances, so each one's destroys, cancels and completions run beside the
/// other's requests on the same rings (with `stress_uring`, three at once).
#[test]
fn stress_uring_two_at_once() {
    std::thread::scope(|s| {
        s.spawn(|| stress(EngineKind::Uring));
        stress(EngineKind::Uring);
    });
}

/// Engines this suite crashes today, each with what it found; nothing else may be left out.
const KNOWN_TO_CRASH: [EngineKind; 0] = [];

#[test]
fn every_engine_is_stressed() {
    let source = include_str!("stress.rs");
    for engine in EngineKind::ALL {
        let test = format!("fn stress_{}()", engine.name());
        let stressed =
            source.matches(&test).count() > usize::from(KNOWN_TO_CRASH.contains(&engine));
        assert!(
            stressed != KNOWN_TO_CRASH.contains(&engine),
            "{test}: stressed {stressed}, listed as known to crash {}",
            KNOWN_TO_CRASH.contains(&engine)
        );
    }
}
