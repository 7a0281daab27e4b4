//! The simulator's promises: the same seed gives the same run; faults and delays are
//! injected as configured; what is still pending can be cancelled.

mod common;

use std::time::Duration;

use aioctx::{AlignedBuf, Context, Request, RwFlags, SharedMem, SimConfig, SimMachine};
use common::*;

const FIVE_SECONDS: Option<Duration> = Some(Duration::from_secs(5));

fn config(text: &str) -> SimConfig {
    text.parse().expect("valid AIOCTX_SIM text")
}

/// Submits a mixed batch and returns `(data, res)` in completion order.
fn run(config: SimConfig) -> Vec<(u64, i64)> {
    let file = temp_file(64 * 4096);
    let rw = open(&file, true, true);
    let ctx = Context::builder()
        .depth(128)
        .simulator(config)
        .build()
        .unwrap();
    let mut batch: Vec<Request> = (0..64u64)
        .map(|i| {
            let offset = i * 4096;
            if i % 3 == 0 {
                Request::write(rw.clone(), vec![i as u8; 4096], offset).data(i)
            } else {
                Request::read(rw.clone(), vec![0u8; 4096], offset).data(i)
            }
        })
        .collect();
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 64);
    let events = ctx.get_events(64, 64, FIVE_SECONDS).unwrap();
    events.iter().map(|e| (e.data, e.res)).collect()
}

#[test]
fn same_seed_gives_the_same_order_faults_and_results() {
    let text = "seed=7,eio=0.2,enospc=0.2,short=0.2,delay=2ms..8ms";
    let first = run(config(text));
    assert_eq!(first.len(), 64);
    assert_eq!(first, run(config(text)));
    let in_submit_order: Vec<u64> = (0..64).collect();
    let order: Vec<u64> = first.iter().map(|(data, _)| *data).collect();
    assert_ne!(order, in_submit_order, "delays reorder completions");
    assert_ne!(
        first,
        run(config("seed=8,eio=0.2,enospc=0.2,short=0.2,delay=2ms..8ms"))
    );
}

#[test]
fn eio_fails_reads_writes_and_syncs_but_not_noops() {
    let file = temp_file(4096);
    let rw = open(&file, true, true);
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("eio=1"))
        .build()
        .unwrap();
    let mut batch = vec![
        Request::read(rw.clone(), vec![0u8; 16], 0).data(1),
        Request::write(rw.clone(), vec![0u8; 16], 0).data(2),
        Request::fsync(rw).data(3),
        Request::noop().data(4),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 4);
    let mut results: Vec<(u64, i64)> = ctx
        .get_events(4, 4, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| (e.data, e.res))
        .collect();
    results.sort();
    let eio = -(libc::EIO as i64);
    assert_eq!(results, vec![(1, eio), (2, eio), (3, eio), (4, 0)]);
}

#[test]
fn enospc_fails_writes_only() {
    let file = temp_file(4096);
    let rw = open(&file, true, true);
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("enospc=1"))
        .build()
        .unwrap();
    let mut batch = vec![
        Request::write(rw.clone(), vec![0u8; 16], 0).data(1),
        Request::read(rw, vec![0u8; 16], 0).data(2),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap().len(), 2);
    let mut results: Vec<(u64, i64)> = ctx
        .get_events(2, 2, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| (e.data, e.res))
        .collect();
    results.sort();
    assert_eq!(results, vec![(1, -(libc::ENOSPC as i64)), (2, 16)]);
}

#[test]
fn short_transfers_move_a_true_prefix() {
    let file = temp_file(8192);
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("seed=3,short=1"))
        .build()
        .unwrap();
    ctx.submit_one(Request::read(open(&file, true, false), vec![0u8; 8192], 0))
        .unwrap();
    let event = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    let n = event.result().unwrap();
    assert!(n > 0 && n < 8192, "a short read moved {n} bytes");
    let buf = event.into_buf::<Vec<u8>>().unwrap();
    let expected: Vec<u8> = (0..n).map(pattern).collect();
    assert_eq!(&buf[..n], &expected[..]);
    assert!(
        buf[n..].iter().all(|&b| b == 0),
        "nothing past the short count was written"
    );
}

/// One request on a fresh simulated context; its event's `res` and buffer, if aligned.
fn one(config: &SimConfig, request: Request) -> (i64, Option<AlignedBuf>) {
    let ctx = Context::builder()
        .depth(4)
        .simulator(config.clone())
        .build()
        .unwrap();
    ctx.submit_one(request).unwrap();
    let event = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    (event.res, event.into_buf::<AlignedBuf>())
}

/// O_DIRECT as the kernel checks it, with the simulator's `sector=` as the device's
/// logical block size: an offset, a length or a buffer address that is not a multiple of
/// it fails the request with `EINVAL` (in its event, as kernel AIO and io_uring report
/// it), reads and writes alike; aligned ones run. Not an injected fault.
#[test]
fn direct_io_unaligned_to_the_sector_fails_einval() {
    let file = temp_file(64 * 1024);
    let direct = open_direct(&file);
    let einval = -(libc::EINVAL as i64);
    let mem = std::sync::Arc::new(SharedMem::map(4 * 4096).unwrap());
    for sector in [512usize, 4096] {
        let config = config(&format!("sector={sector}"));
        let buf = |len: usize| AlignedBuf::new(len, 4096).unwrap();
        let read =
            |len: usize, offset: usize| Request::read(direct.clone(), buf(len), offset as u64);
        let write = |len: usize, offset: usize| {
            Request::write(direct.clone(), buf(len), (32 * 1024 + offset) as u64)
        };
        let cases = [
            ("aligned read", read(2 * sector, sector), 2 * sector as i64),
            (
                "aligned write",
                write(2 * sector, sector),
                2 * sector as i64,
            ),
            ("read at half a sector", read(sector, sector / 2), einval),
            ("write at half a sector", write(sector, sector / 2), einval),
            (
                "read of a sector and a half",
                read(sector + sector / 2, 0),
                einval,
            ),
            (
                "write of a sector and a half",
                write(sector + sector / 2, 0),
                einval,
            ),
            (
                "read into memory half a sector in",
                Request::read_shared(direct.clone(), &mem, sector / 2..sector / 2 + sector, 0)
                    .unwrap(),
                einval,
            ),
            (
                "read into aligned memory",
                Request::read_shared(direct.clone(), &mem, sector..2 * sector, 0).unwrap(),
                sector as i64,
            ),
        ];
        for (what, request, expected) in cases {
            assert_eq!(one(&config, request).0, expected, "sector={sector}: {what}");
        }
        let machine = SimMachine::new(config.clone());
        let ctx = machine.context(4).unwrap();
        ctx.submit_one(read(sector, 1)).unwrap();
        ctx.get_events(1, 1, FIVE_SECONDS).unwrap();
        assert_eq!(
            machine.faults(),
            0,
            "an unaligned request is no injected fault"
        );
    }
}

/// A short transfer injected on O_DIRECT moves whole sectors (at least one, fewer than
/// all): what is left is a request the kernel would take, and the bytes moved are the
/// file's. A request of one sector is never cut.
#[test]
fn short_transfers_of_direct_io_stay_sector_aligned() {
    let file = temp_file(256 * 1024);
    let direct = open_direct(&file);
    for sector in [512usize, 4096] {
        for seed in 0..20u64 {
            let config = config(&format!("seed={seed},short=1,sector={sector}"));
            let len = 16 * 1024;
            let offset = 4096 * seed as usize;
            let request = Request::read(
                direct.clone(),
                AlignedBuf::new(len, 4096).unwrap(),
                offset as u64,
            );
            let (res, buf) = one(&config, request);
            let n = usize::try_from(res).unwrap_or_else(|_| panic!("sector={sector}: res {res}"));
            assert!(
                n > 0 && n < len && n % sector == 0,
                "sector={sector}: moved {n}"
            );
            let buf = buf.unwrap();
            assert!((0..n).all(|i| buf[i] == pattern(offset + i)));
            let write = Request::write(
                direct.clone(),
                AlignedBuf::new(len, 4096).unwrap(),
                (128 * 1024 + offset) as u64,
            );
            let (res, _) = one(&config, write);
            assert!(
                res > 0 && res % sector as i64 == 0 && res < len as i64,
                "write moved {res}"
            );
            let single = Request::read(direct.clone(), AlignedBuf::new(sector, 4096).unwrap(), 0);
            assert_eq!(
                one(&config, single).0,
                sector as i64,
                "one sector is never cut"
            );
        }
    }
}

#[test]
fn a_reap_moves_the_virtual_clock_to_the_next_due_time() {
    let machine = SimMachine::new(config("delay=300ms,idle=off"));
    let ctx = machine.context(16).unwrap();
    ctx.submit_one(Request::noop().data(1)).unwrap();
    ctx.submit_one(Request::noop().data(2)).unwrap();
    assert_eq!(
        machine.now(),
        Duration::ZERO,
        "submitting does not move the clock"
    );
    let first = ctx.get_events(0, 2, Some(Duration::ZERO)).unwrap();
    assert_eq!(first.iter().map(|e| e.data).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(machine.now(), Duration::from_millis(300));
}

#[test]
fn pending_request_is_cancelled() {
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("delay=10s"))
        .build()
        .unwrap();
    let id = ctx.submit_one(Request::noop().data(1)).unwrap();
    ctx.cancel(id).unwrap();
    let event = &ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0];
    assert_eq!(event.res, -(libc::ECANCELED as i64));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    for text in [
        "eio=2",
        "bogus=1",
        "seed=x",
        "delay=5ms..1ms",
        "delay=3 parsecs",
        "eio",
    ] {
        let err = text.parse::<SimConfig>().expect_err(text);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{text}");
        assert!(err.to_string().starts_with("AIOCTX_SIM: "), "{err}");
    }
}

// ---- virtual time: the same seed and calls give the same run, whatever the load ----

/// A run of 1,200 requests in batches of 8 (writes, reads, fsyncs; some cancelled), reaped
/// a few at a time while more are submitted: every event (order, result, the bytes a read
/// returned) and every cancel's answer, in the order the caller saw them.
fn trace(config: &SimConfig) -> Vec<String> {
    let file = temp_file(64 * 4096);
    let rw = open(&file, true, true);
    let machine = SimMachine::new(config.clone());
    let ctx = machine.context(256).unwrap();
    let mut seen = Vec::new();
    let mut outstanding = 0usize;
    let record = |seen: &mut Vec<String>, events: Vec<aioctx::Completion>| {
        for event in events {
            let (data, res) = (event.data, event.res);
            let digest = event.into_buf::<Vec<u8>>().map_or(0, |buf| fnv(&buf));
            seen.push(format!("event {data} {res} {digest:016x}"));
        }
    };
    for round in 0..150u64 {
        let mut batch: Vec<Request> = (0..8u64)
            .map(|i| {
                let data = round * 8 + i;
                let offset = (data * 7 % 64) * 4096;
                match data % 5 {
                    0 | 1 => Request::write(rw.clone(), vec![data as u8; 4096], offset),
                    2 => Request::fsync(rw.clone()),
                    _ => Request::read(rw.clone(), vec![0u8; 4096], offset),
                }
                .data(data)
            })
            .collect();
        let ids = ctx.submit(&mut batch).unwrap();
        assert_eq!(ids.len(), 8);
        outstanding += 8;
        if round % 10 == 3 {
            let answer = ctx.cancel(ids[7]).map_err(|e| errno_of(&e));
            seen.push(format!("cancel {} {answer:?}", round * 8 + 7));
        }
        let min = if outstanding > 32 { 8 } else { 4 };
        let events = ctx.get_events(min, 12, None).unwrap();
        outstanding -= events.len();
        record(&mut seen, events);
    }
    while outstanding > 0 {
        let events = ctx.get_events(1, outstanding, None).unwrap();
        outstanding -= events.len();
        record(&mut seen, events);
    }
    seen
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `idle=off`: only the caller's calls move the clock, however long the load stalls it.
const TRACE_CONFIG: &str =
    "seed=11,eio=0.05,enospc=0.03,short=0.05,delay=10us..5ms,latency=tail,idle=off";

/// Busy loops in other processes, killed on drop.
struct Load(Vec<std::process::Child>);

impl Load {
    fn start(processes: usize) -> Load {
        Load(
            (0..processes)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn same_seed_same_calls_same_events_under_load_and_other_worker_counts() {
    let config = config(TRACE_CONFIG);
    let quiet = trace(&config);
    assert!(
        quiet.len() >= 1_200,
        "every request's event is in the trace"
    );
    let replay = format!("AIOCTX_SIM={config}");
    let load = Load::start(3);
    assert_eq!(quiet, trace(&config), "under load; replay with {replay}");
    // Another process, with another worker count, under the same load.
    let out_path = std::env::temp_dir().join(format!("aioctx-sim-trace-{}", std::process::id()));
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "trace_child_or_seeds_differ", "--nocapture"])
        .env("AIOCTX_SIM_TRACE_TO", &out_path)
        .env("AIOCTX_WORKERS", "1")
        .output()
        .unwrap();
    drop(load);
    assert!(child.status.success(), "{child:?}");
    let theirs = std::fs::read_to_string(&out_path).unwrap();
    let _ = std::fs::remove_file(&out_path);
    assert_eq!(
        quiet,
        theirs.lines().map(str::to_owned).collect::<Vec<_>>(),
        "AIOCTX_WORKERS=1 in another process; replay with {replay}"
    );
}

/// In the child of the test above, writes the trace; run as a test of its own, checks
/// that another seed gives another run.
#[test]
fn trace_child_or_seeds_differ() {
    let config = config(TRACE_CONFIG);
    if let Some(path) = std::env::var_os("AIOCTX_SIM_TRACE_TO") {
        std::fs::write(path, trace(&config).join("\n")).unwrap();
        return;
    }
    let other = SimConfig {
        seed: 12,
        ..config.clone()
    };
    assert_ne!(trace(&config), trace(&other));
}

#[test]
fn reorder_zero_completes_in_submit_order() {
    let ctx = Context::builder()
        .depth(64)
        .simulator(config("seed=5,delay=0..10ms,reorder=0"))
        .build()
        .unwrap();
    let mut batch: Vec<Request> = (0..64).map(|i| Request::noop().data(i)).collect();
    ctx.submit(&mut batch).unwrap();
    let order: Vec<u64> = ctx
        .get_events(64, 64, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(order, (0..64).collect::<Vec<_>>());
}

#[test]
fn reorder_bound_limits_how_many_later_requests_overtake() {
    let ctx = Context::builder()
        .depth(256)
        .simulator(config("seed=5,delay=0..10ms,reorder=3"))
        .build()
        .unwrap();
    let mut batch: Vec<Request> = (0..200).map(|i| Request::noop().data(i)).collect();
    ctx.submit(&mut batch).unwrap();
    let order: Vec<u64> = ctx
        .get_events(200, 200, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| e.data)
        .collect();
    assert_ne!(
        order,
        (0..200).collect::<Vec<_>>(),
        "some reordering happens"
    );
    for (at, &data) in order.iter().enumerate() {
        let overtaken_by = order[..at].iter().filter(|&&d| d > data).count();
        assert!(overtaken_by <= 3, "{data} was overtaken by {overtaken_by}");
    }
}

#[test]
fn tail_latency_puts_most_requests_near_the_minimum() {
    let machine = SimMachine::new(config("seed=9,delay=0..1s,latency=tail,idle=off"));
    let ctx = machine.context(1024).unwrap();
    let mut batch: Vec<Request> = (0..1000).map(|i| Request::noop().data(i)).collect();
    ctx.submit(&mut batch).unwrap();
    let mut at_half = None;
    let mut reaped = 0;
    while reaped < 1000 {
        reaped += ctx.get_events(1, 1000, FIVE_SECONDS).unwrap().len();
        if at_half.is_none() && reaped >= 500 {
            at_half = Some(machine.now());
        }
    }
    let median = at_half.unwrap();
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(
        machine.now() > Duration::from_millis(300),
        "tail {:?}",
        machine.now()
    );
}

#[test]
fn virtual_delays_cost_no_real_time() {
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("delay=1000s"))
        .build()
        .unwrap();
    ctx.submit_one(Request::noop().data(1)).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(ctx.get_events(1, 1, None).unwrap()[0].data, 1);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn an_idle_machine_runs_its_clock_for_callers_that_wait_elsewhere() {
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("delay=1s"))
        .build()
        .unwrap();
    ctx.submit_one(Request::noop().data(1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ctx.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle rule ran the clock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let strict = Context::builder()
        .depth(16)
        .simulator(config("delay=1s,idle=off"))
        .build()
        .unwrap();
    strict.submit_one(Request::noop().data(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        strict.in_flight(),
        1,
        "with idle=off only calls move the clock"
    );
}

/// A simulated context's machine opens the files it writes a second time (to roll them
/// back at a crash); on a machine of the context's own, destroy closes them: when destroy
/// returns, nothing of the context holds the caller's file open, as on every engine. A
/// machine shared by contexts keeps them until the machine goes (a later crash needs them).
#[test]
fn destroy_of_a_simulated_context_closes_its_descriptors_of_the_callers_files() {
    let file = temp_file(8192);
    let rw = open(&file, true, true);
    let ctx = Context::builder()
        .depth(4)
        .simulator(SimConfig::default())
        .build()
        .unwrap();
    ctx.submit_one(Request::write(rw.clone(), vec![1u8; 4096], 0))
        .unwrap();
    ctx.get_events(1, 1, FIVE_SECONDS).unwrap();
    assert!(
        !descriptors_on(&[&rw], &[&rw]).is_empty(),
        "the machine keeps the file it wrote while the context lives"
    );
    ctx.destroy().unwrap();
    assert_eq!(descriptors_on(&[&rw], &[&rw]), Vec::<i32>::new());
    let machine = SimMachine::new(SimConfig::default());
    let shared = machine.context(4).unwrap();
    shared
        .submit_one(Request::write(rw.clone(), vec![2u8; 4096], 0))
        .unwrap();
    shared.get_events(1, 1, FIVE_SECONDS).unwrap();
    shared.destroy().unwrap();
    assert!(!descriptors_on(&[&rw], &[&rw]).is_empty());
    machine.crash().unwrap();
    let mut now = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&*rw, &mut now, 0).unwrap();
    assert!(
        now.iter().all(|&b| b == 1),
        "the crash after destroy rolled back the unsynced write"
    );
    drop((shared, machine));
    assert_eq!(descriptors_on(&[&rw], &[&rw]), Vec::<i32>::new());
}

#[test]
fn stuck_requests_complete_only_when_cancelled_or_destroyed() {
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("stuck=1"))
        .build()
        .unwrap();
    let ids: Vec<_> = (0..4)
        .map(|i| ctx.submit_one(Request::noop().data(i)).unwrap())
        .collect();
    assert!(ctx
        .get_events(1, 4, Some(Duration::from_millis(100)))
        .unwrap()
        .is_empty());
    ctx.cancel(ids[2]).unwrap();
    let event = ctx.get_events(1, 4, FIVE_SECONDS).unwrap();
    assert_eq!(
        (event[0].data, event[0].res),
        (2, -(libc::ECANCELED as i64))
    );
    ctx.destroy().unwrap();
    assert_eq!(ctx.stats().cancelled, 4);
}

#[test]
fn cancel_and_destroy_on_a_shared_machine_take_only_their_own_contexts_requests() {
    // Two contexts of one machine with the same request identities, on the clock and
    // parked on a pipe: what one cancels or destroys is never the other's.
    let machine = SimMachine::new(config("seed=2,delay=10ms"));
    let (mine, theirs) = (machine.context(16).unwrap(), machine.context(16).unwrap());
    let (r_mine, _w_mine) = pipe();
    let (r_theirs, mut w_theirs) = pipe();
    let mut ids = Vec::new();
    for ctx in [&mine, &theirs] {
        let own: Vec<_> = (0..6)
            .map(|i| ctx.submit_one(Request::noop().data(i)).unwrap())
            .collect();
        ids.push(own);
    }
    mine.submit_one(Request::read(r_mine, vec![0u8; 8], 0).data(6))
        .unwrap();
    theirs
        .submit_one(Request::read(r_theirs, vec![0u8; 8], 0).data(6))
        .unwrap();
    assert_eq!(ids[0], ids[1], "both contexts use the same identities");
    mine.cancel(ids[0][3]).unwrap();
    mine.destroy().unwrap();
    assert_eq!(mine.stats().cancelled, 7);
    assert_eq!(theirs.stats().cancelled, 0);
    std::io::Write::write_all(&mut w_theirs, b"abc").unwrap();
    let mut events: Vec<(u64, i64)> = theirs
        .get_events(7, 7, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| (e.data, e.res))
        .collect();
    events.sort();
    let mut expected: Vec<(u64, i64)> = (0..6).map(|i| (i, 0)).collect();
    expected.push((6, 3));
    assert_eq!(events, expected);
}

#[test]
fn a_context_waiting_only_on_a_pipe_sleeps_and_is_destroyed() {
    let (r, mut w) = pipe();
    let ctx = Context::builder()
        .depth(16)
        .simulator(config("seed=1"))
        .build()
        .unwrap();
    ctx.submit_one(Request::read(r.clone(), vec![0u8; 8], 0).data(1))
        .unwrap();
    let started = std::time::Instant::now();
    assert!(ctx
        .get_events(1, 1, Some(Duration::from_millis(200)))
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200), "it slept");
    std::io::Write::write_all(&mut w, b"abc").unwrap();
    let event = &ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0];
    assert_eq!((event.data, event.res), (1, 3));
    ctx.submit_one(Request::read(r, vec![0u8; 8], 0).data(2))
        .unwrap();
    ctx.destroy().unwrap();
    assert_eq!(ctx.stats().cancelled, 1);
}

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn fds_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn live_sim_contexts_cost_no_thread_or_fd() {
    let machine = SimMachine::new(config("seed=1"));
    let warm = machine.context(4).unwrap();
    warm.submit_one(Request::noop()).unwrap();
    warm.get_events(1, 1, FIVE_SECONDS).unwrap();
    let (threads, fds) = (threads_of_this_process(), fds_of_this_process());
    let contexts: Vec<Context> = (0..10_000)
        .map(|_| {
            Context::builder()
                .depth(4)
                .simulator(config("seed=1"))
                .build()
                .unwrap()
        })
        .collect();
    for ctx in contexts.iter().step_by(100) {
        ctx.submit_one(Request::noop().data(3)).unwrap();
        assert_eq!(ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0].data, 3);
    }
    // Other tests of this binary run meanwhile: allow for their threads and files.
    assert!(threads_of_this_process() < threads + 50, "threads grew");
    assert!(fds_of_this_process() < fds + 200, "fds grew");
    drop(contexts);
}

// ---- replay ----

#[test]
fn the_replay_line_parses_back_to_the_same_configuration() {
    for text in [
        "",
        TRACE_CONFIG,
        "seed=3,stuck=0.1,delay=0..0,reorder=2,crash=5..90,sector=4096",
        "seed=18446744073709551615,eio=0.1234567,delay=1500ns..2s,crash=7",
        "idle=off",
        "idle=250us",
    ] {
        let config = config(text);
        let line = config.to_string();
        assert_eq!(line.parse::<SimConfig>().unwrap(), config, "{line}");
        assert!(!line.contains('\n'));
    }
}

#[test]
fn the_replay_line_reproduces_the_run() {
    let machine = SimMachine::new(config("seed=21,eio=0.1,short=0.1,delay=0..3ms"));
    let line = machine.replay_line();
    let first = run(machine.config().clone());
    assert_eq!(first, run(line.parse().unwrap()), "AIOCTX_SIM={line}");
}

#[test]
fn degenerate_configurations_are_errors_never_panics() {
    for text in [
        "delay=2ms..10us",
        "delay=..",
        "delay=1ms..",
        "delay=99999999999999999999s",
        "delay=18446744073709551615s",
        "delay=2d",
        "eio=-0.1",
        "eio=1.5",
        "short=NaN",
        "stuck=inf",
        "reorder=-1",
        "crash=0",
        "crash=9..3",
        "sector=1000",
        "idle=forever",
        "idle=2d",
        "latency=cauchy",
        "=",
        ",,=,,",
        "seed=1,seed",
        "\u{0}=\u{0}",
    ] {
        let err = text.parse::<SimConfig>().expect_err(text);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{text}");
        assert!(err.to_string().starts_with("AIOCTX_SIM: "), "{err}");
    }
    // Zero and the widest delays are fine, and run.
    for text in ["delay=0..0", "delay=0", "delay=0ns..86400s", "delay=86400s"] {
        let ctx = Context::builder()
            .depth(4)
            .simulator(config(text))
            .build()
            .unwrap();
        ctx.submit_one(Request::noop().data(1)).unwrap();
        assert_eq!(
            ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0].data,
            1,
            "{text}"
        );
    }
}

// ---- power loss ----

fn write_and_wait(ctx: &Context, request: Request) -> i64 {
    ctx.submit_one(request).unwrap();
    ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0].res
}

/// What survives one crash: the fate of the write in flight (0 absent, 1 whole, 2 torn).
fn crash_once(text: &str) -> u8 {
    let len = 64 * 1024;
    let file = temp_file(len);
    let rw = open(&file, true, true);
    let machine = SimMachine::new(config(text));
    let ctx = machine.context(16).unwrap();
    let line = machine.replay_line();
    let ok = |res: i64, n: i64| assert_eq!(res, n, "AIOCTX_SIM={line}");
    ok(
        write_and_wait(&ctx, Request::write(rw.clone(), vec![0xaa; 8192], 0)),
        8192,
    );
    ok(write_and_wait(&ctx, Request::fsync(rw.clone())), 0);
    let dsync = Request::write(rw.clone(), vec![0xdd; 4096], 49152).rw_flags(RwFlags::DSYNC);
    ok(write_and_wait(&ctx, dsync), 4096);
    // Completed but never synced: gone after the crash, also past the end of the file.
    ok(
        write_and_wait(&ctx, Request::write(rw.clone(), vec![0xbb; 8192], 16384)),
        8192,
    );
    ok(
        write_and_wait(&ctx, Request::write(rw.clone(), vec![0xee; 8192], 65536)),
        8192,
    );
    // In flight at the crash, from the middle of a sector.
    let torn_at = 32768 + 100;
    ctx.submit_one(Request::write(rw.clone(), vec![0xcc; 9000], torn_at as u64).data(9))
        .unwrap();
    machine.crash().unwrap();
    let event = &ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0];
    ok(event.res, -(libc::EIO as i64));
    ok(
        write_and_wait(&ctx, Request::read(rw, vec![0u8; 16], 0)),
        -(libc::EIO as i64),
    );

    let after = std::fs::read(&file.path).unwrap();
    let original: Vec<u8> = (0..len).map(pattern).collect();
    assert_eq!(
        after.len(),
        len,
        "unsynced growth is gone; AIOCTX_SIM={line}"
    );
    assert!(
        after[..8192].iter().all(|&b| b == 0xaa),
        "fsynced data survives"
    );
    assert!(
        after[49152..53248].iter().all(|&b| b == 0xdd),
        "RWF_DSYNC data survives"
    );
    assert_eq!(
        after[16384..24576],
        original[16384..24576],
        "unsynced writes are gone"
    );
    let region = torn_at..torn_at + 9000;
    let landed = after[region.clone()]
        .iter()
        .take_while(|&&b| b == 0xcc)
        .count();
    assert_eq!(
        after[torn_at + landed..region.end],
        original[torn_at + landed..region.end],
        "past what landed, the old data; AIOCTX_SIM={line}"
    );
    let outside: Vec<usize> = (0..len)
        .filter(|i| !(0..8192).contains(i) && !(49152..53248).contains(i) && !region.contains(i))
        .filter(|&i| after[i] != original[i])
        .collect();
    assert!(
        outside.is_empty(),
        "nothing else changed; AIOCTX_SIM={line}"
    );
    match landed {
        0 => 0,
        9000 => 1,
        n => {
            let sector = machine.config().sector as usize;
            assert_eq!(
                (torn_at + n) % sector,
                0,
                "torn at a sector boundary; AIOCTX_SIM={line}"
            );
            2
        }
    }
}

#[test]
fn after_a_crash_exactly_the_synced_data_survives() {
    for sector in [512, 4096] {
        let fates: Vec<u8> = (0..30)
            .map(|seed| crash_once(&format!("seed={seed},sector={sector},idle=off")))
            .collect();
        for fate in 0..3 {
            assert!(fates.contains(&fate), "fate {fate} never drawn: {fates:?}");
        }
    }
}

#[test]
fn a_seeded_crash_point_fails_every_later_request_with_eio() {
    let file = temp_file(8192);
    let rw = open(&file, true, true);
    let machine = SimMachine::new(config("seed=4,crash=3"));
    let ctx = machine.context(16).unwrap();
    let other = machine.context(16).unwrap();
    let write = |i: u64| Request::write(rw.clone(), vec![i as u8; 512], i * 512);
    let eio = -(libc::EIO as i64);
    assert_eq!(write_and_wait(&ctx, write(0)), 512);
    assert_eq!(write_and_wait(&ctx, write(1)), 512);
    assert_eq!(
        write_and_wait(&ctx, Request::fsync(rw.clone())),
        eio,
        "power goes here"
    );
    assert_eq!(write_and_wait(&ctx, write(3)), eio);
    assert!(machine.crashed());
    assert_eq!(
        write_and_wait(&other, Request::noop()),
        eio,
        "every context of the machine"
    );
    let after = std::fs::read(&file.path).unwrap();
    let original: Vec<u8> = (0..8192).map(pattern).collect();
    assert_eq!(after, original, "nothing was synced: nothing changed");
}

#[test]
fn the_crash_recovery_example_finds_loss_only_without_fsync() {
    let with_fsync = crash_recovery::sweep(true, 40);
    assert_eq!(with_fsync.crash_points, 40);
    assert_eq!(
        with_fsync.lost, 0,
        "first loss: {:?}",
        with_fsync.first_loss
    );
    let without = crash_recovery::sweep(false, 40);
    assert_eq!(without.crash_points, 40);
    assert!(without.lost > 0, "the sweep catches the missing fsync");
    assert!(without.first_loss.is_some());
}

#[allow(dead_code)]
#[path = "../examples/crash_recovery.rs"]
mod crash_recovery;
