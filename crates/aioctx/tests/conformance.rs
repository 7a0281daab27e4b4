//! SPEC.md §1, §2 (as it applies to the Rust API) and §4, run against every engine.
//!
//! Each behaviour is a function taking the engine; `engines!` makes one test per engine and
//! behaviour, and `every_engine_is_covered` fails if an engine is missing from the list.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use aioctx::ffi::abi::{AioRingHeader, AIO_RING_MAGIC};
use aioctx::{AlignedBuf, Context, EngineKind, Request, RequestId, RwFlags, SharedMem, State};
use common::*;

const FIVE_SECONDS: Option<Duration> = Some(Duration::from_secs(5));

fn ctx(engine: EngineKind, nr: u32) -> Context {
    let ctx = Context::builder()
        .depth(nr)
        .engine(engine)
        .build()
        .expect("context");
    assert_eq!(ctx.engine(), engine);
    ctx
}

fn errno_of_submit(ctx: &Context, request: Request) -> i32 {
    errno_of(&ctx.submit_one(request).expect_err("submit must fail").error)
}

// ---- io_setup ----

fn setup_rejects_zero_events(engine: EngineKind) {
    assert_eq!(
        errno_of(
            &Context::builder()
                .depth(0)
                .engine(engine)
                .build()
                .unwrap_err()
        ),
        libc::EINVAL
    );
}

fn setup_rejects_absurd_size(engine: EngineKind) {
    let too_many = (0x1000_0000 / 32) + 1;
    assert_eq!(
        errno_of(
            &Context::builder()
                .depth(too_many)
                .engine(engine)
                .build()
                .unwrap_err()
        ),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(
            &Context::builder()
                .depth(u32::MAX)
                .engine(engine)
                .build()
                .unwrap_err()
        ),
        libc::EINVAL
    );
}

fn setup_beyond_aio_max_nr_is_eagain(engine: EngineKind) {
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/aio-max-nr")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if max < 0x1000_0000 / 32 {
        let err = Context::builder()
            .depth(max as u32 + 1)
            .engine(engine)
            .build()
            .unwrap_err();
        assert_eq!(errno_of(&err), libc::EAGAIN);
    }
    // Many contexts may together hold far more than aio-max-nr.
    let contexts: Vec<Context> = (0..4).map(|_| ctx(engine, (max / 2) as u32)).collect();
    assert_eq!(contexts.len(), 4);
}

fn ring_has_the_kernel_layout(engine: EngineKind) {
    let ctx = ctx(engine, 100);
    let header = ctx.ring_header();
    assert_eq!(header.magic, AIO_RING_MAGIC);
    assert_eq!(
        (
            header.compat_features,
            header.incompat_features,
            header.header_length
        ),
        (1, 0, 32)
    );
    assert!(header.nr > 100, "ring holds at least nr_events events");
    assert_eq!((header.head, header.tail), (0, 0));
    assert!(ctx.capacity() >= 100);
    assert_eq!(std::mem::size_of::<AioRingHeader>(), 32);
}

// ---- io_submit ----

fn submit_of_nothing_returns_zero(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    assert!(ctx.submit(&mut Vec::new()).unwrap().is_empty());
}

fn batch_is_clamped_to_the_ring(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    let cap = ctx.capacity() as usize;
    let mut batch: Vec<Request> = (0..cap + 5)
        .map(|i| Request::noop().data(i as u64))
        .collect();
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), cap);
    assert_eq!(
        batch.len(),
        5,
        "requests past the ring stay with the caller"
    );
}

fn full_ring_is_eagain_until_events_are_reaped(engine: EngineKind) {
    let ctx = ctx(engine, 4);
    let cap = ctx.capacity() as usize;
    let mut batch: Vec<Request> = (0..cap).map(|i| Request::noop().data(i as u64)).collect();
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), cap);
    assert_eq!(errno_of_submit(&ctx, Request::noop()), libc::EAGAIN);
    assert_eq!(ctx.get_events(1, 1, FIVE_SECONDS).unwrap().len(), 1);
    ctx.submit_one(Request::noop())
        .expect("a reaped event frees its slot");
}

fn failure_mid_batch_returns_count_before_it(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let read_only = open(&file, true, false);
    let mut batch = vec![
        Request::noop().data(1),
        Request::write(read_only.clone(), vec![1u8; 16], 0).data(2),
        Request::noop().data(3),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 1);
    assert_eq!(batch.len(), 2, "the failed request and the rest come back");
    assert_eq!(batch[0].key(), 2);
    let events = ctx.get_events(1, 8, FIVE_SECONDS).unwrap();
    assert_eq!(events.len(), 1, "nothing after the failure was executed");
}

fn first_failure_is_the_error(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let mut batch = vec![
        Request::write(open(&file, true, false), vec![1u8; 16], 0),
        Request::noop(),
    ];
    assert_eq!(errno_of(&ctx.submit(&mut batch).unwrap_err()), libc::EBADF);
    assert_eq!(batch.len(), 2);
}

fn read_of_write_only_file_is_ebadf(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let request = Request::read(open(&file, false, true), vec![0u8; 16], 0);
    assert_eq!(errno_of_submit(&ctx, request), libc::EBADF);
}

fn write_of_read_only_file_is_ebadf(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let request = Request::write(open(&file, true, false), vec![0u8; 16], 0);
    assert_eq!(errno_of_submit(&ctx, request), libc::EBADF);
}

fn io_on_a_path_only_descriptor_is_ebadf(engine: EngineKind) {
    use std::os::unix::fs::OpenOptionsExt;
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let path_only = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&file.path)
        .unwrap();
    let request = Request::read(Arc::new(path_only), vec![0u8; 16], 0);
    assert_eq!(errno_of_submit(&ctx, request), libc::EBADF);
}

/// A directory has no read (the kernel's missing `read_iter`): `EINVAL` at submit.
fn read_of_a_directory_is_einval(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    let dir = Arc::new(std::fs::File::open(std::env::temp_dir()).unwrap());
    let request = Request::read(dir, vec![0u8; 16], 0);
    assert_eq!(errno_of_submit(&ctx, request), libc::EINVAL);
}

fn negative_offset_is_einval(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let request = Request::read(open(&file, true, false), vec![0u8; 16], u64::MAX);
    assert_eq!(errno_of_submit(&ctx, request), libc::EINVAL);
}

fn fsync_with_rw_flags_is_einval(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let request = Request::fsync(open(&file, true, true)).rw_flags(RwFlags::DSYNC);
    assert_eq!(errno_of_submit(&ctx, request), libc::EINVAL);
}

fn poll_with_rw_flags_is_einval(engine: EngineKind) {
    let (r, _w) = pipe();
    let ctx = ctx(engine, 8);
    let request = Request::poll(r, libc::POLLIN as u16).rw_flags(RwFlags::NOWAIT);
    assert_eq!(errno_of_submit(&ctx, request), libc::EINVAL);
}

fn resfd_that_is_not_an_eventfd_is_einval(engine: EngineKind) {
    let file = temp_file(4096);
    let ctx = ctx(engine, 8);
    let request = Request::noop().eventfd(open(&file, true, false));
    assert_eq!(errno_of_submit(&ctx, request), libc::EINVAL);
}

fn submit_after_destroy_is_einval(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    ctx.destroy().unwrap();
    assert_eq!(errno_of_submit(&ctx, Request::noop()), libc::EINVAL);
    assert_eq!(ctx.state(), State::Dead);
}

fn shared_range_outside_memory_is_einval(_engine: EngineKind) {
    let file = temp_file(4096);
    let mem = Arc::new(SharedMem::map(4096).unwrap());
    let err = Request::read_shared(open(&file, true, false), &mem, 0..8192, 0).unwrap_err();
    assert_eq!(errno_of(&err), libc::EINVAL);
}

// ---- the requests ----

fn reads_and_writes_round_trip(engine: EngineKind) {
    let file = temp_file(3 * 4096);
    let rw = open(&file, true, true);
    let ctx = ctx(engine, 16);
    let mut batch = vec![
        Request::write(rw.clone(), vec![0xaa; 4096], 0).data(1),
        Request::writev(rw.clone(), vec![vec![0xbb; 100], vec![0xcc; 50]], 4096).data(2),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 2);
    let events = ctx.get_events(2, 2, FIVE_SECONDS).unwrap();
    let mut results: Vec<(u64, i64)> = events.iter().map(|e| (e.data, e.res)).collect();
    results.sort();
    assert_eq!(results, vec![(1, 4096), (2, 150)]);

    let mut batch = vec![
        Request::read(rw.clone(), vec![0u8; 4096], 0).data(3),
        Request::readv(rw.clone(), vec![vec![0u8; 120], vec![0u8; 30]], 4096).data(4),
        Request::read(rw.clone(), Box::from(vec![0u8; 10]), 2 * 4096).data(5),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 3);
    for event in ctx.get_events(3, 3, FIVE_SECONDS).unwrap() {
        match event.data {
            3 => {
                assert_eq!(event.res, 4096);
                assert!(event
                    .into_buf::<Vec<u8>>()
                    .unwrap()
                    .iter()
                    .all(|&b| b == 0xaa));
            }
            4 => {
                assert_eq!(event.res, 150);
                let bufs = event.into_bufs::<Vec<u8>>().unwrap();
                assert!(bufs[0][..100].iter().all(|&b| b == 0xbb));
                assert!(bufs[0][100..].iter().all(|&b| b == 0xcc));
                assert!(bufs[1][..30].iter().all(|&b| b == 0xcc));
            }
            5 => {
                let expected: Vec<u8> = (2 * 4096..2 * 4096 + 10).map(pattern).collect();
                assert_eq!(event.res, 10);
                assert_eq!(&event.into_buf::<Box<[u8]>>().unwrap()[..], &expected[..]);
            }
            other => panic!("unexpected event {other}"),
        }
    }
}

fn short_read_at_end_of_file_is_not_an_error(engine: EngineKind) {
    let file = temp_file(100);
    let ctx = ctx(engine, 8);
    ctx.submit_one(Request::read(open(&file, true, false), vec![0u8; 4096], 0))
        .unwrap();
    let events = ctx.get_events(1, 1, FIVE_SECONDS).unwrap();
    assert_eq!(events[0].result().unwrap(), 100);
}

fn fsync_fdsync_and_noop_complete_with_zero(engine: EngineKind) {
    let file = temp_file(4096);
    let rw = open(&file, true, true);
    let ctx = ctx(engine, 8);
    let mut batch = vec![
        Request::fsync(rw.clone()).data(1),
        Request::fdsync(rw).data(2),
        Request::noop().data(3),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 3);
    let events = ctx.get_events(3, 3, FIVE_SECONDS).unwrap();
    assert!(
        events.iter().all(|e| e.res == 0 && e.res2 == 0),
        "{events:?}"
    );
}

fn event_carries_data_and_its_request_id(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    let first = ctx.submit_one(Request::noop().data(42)).unwrap();
    let second = ctx.submit_one(Request::noop().data(42)).unwrap();
    assert_ne!(
        first, second,
        "one id per accepted request, whatever its data"
    );
    let mut events = ctx.get_events(2, 2, FIVE_SECONDS).unwrap();
    events.sort_by_key(|e| e.id());
    let seen: Vec<_> = events.iter().map(|e| (e.data, e.id())).collect();
    assert_eq!(seen, [(42, first), (42, second)]);
}

fn direct_io_round_trips_with_aligned_buffers(engine: EngineKind) {
    let file = temp_file(64 * 1024);
    let direct = open_direct(&file);
    let ctx = ctx(engine, 8);
    let mut out = AlignedBuf::page_aligned(8192).unwrap();
    out.fill(0x77);
    ctx.submit_one(Request::write(direct.clone(), out, 8192))
        .unwrap();
    assert_eq!(ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0].res, 8192);
    ctx.submit_one(Request::read(
        direct,
        AlignedBuf::page_aligned(8192).unwrap(),
        8192,
    ))
    .unwrap();
    let event = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    assert_eq!(event.res, 8192);
    assert!(event
        .into_buf::<AlignedBuf>()
        .unwrap()
        .iter()
        .all(|&b| b == 0x77));
}

fn misaligned_direct_io_is_einval(engine: EngineKind) {
    let file = temp_file(64 * 1024);
    let ctx = ctx(engine, 8);
    // An aligned buffer at an offset that is not a multiple of the block size.
    let request = Request::read(
        open_direct(&file),
        AlignedBuf::page_aligned(4096).unwrap(),
        1,
    );
    let res = match ctx.submit_one(request) {
        Err(e) => -(errno_of(&e.error) as i64),
        Ok(_) => ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0].res,
    };
    assert_eq!(res, -(libc::EINVAL as i64));
}

fn poll_completes_with_the_ready_mask(engine: EngineKind) {
    let (r, mut w) = pipe();
    let ctx = ctx(engine, 8);
    ctx.submit_one(Request::poll(r, libc::POLLIN as u16).data(9))
        .unwrap();
    assert!(ctx
        .get_events(1, 1, Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    w.write_all(b"x").unwrap();
    let event = &ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0];
    assert_eq!(event.data, 9);
    assert_eq!(event.res & libc::POLLIN as i64, libc::POLLIN as i64);
}

fn resfd_is_signalled_after_the_event_is_in_the_ring(engine: EngineKind) {
    let efd = eventfd();
    let ctx = ctx(engine, 64);
    let mut batch: Vec<Request> = (0..20)
        .map(|i| Request::noop().data(i).eventfd(efd.clone()))
        .collect();
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 20);
    let mut reaped = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while reaped < 20 && Instant::now() < deadline {
        let mut count = [0u8; 8];
        match (&*efd).read_exact_nonblocking(&mut count) {
            Some(()) => {
                let n = u64::from_ne_bytes(count) as usize;
                let got = ctx.get_events(0, n, Some(Duration::ZERO)).unwrap().len();
                assert_eq!(
                    got, n,
                    "every count read from the eventfd has its event in the ring"
                );
                reaped += n;
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(reaped, 20);
}

trait ReadNonblocking {
    fn read_exact_nonblocking(self, buf: &mut [u8; 8]) -> Option<()>;
}

impl ReadNonblocking for &std::fs::File {
    fn read_exact_nonblocking(mut self, buf: &mut [u8; 8]) -> Option<()> {
        use std::io::Read;
        self.read_exact(buf).ok()
    }
}

// ---- io_getevents ----

fn min_above_max_is_einval(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    assert_eq!(
        errno_of(&ctx.get_events(2, 1, None).unwrap_err()),
        libc::EINVAL
    );
}

fn zero_timeout_does_not_wait(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    let started = Instant::now();
    assert!(ctx
        .get_events(1, 8, Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
}

fn timeout_elapses_with_what_is_there(engine: EngineKind) {
    let (r, _w) = pipe();
    let ctx = ctx(engine, 8);
    ctx.submit_one(Request::noop()).unwrap();
    ctx.submit_one(Request::poll(r, libc::POLLIN as u16))
        .unwrap();
    let timeout = Duration::from_millis(100);
    let started = Instant::now();
    let events = ctx.get_events(2, 8, Some(timeout)).unwrap();
    assert!(started.elapsed() >= timeout);
    assert_eq!(
        events.len(),
        1,
        "fewer than min_nr when the timeout elapses"
    );
}

fn events_come_oldest_first(engine: EngineKind) {
    let ctx = ctx(engine, 64);
    for i in 0..10 {
        ctx.submit_one(Request::noop().data(i)).unwrap();
        ctx.get_events(0, 0, None).unwrap();
        while ctx.in_flight() > 0 {
            std::thread::yield_now();
        }
    }
    let order: Vec<u64> = ctx
        .get_events(10, 10, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

fn get_events_after_destroy_is_einval(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    ctx.submit_one(Request::noop()).unwrap();
    ctx.destroy().unwrap();
    assert_eq!(
        errno_of(&ctx.get_events(0, 8, None).unwrap_err()),
        libc::EINVAL
    );
}

fn waiter_in_get_events_leaves_on_destroy(engine: EngineKind) {
    let (r, _w) = pipe();
    let ctx = ctx(engine, 8);
    ctx.submit_one(Request::poll(r, libc::POLLIN as u16))
        .unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| ctx.get_events(1, 1, None));
        std::thread::sleep(Duration::from_millis(50));
        ctx.destroy().unwrap();
        // It leaves with what it took (here only the cancelled poll) or EINVAL if nothing.
        match waiter.join().unwrap() {
            Ok(events) => assert!(events.iter().all(|e| e.res == -(libc::ECANCELED as i64))),
            Err(e) => assert_eq!(errno_of(&e), libc::EINVAL),
        }
    });
}

/// SPEC §2: every thread waiting on a context that is destroyed wakes (all of them, not
/// one), with the events it took or `EINVAL`. A poll that never fires is in flight, so at
/// most one of them takes its cancelled event. Half wait with no limit, half with the
/// longest timeout there is (no limit too, never a panic).
fn waiters_in_get_events_all_leave_on_destroy(engine: EngineKind, waiters: usize) {
    let (r, _w) = pipe();
    let ctx = Arc::new(ctx(engine, 16));
    ctx.submit_one(Request::poll(r, libc::POLLIN as u16))
        .unwrap();
    let (done, returned) = std::sync::mpsc::channel();
    for i in 0..waiters {
        let (ctx, done) = (Arc::clone(&ctx), done.clone());
        let timeout = (i % 2 == 1).then_some(Duration::MAX);
        std::thread::spawn(move || done.send(ctx.get_events(1, 1, timeout)));
    }
    std::thread::sleep(Duration::from_millis(200));
    ctx.destroy().unwrap();
    let mut took = 0;
    for _ in 0..waiters {
        let left = returned
            .recv_timeout(Duration::from_secs(60))
            .expect("a waiter still sleeps after destroy");
        match left {
            Ok(events) => {
                took += 1;
                assert!(events.iter().all(|e| e.res == -(libc::ECANCELED as i64)));
            }
            Err(e) => assert_eq!(errno_of(&e), libc::EINVAL),
        }
    }
    assert!(took <= 1, "{took} waiters took the one event");
}

fn two_waiters_in_get_events_leave_on_destroy(engine: EngineKind) {
    waiters_in_get_events_all_leave_on_destroy(engine, 2);
}

fn four_waiters_in_get_events_leave_on_destroy(engine: EngineKind) {
    waiters_in_get_events_all_leave_on_destroy(engine, 4);
}

fn eight_waiters_in_get_events_leave_on_destroy(engine: EngineKind) {
    waiters_in_get_events_all_leave_on_destroy(engine, 8);
}

/// Every waiter wakes for posted events too: two threads each wait for one event, and two
/// events come from another thread.
fn every_waiter_wakes_for_posted_events(engine: EngineKind) {
    let (r, mut w) = pipe();
    let ctx = ctx(engine, 16);
    ctx.submit_one(Request::poll(Arc::clone(&r), libc::POLLIN as u16).data(1))
        .unwrap();
    ctx.submit_one(Request::poll(r, libc::POLLIN as u16).data(2))
        .unwrap();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..2)
            .map(|_| s.spawn(|| ctx.get_events(1, 1, Some(Duration::from_secs(60)))))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        w.write_all(b"x").unwrap();
        let mut data: Vec<u64> = waiters
            .into_iter()
            .flat_map(|waiter| waiter.join().unwrap().unwrap())
            .map(|event| event.data)
            .collect();
        data.sort_unstable();
        assert_eq!(data, [1, 2]);
    });
}

fn many_threads_submit_and_reap_at_once(engine: EngineKind) {
    let file = temp_file(64 * 1024);
    let rf = open(&file, true, false);
    let ctx = ctx(engine, 256);
    let reaped = AtomicUsize::new(0);
    const THREADS: usize = 4;
    const EACH: usize = 200;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (ctx, rf, reaped) = (&ctx, rf.clone(), &reaped);
            s.spawn(move || {
                for i in 0..EACH {
                    let offset = ((t * EACH + i) % 16 * 4096) as u64;
                    let mut request = Request::read(rf.clone(), vec![0u8; 4096], offset);
                    loop {
                        match ctx.submit_one(request) {
                            Ok(_) => break,
                            Err(e) if errno_of(&e.error) == libc::EAGAIN => {
                                request = e.request;
                                let n = ctx.get_events(1, 16, FIVE_SECONDS).unwrap();
                                reaped.fetch_add(n.len(), Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    let n = ctx.get_events(0, 4, Some(Duration::ZERO)).unwrap();
                    assert!(n.iter().all(|e| e.res == 4096));
                    reaped.fetch_add(n.len(), Ordering::Relaxed);
                }
            });
        }
    });
    while reaped.load(Ordering::Relaxed) < THREADS * EACH {
        let n = ctx.get_events(1, 64, FIVE_SECONDS).unwrap();
        assert!(!n.is_empty(), "every submitted read completes");
        reaped.fetch_add(n.len(), Ordering::Relaxed);
    }
    assert_eq!(ctx.stats().completed, (THREADS * EACH) as u64);
}

fn a_batch_holds_back_only_its_own_context(engine: EngineKind) {
    let (a, b) = (ctx(engine, 8), ctx(engine, 8));
    a.batch(|| {
        a.submit_one(Request::noop().data(1)).unwrap();
        b.submit_one(Request::noop().data(2)).unwrap();
        let events = b.get_events(1, 1, FIVE_SECONDS).unwrap();
        assert_eq!(events.len(), 1, "a request to another context runs at once");
    });
    assert_eq!(a.get_events(1, 1, FIVE_SECONDS).unwrap()[0].data, 1);
}

// ---- io_cancel ----

fn cancel_of_a_request_no_longer_in_flight_is_einval(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    let done = ctx.submit_one(Request::noop()).unwrap();
    ctx.get_events(1, 1, FIVE_SECONDS).unwrap();
    assert_eq!(errno_of(&ctx.cancel(done).unwrap_err()), libc::EINVAL);
}

fn cancel_of_a_poll_delivers_ecanceled(engine: EngineKind) {
    let (r, _w) = pipe();
    let ctx = ctx(engine, 8);
    let poll = ctx
        .submit_one(Request::poll(r, libc::POLLIN as u16).data(5))
        .unwrap();
    ctx.cancel(poll)
        .expect("a poll is cancellable (in progress)");
    let event = &ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0];
    assert_eq!((event.data, event.res), (5, -(libc::ECANCELED as i64)));
    assert_eq!(
        errno_of(&ctx.cancel(poll).unwrap_err()),
        libc::EINVAL,
        "already done"
    );
}

/// Cancels `id` `times` times in a row; how many answered `Ok` (`-EINPROGRESS`). Every
/// other answer must be `EINVAL`.
fn cancel_repeatedly(ctx: &Context, id: RequestId, times: usize) -> usize {
    let mut in_progress = 0;
    for _ in 0..times {
        match ctx.cancel(id) {
            Ok(()) => in_progress += 1,
            Err(e) => assert_eq!(errno_of(&e), libc::EINVAL, "cancel answered {e}"),
        }
    }
    in_progress
}

fn a_poll_answers_cancel_once(engine: EngineKind) {
    let (r, _w) = pipe();
    let ctx = ctx(engine, 8);
    let poll = ctx
        .submit_one(Request::poll(r, libc::POLLIN as u16).data(5))
        .unwrap();
    assert_eq!(
        cancel_repeatedly(&ctx, poll, 1000),
        1,
        "one -EINPROGRESS, then EINVAL"
    );
    let events = ctx.get_events(1, 8, FIVE_SECONDS).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].res, -(libc::ECANCELED as i64));
    assert!(ctx
        .get_events(0, 8, Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    assert_eq!(ctx.stats().cancelled, 1);
}

fn a_direct_read_answers_cancel_at_most_once(engine: EngineKind) {
    let file = temp_file(1 << 20);
    let direct = open_direct(&file);
    let ctx = ctx(engine, 64);
    for round in 0..32u64 {
        let read = Request::read(
            direct.clone(),
            AlignedBuf::page_aligned(64 * 1024).unwrap(),
            (round % 16) * 64 * 1024,
        );
        let id = ctx.submit_one(read.data(round)).unwrap();
        let in_progress = cancel_repeatedly(&ctx, id, 1000);
        assert!(
            in_progress <= 1,
            "round {round}: {in_progress} cancels in progress"
        );
        let events = ctx.get_events(1, 8, FIVE_SECONDS).unwrap();
        assert_eq!(events.len(), 1, "round {round}");
        let res = events[0].res;
        assert!(
            res == 64 * 1024 || (in_progress == 1 && res == -(libc::ECANCELED as i64)),
            "round {round}: res {res} after {in_progress} cancels in progress"
        );
    }
    assert!(ctx
        .get_events(0, 8, Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
}

// ---- io_destroy ----

/// Starts `count` reads that block on an empty pipe; returns the write end.
fn reads_blocked_on_a_pipe(ctx: &Context, count: usize, mem: &Arc<SharedMem>) -> std::fs::File {
    let (r, w) = pipe();
    for i in 0..count {
        let request = Request::read_shared(r.clone(), mem, i * 16..(i + 1) * 16, 0).unwrap();
        ctx.submit_one(request.data(i as u64)).unwrap();
    }
    w
}

fn destroy_leaves_nothing_in_flight(engine: EngineKind) {
    let ctx = ctx(engine, 128);
    let mem = Arc::new(SharedMem::map(64 * 16).unwrap());
    let writer = reads_blocked_on_a_pipe(&ctx, 64, &mem);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(writer);
        });
        ctx.destroy().unwrap();
        assert_eq!(ctx.in_flight(), 0);
        assert_eq!(
            ctx.stats().completed,
            64,
            "every read completed or was cancelled"
        );
    });
}

/// A pipe read that waited for its data (the poller moves it, through a second open of the
/// FIFO where the engine makes one) holds no descriptor of the pipe once its event is
/// there: destroy right after it finds none (SPEC §1). Rounds, because what this guards
/// against was a window of a few instructions on another thread.
fn destroy_right_after_a_pipe_read_completes_leaves_no_descriptor_of_the_pipe(engine: EngineKind) {
    for round in 0..300 {
        let (r, mut w) = pipe();
        let ctx = ctx(engine, 8);
        ctx.submit_one(Request::read(r.clone(), vec![0u8; 8], 0).data(1))
            .unwrap();
        w.write_all(b"x").unwrap();
        let event = loop {
            if let Some(event) = ctx.get_events(0, 1, Some(Duration::ZERO)).unwrap().pop() {
                break event;
            }
            std::hint::spin_loop();
        };
        assert_eq!((event.data, event.res), (1, 1));
        ctx.destroy().unwrap();
        let w = Arc::new(w);
        assert_eq!(
            descriptors_on(&[&r], &[&r, &w]),
            Vec::<i32>::new(),
            "round {round}: a descriptor of the pipe is held after destroy"
        );
    }
}

fn destroy_cancels_polls_that_never_fire(engine: EngineKind) {
    let (r, _w) = pipe();
    let ctx = ctx(engine, 64);
    for i in 0..32 {
        ctx.submit_one(Request::poll(r.clone(), libc::POLLIN as u16).data(i))
            .unwrap();
    }
    ctx.destroy().unwrap();
    assert_eq!(ctx.stats().cancelled, 32);
    assert_eq!(ctx.state(), State::Dead);
}

fn concurrent_destroyers_all_wait_and_one_succeeds(engine: EngineKind, destroyers: usize) {
    let ctx = ctx(engine, 64);
    let mem = Arc::new(SharedMem::map(16 * 16).unwrap());
    let writer = reads_blocked_on_a_pipe(&ctx, 16, &mem);
    let barrier = Barrier::new(destroyers + 1);
    let oks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..destroyers {
            s.spawn(|| {
                barrier.wait();
                match ctx.destroy() {
                    Ok(()) => {
                        oks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => assert_eq!(errno_of(&e), libc::EINVAL),
                }
                assert_eq!(
                    ctx.in_flight(),
                    0,
                    "no destroyer returns while a request is in flight"
                );
            });
        }
        barrier.wait();
        std::thread::sleep(Duration::from_millis(100));
        drop(writer);
    });
    assert_eq!(oks.load(Ordering::Relaxed), 1);
}

fn two_concurrent_destroyers(engine: EngineKind) {
    concurrent_destroyers_all_wait_and_one_succeeds(engine, 2);
}

fn eight_concurrent_destroyers(engine: EngineKind) {
    concurrent_destroyers_all_wait_and_one_succeeds(engine, 8);
}

fn second_destroy_returns_einval(engine: EngineKind) {
    let ctx = ctx(engine, 8);
    ctx.destroy().unwrap();
    assert_eq!(errno_of(&ctx.destroy().unwrap_err()), libc::EINVAL);
}

fn drop_is_destroy(engine: EngineKind) {
    let mem = Arc::new(SharedMem::map(16 * 16).unwrap());
    let ctx = ctx(engine, 64);
    let writer = reads_blocked_on_a_pipe(&ctx, 16, &mem);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(writer);
        });
        drop(ctx);
    });
    assert_eq!(
        Arc::strong_count(&mem),
        1,
        "after drop no request holds the memory"
    );
}

// ---- §4 Rust API invariants ----

fn forgotten_context_keeps_request_memory_alive(engine: EngineKind) {
    let ctx = ctx(engine, 64);
    let mem = Arc::new(SharedMem::map(16 * 16).unwrap());
    let mut writer = reads_blocked_on_a_pipe(&ctx, 16, &mem);
    let weak = Arc::downgrade(&mem);
    drop(mem);
    std::mem::forget(ctx);
    assert!(
        weak.upgrade().is_some(),
        "in-flight requests keep their memory mapped"
    );
    writer.write_all(&[7u8; 16 * 16]).unwrap();
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(5);
    while weak.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "memory is let go once every request completed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn context_is_send_and_sync(_engine: EngineKind) {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Context>();
    assert_send_sync::<Request>();
}

/// Writes `buf` at `at` and reads the bytes back into `into`: both come back as themselves.
fn round_trip<W, R>(ctx: &Context, file: &Arc<std::fs::File>, buf: W, into: R, at: u64) -> (W, R)
where
    W: aioctx::IoBuf,
    R: aioctx::IoBufMut,
{
    let len = buf.bytes_init();
    ctx.submit_one(Request::write(file.clone(), buf, at))
        .unwrap();
    let done = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    assert_eq!(done.result().unwrap(), len);
    let written = done.into_buf::<W>().expect("the write's buffer, as itself");
    ctx.submit_one(Request::read(file.clone(), into, at))
        .unwrap();
    let done = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    assert_eq!(done.result().unwrap(), len);
    (
        written,
        done.into_buf::<R>().expect("the read's buffer, as itself"),
    )
}

fn every_buffer_type_round_trips_as_itself(engine: EngineKind) {
    let file = temp_file(0);
    let rw = open(&file, true, true);
    let ctx = ctx(engine, 8);
    let (w, r) = round_trip(&ctx, &rw, vec![1u8; 100], Vec::with_capacity(100), 0);
    assert_eq!((&w[..], &r[..]), (&[1u8; 100][..], &[1u8; 100][..]));
    let (w, r) = round_trip(
        &ctx,
        &rw,
        Box::<[u8]>::from(&[2u8; 64][..]),
        Box::<[u8]>::from(&[0u8; 64][..]),
        0,
    );
    assert_eq!((&w[..], &r[..]), (&[2u8; 64][..], &[2u8; 64][..]));
    let mut aligned = AlignedBuf::page_aligned(4096).unwrap();
    aligned.fill(3);
    let (w, r) = round_trip(
        &ctx,
        &rw,
        aligned,
        AlignedBuf::page_aligned(4096).unwrap(),
        0,
    );
    assert!(w.iter().chain(r.iter()).all(|&b| b == 3));
    static WRITTEN: &[u8] = b"static bytes";
    let into: &'static mut [u8] = Box::leak(vec![0u8; WRITTEN.len()].into_boxed_slice());
    let (w, r) = round_trip(&ctx, &rw, WRITTEN, into, 0);
    assert_eq!((w, &r[..]), (WRITTEN, WRITTEN));
    let from: &'static mut [u8] = Box::leak(vec![4u8; 32].into_boxed_slice());
    let (w, r) = round_trip(&ctx, &rw, from, vec![0u8; 32], 0);
    assert_eq!((&w[..], &r[..]), (&[4u8; 32][..], &[4u8; 32][..]));
    #[cfg(feature = "bytes")]
    {
        let (w, r) = round_trip(
            &ctx,
            &rw,
            bytes::Bytes::from_static(b"bytes"),
            bytes::BytesMut::with_capacity(5),
            0,
        );
        assert_eq!((&w[..], &r[..]), (&b"bytes"[..], &b"bytes"[..]));
        let (w, r) = round_trip(
            &ctx,
            &rw,
            bytes::BytesMut::from(&b"mut"[..]),
            vec![0u8; 3],
            0,
        );
        assert_eq!((&w[..], &r[..]), (&b"mut"[..], &b"mut"[..]));
    }
}

fn a_buffer_asked_for_as_another_type_is_not_handed_back(engine: EngineKind) {
    let file = temp_file(16);
    let ctx = ctx(engine, 8);
    ctx.submit_one(Request::read(open(&file, true, false), vec![0u8; 16], 0))
        .unwrap();
    let done = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    assert!(done.into_buf::<Box<[u8]>>().is_none());
}

macro_rules! engines {
    ($($engine:ident => $kind:expr),* $(,)?) => {
        const COVERED: &[EngineKind] = &[$($kind),*];
        $(mod $engine {
            use super::*;
            engines!(@tests $kind;
                setup_rejects_zero_events, setup_rejects_absurd_size,
                setup_beyond_aio_max_nr_is_eagain, ring_has_the_kernel_layout,
                submit_of_nothing_returns_zero, batch_is_clamped_to_the_ring,
                full_ring_is_eagain_until_events_are_reaped,
                failure_mid_batch_returns_count_before_it, first_failure_is_the_error,
                read_of_write_only_file_is_ebadf, write_of_read_only_file_is_ebadf,
                io_on_a_path_only_descriptor_is_ebadf, read_of_a_directory_is_einval,
                negative_offset_is_einval,
                fsync_with_rw_flags_is_einval, poll_with_rw_flags_is_einval,
                resfd_that_is_not_an_eventfd_is_einval, submit_after_destroy_is_einval,
                shared_range_outside_memory_is_einval, reads_and_writes_round_trip,
                short_read_at_end_of_file_is_not_an_error,
                fsync_fdsync_and_noop_complete_with_zero, event_carries_data_and_its_request_id,
                direct_io_round_trips_with_aligned_buffers, misaligned_direct_io_is_einval,
                poll_completes_with_the_ready_mask,
                resfd_is_signalled_after_the_event_is_in_the_ring, min_above_max_is_einval,
                zero_timeout_does_not_wait, timeout_elapses_with_what_is_there,
                events_come_oldest_first, get_events_after_destroy_is_einval,
                waiter_in_get_events_leaves_on_destroy,
                two_waiters_in_get_events_leave_on_destroy,
                four_waiters_in_get_events_leave_on_destroy,
                eight_waiters_in_get_events_leave_on_destroy,
                every_waiter_wakes_for_posted_events,
                many_threads_submit_and_reap_at_once, a_batch_holds_back_only_its_own_context,
                cancel_of_a_request_no_longer_in_flight_is_einval,
                cancel_of_a_poll_delivers_ecanceled, a_poll_answers_cancel_once,
                a_direct_read_answers_cancel_at_most_once, destroy_leaves_nothing_in_flight,
                destroy_cancels_polls_that_never_fire,
                destroy_right_after_a_pipe_read_completes_leaves_no_descriptor_of_the_pipe,
                two_concurrent_destroyers,
                eight_concurrent_destroyers, second_destroy_returns_einval, drop_is_destroy,
                forgotten_context_keeps_request_memory_alive, context_is_send_and_sync,
                every_buffer_type_round_trips_as_itself,
                a_buffer_asked_for_as_another_type_is_not_handed_back);
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

#[test]
fn every_engine_is_covered() {
    assert_eq!(COVERED, &EngineKind::ALL[..]);
}

#[test]
fn a_submit_error_is_an_error_that_says_why() {
    let ctx = Context::builder()
        .depth(8)
        .engine(EngineKind::Threads)
        .build()
        .unwrap();
    ctx.destroy().unwrap();
    let refused = ctx.submit_one(Request::noop()).unwrap_err();
    let source = std::error::Error::source(&refused).map(|e| e.to_string());
    assert_eq!(source, Some(refused.error.to_string()));
    assert!(refused.to_string().contains("Noop"), "{refused}");
}
