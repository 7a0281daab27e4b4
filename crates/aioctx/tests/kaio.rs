//! The kernel-AIO engine's own behaviours (the conformance suite covers the shared ones):
//! O_DIRECT through the kernel, buffered I/O through `RWF_NOWAIT`, kernel polls, shared
//! kernel contexts, and destroy against completions.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aioctx::ffi::{KERNEL_EVENTS, MAX_KERNEL_CONTEXTS};
use aioctx::{AlignedBuf, Context, EngineKind, Request};

const BLOCK: usize = 4096;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A file under /tmp (ext4 here, so O_DIRECT works), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A file of `blocks` blocks of `pattern`, written with O_DIRECT so that none of it is in
    /// the page cache.
    fn new(name: &str, blocks: usize) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("aioctx-kaio-{}-{n}-{name}", std::process::id()));
        let scratch = Scratch(path);
        let file = scratch.open(libc::O_DIRECT);
        let mut block = AlignedBuf::page_aligned(BLOCK).unwrap();
        for at in 0..blocks {
            block.copy_from_slice(&pattern(at * BLOCK, BLOCK));
            file.write_all_at(&block, (at * BLOCK) as u64).unwrap();
        }
        scratch
    }

    fn open(&self, flags: i32) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(flags)
            .open(&self.0)
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The bytes the scratch file holds at `offset`.
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| ((i / BLOCK) * 7 + i % 251) as u8)
        .collect()
}

fn aligned(len: usize, fill: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::page_aligned(len).unwrap();
    buf.fill(fill);
    buf
}

fn kaio(depth: u32) -> Context {
    Context::builder()
        .depth(depth)
        .engine(EngineKind::Kaio)
        .build()
        .unwrap()
}

#[test]
fn direct_reads_and_writes_round_trip() {
    let scratch = Scratch::new("direct-rw", 16);
    let file = Arc::new(scratch.open(libc::O_DIRECT));
    let ctx = kaio(32);
    let written: Vec<u8> = (0..3 * BLOCK).map(|i| (i % 253) as u8).collect();
    let mut writes = vec![
        Request::write(file.clone(), aligned_copy(&written[..BLOCK]), 0).data(1),
        Request::writev(
            file.clone(),
            vec![
                aligned_copy(&written[BLOCK..2 * BLOCK]),
                aligned_copy(&written[2 * BLOCK..]),
            ],
            BLOCK as u64,
        )
        .data(2),
    ];
    assert_eq!(ctx.submit(&mut writes).unwrap().len(), 2);
    for done in ctx.get_events(2, 2, WAIT).unwrap() {
        let expected = if done.data == 1 { BLOCK } else { 2 * BLOCK };
        assert_eq!(done.result().unwrap(), expected);
    }
    let mut reads = vec![
        Request::read(file.clone(), aligned(BLOCK, 0), 0).data(1),
        Request::readv(
            file,
            vec![aligned(BLOCK, 0), aligned(BLOCK, 0)],
            BLOCK as u64,
        )
        .data(2),
    ];
    assert_eq!(ctx.submit(&mut reads).unwrap().len(), 2);
    let mut done = ctx.get_events(2, 2, WAIT).unwrap();
    done.sort_by_key(|c| c.data);
    let mut read = Vec::new();
    for completion in done {
        assert!(completion.result().unwrap() > 0);
        for buf in completion.into_bufs::<AlignedBuf>().unwrap() {
            read.extend_from_slice(&buf);
        }
    }
    assert_eq!(read, written);
    assert_eq!(ctx.stats().fallbacks, 0);
}

fn aligned_copy(bytes: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::page_aligned(bytes.len()).unwrap();
    buf.copy_from_slice(bytes);
    buf
}

#[test]
fn destroy_waits_for_in_flight_direct_reads() {
    let blocks = 2048;
    let scratch = Scratch::new("destroy-reads", blocks);
    let file = Arc::new(scratch.open(libc::O_DIRECT));
    for round in 0..20 {
        let ctx = kaio(32);
        let mut reads: Vec<Request> = (0..32)
            .map(|i| {
                let block = (round * 97 + i * 61) % (blocks - 16);
                Request::read(file.clone(), aligned(16 * BLOCK, 0), (block * BLOCK) as u64)
                    .data(i as u64)
            })
            .collect();
        assert_eq!(ctx.submit(&mut reads).unwrap().len(), 32);
        ctx.destroy().unwrap();
        assert_eq!(ctx.in_flight(), 0);
        let stats = ctx.stats();
        assert_eq!((stats.submitted, stats.completed), (32, 32));
    }
}

#[test]
fn destroy_leaves_no_direct_write_in_flight() {
    const ROUNDS: usize = 40;
    const THREADS: usize = 4;
    const DEPTH: usize = 32;
    let scratch = Scratch::new("destroy-writes", ROUNDS * THREADS * DEPTH);
    let canary = vec![0xee_u8; DEPTH * BLOCK];
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let file = Arc::new(scratch.open(libc::O_DIRECT));
            let canary = &canary;
            s.spawn(move || {
                for round in 0..ROUNDS {
                    let region = (round * THREADS + thread) * DEPTH * BLOCK;
                    let ctx = kaio(DEPTH as u32);
                    let mut writes: Vec<Request> = (0..DEPTH)
                        .map(|i| {
                            let at = (region + i * BLOCK) as u64;
                            Request::write(file.clone(), aligned(BLOCK, round as u8), at)
                        })
                        .collect();
                    assert_eq!(ctx.submit(&mut writes).unwrap().len(), DEPTH);
                    ctx.destroy().unwrap();
                    // Any write of this context still in flight would land on the canary.
                    let mut block = AlignedBuf::page_aligned(canary.len()).unwrap();
                    block.copy_from_slice(canary);
                    file.write_all_at(&block, region as u64).unwrap();
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let file = scratch.open(libc::O_DIRECT);
    let mut region = AlignedBuf::page_aligned(DEPTH * BLOCK).unwrap();
    for at in 0..ROUNDS * THREADS {
        file.read_exact_at(&mut region, (at * DEPTH * BLOCK) as u64)
            .unwrap();
        assert!(
            region.iter().all(|&b| b == 0xee),
            "late write in region {at}"
        );
    }
}

#[test]
fn kernel_file_reads_cannot_be_cancelled() {
    let blocks = 4096;
    let scratch = Scratch::new("no-cancel", blocks);
    let file = Arc::new(scratch.open(libc::O_DIRECT));
    let ctx = kaio(32);
    let mut reads: Vec<Request> = (0..32)
        .map(|i| {
            let at = (i * 128 * BLOCK) as u64;
            Request::read(file.clone(), aligned(128 * BLOCK, 0), at).data(i as u64)
        })
        .collect();
    let ids = ctx.submit(&mut reads).unwrap();
    assert_eq!(ids.len(), 32);
    let error = ctx.cancel(ids[31]).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
    let done = ctx.get_events(32, 32, WAIT).unwrap();
    assert!(done.iter().all(|c| c.res == (128 * BLOCK) as i64));
}

fn socket_pair() -> (Arc<File>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (
        Arc::new(File::from(std::os::fd::OwnedFd::from(ours))),
        theirs,
    )
}

#[test]
fn kernel_poll_completes_when_ready() {
    let (file, mut peer) = socket_pair();
    let ctx = kaio(8);
    ctx.submit_one(Request::poll(file, libc::POLLIN as u16).data(5))
        .unwrap();
    assert!(ctx
        .get_events(0, 1, Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    std::io::Write::write_all(&mut peer, b"x").unwrap();
    let done = ctx.get_events(1, 1, WAIT).unwrap();
    assert_eq!(done[0].data, 5);
    assert_eq!(done[0].res & libc::POLLIN as i64, libc::POLLIN as i64);
}

#[test]
fn kernel_poll_is_cancelled_with_ecanceled() {
    let (file, _peer) = socket_pair();
    let ctx = kaio(8);
    let poll = ctx
        .submit_one(Request::poll(file, libc::POLLIN as u16).data(9))
        .unwrap();
    ctx.cancel(poll).unwrap();
    let done = ctx.get_events(1, 1, WAIT).unwrap();
    assert_eq!(done[0].res, -(libc::ECANCELED as i64));
    assert_eq!(
        ctx.cancel(poll).unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    assert_eq!(ctx.stats().cancelled, 1);
}

#[test]
fn destroy_cancels_pending_kernel_polls() {
    let (file, _peer) = socket_pair();
    let ctx = kaio(8);
    for i in 0..4 {
        ctx.submit_one(Request::poll(file.clone(), libc::POLLIN as u16).data(i))
            .unwrap();
    }
    ctx.destroy().unwrap();
    assert_eq!(ctx.stats().cancelled, 4);
}

#[test]
fn socket_reads_do_not_block_submit() {
    let (file, mut peer) = socket_pair();
    let ctx = kaio(8);
    ctx.submit_one(Request::read(file, vec![0u8; 5], 0).data(3))
        .unwrap();
    assert!(ctx
        .get_events(0, 1, Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    std::io::Write::write_all(&mut peer, b"hello").unwrap();
    let done = ctx.get_events(1, 1, WAIT).unwrap().remove(0);
    assert_eq!(done.result().unwrap(), 5);
    assert_eq!(&done.into_buf::<Vec<u8>>().unwrap()[..], b"hello");
}

#[test]
fn cached_buffered_reads_complete_without_fallback() {
    let scratch = Scratch::new("cached", 8);
    let file = Arc::new(scratch.open(0));
    let mut warm = vec![0u8; 8 * BLOCK];
    file.read_exact_at(&mut warm, 0).unwrap();
    let ctx = kaio(8);
    let mut reads: Vec<Request> = (0..8)
        .map(|i| Request::read(file.clone(), vec![0u8; BLOCK], (i * BLOCK) as u64).data(i as u64))
        .collect();
    assert_eq!(ctx.submit(&mut reads).unwrap().len(), 8);
    for done in ctx.get_events(8, 8, WAIT).unwrap() {
        let at = done.data as usize * BLOCK;
        assert_eq!(done.result().unwrap(), BLOCK);
        assert_eq!(
            &done.into_buf::<Vec<u8>>().unwrap()[..],
            &pattern(at, BLOCK)[..]
        );
    }
    assert_eq!(ctx.stats().fallbacks, 0);
}

#[test]
fn buffered_writes_and_syncs_complete() {
    let scratch = Scratch::new("buffered-write", 4);
    let file = Arc::new(scratch.open(0));
    let ctx = kaio(8);
    let mut writes = vec![
        Request::write(file.clone(), vec![1u8; BLOCK], 0).data(1),
        Request::writev(
            file.clone(),
            vec![vec![2u8; 10], vec![3u8; 20]],
            // Not overlapping the first write: two requests in flight have no order.
            BLOCK as u64 + 100,
        )
        .data(2),
    ];
    assert_eq!(ctx.submit(&mut writes).unwrap().len(), 2);
    assert!(ctx
        .get_events(2, 2, WAIT)
        .unwrap()
        .iter()
        .all(|c| c.res > 0));
    let mut syncs = vec![Request::fsync(file.clone()), Request::fdsync(file.clone())];
    assert_eq!(ctx.submit(&mut syncs).unwrap().len(), 2);
    assert!(ctx
        .get_events(2, 2, WAIT)
        .unwrap()
        .iter()
        .all(|c| c.res == 0));
    let mut first = vec![0u8; BLOCK];
    file.read_exact_at(&mut first, 0).unwrap();
    assert!(first.iter().all(|&b| b == 1));
    let mut second = vec![0u8; 30];
    file.read_exact_at(&mut second, BLOCK as u64 + 100).unwrap();
    assert_eq!(second, [vec![2u8; 10], vec![3u8; 20]].concat());
}

/// `fs.aio-nr`: kernel AIO events in use on the whole system.
fn aio_nr() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/aio-nr")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Kernel AIO rings mapped into this process: one per kernel context it holds.
fn kernel_contexts_of_this_process() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.ends_with("/[aio] (deleted)"))
        .count()
}

#[test]
fn ten_thousand_contexts_share_kernel_aio_slots() {
    drop(kaio(32));
    let share = KERNEL_EVENTS as u64 * MAX_KERNEL_CONTEXTS as u64;
    // aio-nr is system-wide: another process may take or give back slots during a round,
    // so a round is retried; a leak of our own shows in every round.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let before = aio_nr();
        let contexts: Vec<Context> = (0..10_000).map(|_| kaio(32)).collect();
        let during = aio_nr();
        assert!(kernel_contexts_of_this_process() <= MAX_KERNEL_CONTEXTS);
        drop(contexts);
        let after = aio_nr();
        rounds.push((before, during, after));
        if during <= before + share && after == before {
            return;
        }
    }
    panic!("aio-nr (before, during, after) each round: {rounds:?}");
}

#[test]
fn destroy_races_completions_of_every_route() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 100;
    let blocks = 1024;
    let scratch = Scratch::new("race", blocks);
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let direct = Arc::new(scratch.open(libc::O_DIRECT));
            let buffered = Arc::new(scratch.open(0));
            s.spawn(move || {
                let (socket, _peer) = socket_pair();
                for round in 0..ROUNDS {
                    let ctx = kaio(32);
                    let block = |i: usize| ((thread * ROUNDS + round) * 31 + i * 17) % blocks;
                    let mut batch: Vec<Request> = (0..8)
                        .map(|i| {
                            let at = (block(i) * BLOCK) as u64;
                            Request::read(direct.clone(), aligned(BLOCK, 0), at)
                        })
                        .chain((8..16).map(|i| {
                            let at = (block(i) * BLOCK) as u64;
                            Request::read(buffered.clone(), vec![0u8; BLOCK], at)
                        }))
                        .chain((0..4).map(|_| Request::poll(socket.clone(), libc::POLLIN as u16)))
                        .chain((0..2).map(|_| Request::fdsync(buffered.clone())))
                        .chain((0..2).map(|_| Request::noop()))
                        .collect();
                    let count = batch.len();
                    assert_eq!(ctx.submit(&mut batch).unwrap().len(), count);
                    ctx.destroy().unwrap();
                    let stats = ctx.stats();
                    assert_eq!(ctx.in_flight(), 0);
                    assert_eq!(stats.completed, count as u64);
                    assert!(stats.cancelled >= 4);
                }
            });
        }
    });
}

/// A program that reaped through get_events (so the reaper only looks once a tick) and then
/// stops calling still sees its kernel completions posted, with no call into the library.
#[test]
fn completions_are_posted_after_the_program_stops_calling_get_events() {
    let (file, mut peer) = socket_pair();
    let ctx = kaio(8);
    ctx.submit_one(Request::noop().data(1)).unwrap();
    assert_eq!(ctx.get_events(1, 1, WAIT).unwrap().len(), 1);

    ctx.submit_one(Request::poll(file, libc::POLLIN as u16).data(2))
        .unwrap();
    let tail = ctx.ring_header().tail;
    std::io::Write::write_all(&mut peer, b"x").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ctx.ring_header().tail == tail && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
    assert_ne!(
        ctx.ring_header().tail,
        tail,
        "the poll's event reached the ring"
    );
    assert_eq!(ctx.stats().completed, 2);
}

/// A thread waiting in one context's get_events takes the kernel's events of every context
/// (they share the kernel's contexts): each event goes to its own context, with its data,
/// none lost or doubled, while the waiter's own request is still to come.
#[test]
fn a_waiter_takes_kernel_events_of_other_contexts_into_their_own() {
    const READS: usize = 64;
    let scratch = Scratch::new("other-contexts", READS);
    let file = Arc::new(scratch.open(libc::O_DIRECT));
    let (socket, mut peer) = socket_pair();
    let waiting = Arc::new(kaio(8));
    waiting
        .submit_one(Request::poll(socket, libc::POLLIN as u16).data(7))
        .unwrap();
    let waiter = {
        let waiting = Arc::clone(&waiting);
        std::thread::spawn(move || waiting.get_events(1, 1, WAIT).unwrap())
    };
    let reading = kaio(READS as u32);
    for round in 0..8 {
        let mut reads: Vec<Request> = (0..READS)
            .map(|at| {
                Request::read(file.clone(), aligned(BLOCK, 0), (at * BLOCK) as u64)
                    .data((round * READS + at) as u64)
            })
            .collect();
        assert_eq!(reading.submit(&mut reads).unwrap().len(), READS);
        let mut done = Vec::new();
        while done.len() < READS {
            done.extend(reading.get_events(1, READS, WAIT).unwrap());
        }
        done.sort_by_key(|c| c.data);
        for (at, completion) in done.into_iter().enumerate() {
            assert_eq!(completion.data, (round * READS + at) as u64);
            assert_eq!(completion.res, BLOCK as i64);
            let buf = completion.into_buf::<AlignedBuf>().unwrap();
            assert_eq!(&buf[..], &pattern(at * BLOCK, BLOCK)[..]);
        }
        assert!(reading
            .get_events(0, 1, Some(Duration::ZERO))
            .unwrap()
            .is_empty());
    }
    std::io::Write::write_all(&mut peer, b"x").unwrap();
    let theirs = waiter.join().unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].data, 7);
    assert_eq!(reading.stats().fallbacks, 0);
}
