//! The simulator: a deterministic, fault-injecting engine for tests, of aioctx and of the
//! storage engines built on it, with power loss.
//!
//! # Virtual time
//!
//! A [`SimMachine`] has one clock, in virtual nanoseconds, that never reads a real clock.
//! Every request draws, at submit and in submit order, from a generator seeded by
//! `SimConfig::seed`: its fault (`EIO`, `ENOSPC`, a short transfer, stuck) and its latency;
//! it is due at the virtual now plus its latency (never before a request submitted more than
//! `reorder` requests earlier). The clock moves by this rule only:
//!
//! - **Submitting never moves it.** A request with no latency is due at once.
//! - **Each reap moves it one step.** Every get_events call, and every time a get_events
//!   that has fewer events than it needs would sleep, runs what is due now or, if nothing
//!   is, moves the clock to the next due time and runs what is due then: the requests run
//!   (really, against their files) and complete in (due time, submit order). A get_events
//!   that needs more steps takes them at once, without sleeping; it sleeps only when nothing
//!   can complete (stuck requests, pipes without a peer, polls).
//! - **Destroy and cancel** complete what they take with `-ECANCELED` and leave the clock.
//!
//! So one thread's sequence of calls and the seed fix the order, the faults and the results,
//! whatever the machine's speed or load and whatever `AIOCTX_WORKERS` says: no wall clock,
//! no worker thread is involved. Outside that guarantee, by nature: pipes, sockets and
//! polls (they wait for a real peer). And one rule for callers that wait outside aioctx (on
//! an eventfd, or reading the ring as QEMU and fio's `userspace_reap` do): if a machine with
//! requests that can complete sees no call for `idle` of real time (default 50 ms), its
//! clock runs until nothing more can complete. A caller that reaps through get_events never
//! leaves the machine idle that long unless it pauses (or is descheduled) for that long with
//! requests pending; `idle=off` turns the rule off and makes the guarantee unconditional.
//!
//! Nothing runs per context: a context on the simulator has no thread and no descriptor of
//! its own. Requests run on the thread that reaps, under the machine's lock. Pipe and socket
//! transfers skip the clock: from submit on, one thread per process (see `background.rs`)
//! and every reap retry them under `RWF_NOWAIT` (so they never block and stay cancellable,
//! and a get_events waiting only for them really sleeps until its timeout or their
//! completion); that thread also serves the idle rule. Polls wait in the process's
//! poller.
//!
//! # O_DIRECT
//!
//! The machine's device has `sector=` (512 or 4096) as its logical block size. An
//! `O_DIRECT` read or write whose offset, or a buffer address or length, is not a multiple
//! of it fails with `EINVAL` in its event at submit, as the kernel's does (no fault is
//! drawn for it); a short transfer injected on one moves whole sectors, so what it leaves
//! is a request the device would take.
//!
//! # Power loss
//!
//! The machine keeps, per file it writes, what `FSYNC`/`FDSYNC`/`RWF_DSYNC`/`O_DSYNC` made
//! durable (see `disk.rs` for how the real files are rolled back). Power is lost when the
//! machine is about to run its N-th request (`crash=N`, or `crash=A..B` drawn from the
//! seed) or when the test calls [`SimMachine::crash`]: every file the machine touched goes
//! back to its durable state; each write still in flight lands whole, not at all, or torn
//! at a sector boundary (`sector=512` or `4096`), as drawn from the seed (appends in flight
//! never land); every request in flight, and every request submitted afterwards to any
//! context of the machine, completes with `EIO`.
//!
//! # Replay
//!
//! `SimConfig`'s `Display` is one line in `AIOCTX_SIM` syntax holding every setting;
//! [`SimMachine::replay_line`] gives it. Feeding it back (`AIOCTX_SIM=<line>`, or parsing
//! it) reproduces the run.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::blocking::perform_up_to;
use super::pending::{Keyed, Pending};
use super::poller::{cancel_polls, start_poll};
use super::{cancel_queued_or_poll, complete_cancelled, Engine, EngineKind};
use crate::core::{Core, Inflight};
use crate::request::{Opcode, Request, RwFlags};
use crate::sync::lock;

mod background;
mod config;
mod disk;

pub use config::{CrashAt, Latency, SimConfig};
use disk::Disk;

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `low..=high` (`low <= high`).
    fn between(&mut self, low: u64, high: u64) -> u64 {
        match (high - low).checked_add(1) {
            Some(span) => low + self.next() % span,
            None => self.next(),
        }
    }
}

/// What happens to a request when it is due.
#[derive(Clone, Copy)]
enum Outcome {
    Run,
    Fail(i32),
    /// Move at most this many bytes.
    Short(usize),
}

/// A request the machine holds, and where.
struct Held {
    request: Inflight,
    place: Place,
}

#[derive(Clone, Copy)]
enum Place {
    /// On the clock: runs at this virtual time, with this outcome.
    Due(u64, Outcome),
    /// A pipe or socket transfer waiting for its peer, retried under `RWF_NOWAIT`.
    Parked(Outcome),
    /// Only cancel or destroy completes it.
    Stuck,
}

impl Place {
    /// What running the request does (a stuck request is never run).
    fn outcome(self) -> Outcome {
        match self {
            Place::Due(_, outcome) | Place::Parked(outcome) => outcome,
            Place::Stuck => Outcome::Run,
        }
    }
}

impl Keyed for Held {
    fn cancel_key(&self) -> Option<u64> {
        Some(self.request.request.key())
    }
}

/// A simulated machine: one virtual clock, one disk, one power supply, for any number of
/// contexts ([`SimMachine::context`]). `Builder::simulator` makes a machine per context.
///
/// ```
/// use aioctx::{SimConfig, SimMachine};
/// let machine = SimMachine::new("seed=7,eio=0.01".parse()?);
/// let ctx = machine.context(64)?;
/// println!("replay: AIOCTX_SIM={}", machine.replay_line());
/// # drop(ctx);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct SimMachine(Arc<Machine>);

pub(crate) struct Machine {
    config: SimConfig,
    state: Mutex<MachineState>,
    /// Errors and short transfers injected so far (each surfaces in its request's event).
    faults: AtomicU64,
}

struct MachineState {
    rng: Rng,
    /// Draws for power loss, apart so that a crash plan does not change the other draws.
    crash_rng: Rng,
    /// The virtual clock, in nanoseconds.
    now: u64,
    /// Every request the machine holds, of all its contexts, by id (submit order): the
    /// engines' one keyed set, which cancel and destroy take from.
    held: Pending<Held>,
    /// The ids of the requests on the clock, by (virtual due time, id): those due at the
    /// same time run in submit order.
    due: BTreeSet<(u64, u64)>,
    /// The ids of the pipe and socket transfers waiting for their peer, in submit order.
    parked: BTreeSet<u64>,
    /// Due times of the latest requests, for the `reorder` bound.
    recent_due: VecDeque<u64>,
    reorder_floor: u64,
    /// The last call into any context of the machine (for the idle rule only).
    last_call: Instant,
    /// Whether the background thread serves this machine.
    served: bool,
    /// Requests the machine has run (or failed) so far, for `crash=N`.
    executed: u64,
    crash_at: Option<u64>,
    crashed: bool,
    /// The unit torn writes are cut at.
    sector: u32,
    disk: Disk,
}

impl SimMachine {
    /// A simulated machine with `config`, its virtual clock at zero.
    pub fn new(config: SimConfig) -> SimMachine {
        let mut crash_rng = Rng(config.seed ^ 0x5eed_c4a5_0000_0001);
        let crash_at = match config.crash {
            None => None,
            Some(CrashAt::Request(n)) => Some(n),
            Some(CrashAt::Between(a, b)) => Some(crash_rng.between(a, b)),
        };
        SimMachine(Arc::new(Machine {
            state: Mutex::new(MachineState {
                rng: Rng(config.seed),
                crash_rng,
                now: 0,
                held: Pending::default(),
                due: BTreeSet::new(),
                parked: BTreeSet::new(),
                recent_due: VecDeque::new(),
                reorder_floor: 0,
                last_call: Instant::now(),
                served: false,
                executed: 0,
                crash_at,
                crashed: false,
                sector: config.sector,
                disk: Disk::default(),
            }),
            config,
            faults: AtomicU64::new(0),
        }))
    }

    /// The engine of a new context on this machine (see `SimMachine::context`).
    pub(crate) fn engine(&self, core: &Arc<Core>) -> SimEngine {
        SimEngine {
            core: Arc::clone(core),
            machine: Arc::clone(&self.0),
            own_machine: false,
        }
    }

    /// The configuration the machine runs with.
    pub fn config(&self) -> &SimConfig {
        &self.0.config
    }

    /// The run's seed and configuration in one line: `AIOCTX_SIM=<this>` replays it.
    pub fn replay_line(&self) -> String {
        self.0.config.to_string()
    }

    /// Errors (`EIO`, `ENOSPC`) and short transfers injected so far. Each is in the event of
    /// the request it hit; stuck requests and power loss are not counted.
    pub fn faults(&self) -> u64 {
        self.0.faults.load(Ordering::Relaxed)
    }

    /// Loses power now (see the module doc); a second call does nothing.
    pub fn crash(&self) -> io::Result<()> {
        self.0.lock_state().crash(None)
    }

    /// Whether power was lost.
    pub fn crashed(&self) -> bool {
        self.0.lock_state().crashed
    }

    /// The virtual clock, in nanoseconds since the machine started.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.0.lock_state().now)
    }
}

impl std::fmt::Debug for SimMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimMachine({})", self.0.config)
    }
}

impl Machine {
    fn lock_state(&self) -> MutexGuard<'_, MachineState> {
        lock(&self.state)
    }

    /// The background thread's round: retry parked transfers, apply the idle rule.
    /// Returns whether the machine still needs the thread.
    fn serve(&self) -> bool {
        let mut state = self.lock_state();
        state.retry_parked(&self.faults);
        if let Some(idle) = self.config.idle {
            if state.last_call.elapsed() >= idle {
                while !state.due.is_empty() && !state.crashed {
                    state.step(&self.faults);
                }
            }
        }
        let idling = self.config.idle.is_some() && !state.due.is_empty();
        let needed = !state.parked.is_empty() || idling;
        state.served = needed;
        needed
    }
}

impl MachineState {
    /// Holds a request at `place`; returns its id.
    fn hold(&mut self, request: Inflight, place: Place) -> u64 {
        let id = self.held.insert(Held { request, place });
        match place {
            Place::Due(due, _) => {
                self.due.insert((due, id));
            }
            Place::Parked(_) => {
                self.parked.insert(id);
            }
            Place::Stuck => {}
        }
        id
    }

    /// Lets go of what `hold` recorded for a request taken out of `held`.
    fn unindex(&mut self, id: u64, held: &Held) {
        match held.place {
            Place::Due(due, _) => {
                self.due.remove(&(due, id));
            }
            Place::Parked(_) => {
                self.parked.remove(&id);
            }
            Place::Stuck => {}
        }
    }

    /// Takes a held request out of the machine.
    fn release(&mut self, id: u64) -> Option<Held> {
        let held = self.held.remove(id)?;
        self.unindex(id, &held);
        Some(held)
    }

    /// Takes the oldest requests (at most `limit`) whose key `matching` selects and
    /// `eligible` admits, from wherever the machine holds them.
    fn take(
        &mut self,
        matching: impl Fn(u64) -> bool,
        eligible: impl Fn(&Inflight) -> bool,
        limit: usize,
    ) -> Vec<Inflight> {
        let chosen = self.held.select(matching, |h| eligible(&h.request), limit);
        chosen
            .into_iter()
            .filter_map(|id| self.release(id))
            .map(|held| held.request)
            .collect()
    }

    /// Queues a request with its latency drawn from the configuration.
    fn queue(&mut self, config: &SimConfig, request: Inflight, outcome: Outcome) {
        let (min, max) = (nanos(config.min_delay), nanos(config.max_delay));
        let delay = match config.latency {
            Latency::Uniform => self.rng.between(min, max),
            Latency::Tail => min + ((max - min) as f64 * self.rng.unit().powi(16)) as u64,
        };
        let mut due = self.now.saturating_add(delay);
        if let Some(window) = config.reorder {
            // Not before any request submitted more than `window` earlier: `floor` is the
            // latest due time of those.
            let window = usize::try_from(window)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            if self.recent_due.len() >= window {
                if let Some(left) = self.recent_due.pop_front() {
                    self.reorder_floor = self.reorder_floor.max(left);
                }
            }
            due = due.max(self.reorder_floor);
            self.recent_due.push_back(due);
        }
        self.hold(request, Place::Due(due, outcome));
    }

    /// Draws the fate of a new request of `len` bytes; None: it is stuck. A short transfer
    /// moves a whole number of `unit`s (the sector for O_DIRECT, else a byte), at least one
    /// and fewer than all, so that what it leaves is a request the device would take.
    fn outcome(
        &mut self,
        config: &SimConfig,
        opcode: Opcode,
        len: usize,
        unit: usize,
    ) -> Option<Outcome> {
        let data = opcode.is_read() || opcode.is_write();
        let units = (len / unit) as u64;
        Some(
            if (data || opcode.is_sync()) && self.rng.chance(config.eio) {
                Outcome::Fail(libc::EIO)
            } else if opcode.is_write() && self.rng.chance(config.enospc) {
                Outcome::Fail(libc::ENOSPC)
            } else if data && units >= 2 && self.rng.chance(config.short) {
                Outcome::Short(unit * self.rng.between(1, units - 1) as usize)
            } else if self.rng.chance(config.stuck) {
                return None;
            } else {
                Outcome::Run
            },
        )
    }

    /// Runs what is due now; if nothing was, moves the clock to the next due time and runs
    /// what is due then.
    fn step(&mut self, faults: &AtomicU64) {
        if self.run_due(faults) == 0 {
            if let Some(&(due, _)) = self.due.first() {
                self.now = self.now.max(due);
                self.run_due(faults);
            }
        }
    }

    /// Runs, in order, every request due by the virtual now; returns how many.
    fn run_due(&mut self, faults: &AtomicU64) -> usize {
        let mut ran = 0;
        while let Some(&(due, id)) = self.due.first() {
            if due > self.now || self.crashed {
                break;
            }
            self.due.pop_first();
            let Some(held) = self.held.remove(id) else {
                continue;
            };
            ran += 1;
            self.executed += 1;
            if self.crash_at == Some(self.executed) {
                // Power goes as this request starts: it is in flight, with the rest. An
                // error restoring a file leaves it as it is; its requests still fail EIO.
                let _ = self.crash(Some(held.request));
                break;
            }
            let outcome = held.place.outcome();
            let mut request = held.request;
            match execute(&mut self.disk, &mut request, outcome, faults) {
                Some(res) => request.complete(res),
                None => {
                    self.hold(request, Place::Parked(outcome));
                }
            }
        }
        ran
    }

    /// Tries the transfers waiting for their peer again, in submit order; those still
    /// waiting stay.
    fn retry_parked(&mut self, faults: &AtomicU64) {
        let parked: Vec<u64> = self.parked.iter().copied().collect();
        for id in parked {
            let Some(held) = self.held.get_mut(id) else {
                continue;
            };
            let Place::Parked(outcome) = held.place else {
                continue;
            };
            if let Some(res) = execute(&mut self.disk, &mut held.request, outcome, faults) {
                if let Some(held) = self.release(id) {
                    held.request.complete(res);
                }
            }
        }
    }

    /// Power loss: files back to their durable state, writes in flight landed whole, not at
    /// all or torn, every request in flight failed with `EIO`.
    fn crash(&mut self, starting: Option<Inflight>) -> io::Result<()> {
        if self.crashed {
            return Ok(());
        }
        self.crashed = true;
        // In flight, in this order (the order of the torn-write draws and of the events):
        // the request starting, those on the clock by due time, the stuck, the parked.
        let mut order: Vec<u64> = self.due.iter().map(|&(_, id)| id).collect();
        order.extend(
            self.held
                .iter()
                .filter(|(_, held)| matches!(held.place, Place::Stuck))
                .map(|(id, _)| id),
        );
        order.extend(self.parked.iter().copied());
        let mut in_flight: Vec<Inflight> = starting.into_iter().collect();
        in_flight.extend(
            order
                .into_iter()
                .filter_map(|id| self.release(id))
                .map(|held| held.request),
        );
        let mut landing = Vec::new();
        for request in &mut in_flight {
            if let Some(land) = self.torn_write(request) {
                landing.push(land);
            }
        }
        let mut result = self.disk.roll_back();
        for (file, offset, data) in landing {
            let landed = self.disk.land(&file, offset, &data);
            if result.is_ok() {
                result = landed;
            }
        }
        for request in in_flight {
            request.complete(-(libc::EIO as i64));
        }
        result
    }

    /// What of an in-flight write reaches the file at the crash: all of it, none, or its
    /// bytes up to a sector boundary inside it, drawn from the seed.
    fn torn_write(&mut self, request: &mut Inflight) -> Option<(Arc<File>, u64, Vec<u8>)> {
        let plan = write_plan(request, usize::MAX)?;
        let (file, Some(offset), len, _) = plan else {
            return None;
        };
        let sector = u64::from(self.sector.max(512));
        let first_boundary = (offset / sector + 1) * sector;
        let end = offset + len;
        let fate = self.crash_rng.between(0, 2);
        let keep = match fate {
            0 => return None,
            1 => len,
            _ if first_boundary >= end => return None,
            _ => {
                let boundaries = (end - 1 - first_boundary) / sector + 1;
                first_boundary + self.crash_rng.between(0, boundaries - 1) * sector - offset
            }
        };
        let mut data = Vec::with_capacity(keep as usize);
        for (base, seg_len) in request.request.buffers.segments() {
            let take = seg_len.min(keep as usize - data.len());
            // SAFETY: the segment is memory the request owns or was lent until it completes,
            // and it has not completed; it is only read here.
            data.extend_from_slice(unsafe { std::slice::from_raw_parts(base, take) });
        }
        Some((file, offset, data))
    }
}

/// Runs a due request against its file; its result, or None if it is a pipe or socket
/// transfer that would block (it stays as it was, to be tried again).
fn execute(
    disk: &mut Disk,
    request: &mut Inflight,
    outcome: Outcome,
    faults: &AtomicU64,
) -> Option<i64> {
    let limit = match outcome {
        Outcome::Fail(errno) => {
            faults.fetch_add(1, Ordering::Relaxed);
            return Some(-(errno as i64));
        }
        Outcome::Short(limit) => limit,
        Outcome::Run => usize::MAX,
    };
    let r = &request.request;
    let stream = (r.opcode.is_read() || r.opcode.is_write()) && !r.mode.regular;
    let extra = if stream {
        RwFlags::NOWAIT
    } else {
        RwFlags::empty()
    };
    let write = write_plan(request, limit);
    if let Some((file, offset, len, durable)) = &write {
        if let Err(e) = disk.before_write(file, *offset, *len, *durable) {
            return Some(-(e.raw_os_error().unwrap_or(libc::EIO) as i64));
        }
    }
    let res = perform_up_to(&mut request.request, extra, limit);
    if stream && res == -(libc::EAGAIN as i64) {
        return None;
    }
    let res = note_durable(disk, request, write, res);
    if matches!(outcome, Outcome::Short(_)) && res >= 0 {
        faults.fetch_add(1, Ordering::Relaxed);
    }
    Some(res)
}

/// For a write to a regular file: the file, the offset (None: appends), the bytes it will
/// move at most, and whether it is durable when done.
fn write_plan(request: &Inflight, limit: usize) -> Option<(Arc<File>, Option<u64>, u64, bool)> {
    let r = &request.request;
    if !r.opcode.is_write() || !r.mode.regular {
        return None;
    }
    let file = r.file.clone()?;
    let append = r.rw_flags.contains(RwFlags::APPEND) || opened_append(&file);
    let durable = r.rw_flags.contains(RwFlags::DSYNC)
        || r.rw_flags.contains(RwFlags::SYNC)
        || disk::opened_dsync(&file);
    let offset = (!append).then_some(r.offset as u64);
    let len = r.buffers.total_len().min(limit) as u64;
    Some((file, offset, len, durable))
}

/// Records what a finished write or sync made durable; a failure to record fails it.
fn note_durable(
    disk: &mut Disk,
    request: &Inflight,
    write: Option<(Arc<File>, Option<u64>, u64, bool)>,
    res: i64,
) -> i64 {
    if res < 0 {
        return res;
    }
    let noted = match (write, &request.request.file) {
        (Some((file, offset, _, true)), _) => disk.made_durable(&file, offset, res as u64),
        (None, Some(file)) if request.request.opcode.is_sync() => disk.synced(file),
        _ => Ok(()),
    };
    match noted {
        Ok(()) => res,
        Err(e) => -(e.raw_os_error().unwrap_or(libc::EIO) as i64),
    }
}

/// The simulated device's logical block size: the unit of O_DIRECT and of torn writes.
fn sector_of(config: &SimConfig) -> usize {
    config.sector.max(512) as usize
}

/// Whether a request is a read or write with `O_DIRECT` of a file or block device.
fn direct(r: &Request) -> bool {
    (r.opcode.is_read() || r.opcode.is_write())
        && r.mode.direct
        && (r.mode.regular || r.mode.block_device)
}

/// Whether an `O_DIRECT` read or write breaks the device's rule, which the kernel checks
/// before any I/O (`iomap_dio_rw`, `blkdev_direct_IO`): the offset, and the address and
/// length of every segment, are multiples of the logical block size (`sector=`; the
/// alignment statx reports as `stx_dio_offset_align` and `stx_dio_mem_align` on the
/// common devices; some kernels accept memory aligned to less). An empty segment has no
/// address to check.
fn misaligned_direct(r: &mut Request, sector: usize) -> bool {
    if !direct(r) {
        return false;
    }
    let offset_misaligned = r.offset < 0 || !(r.offset as u64).is_multiple_of(sector as u64);
    offset_misaligned
        || r.buffers.segments().into_iter().any(|(base, len)| {
            !len.is_multiple_of(sector) || (len > 0 && !(base as usize).is_multiple_of(sector))
        })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn opened_append(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_APPEND != 0
}

/// A descriptor that is always readable, for the whole process: what a reaper that is about
/// to wait polls while the machine has requests that can complete, so it comes straight
/// back to move the clock.
fn always_ready() -> Option<BorrowedFd<'static>> {
    static READY: OnceLock<Option<File>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let eventfd = crate::sys::fd::eventfd().ok()?;
            crate::sys::fd::eventfd_signal(eventfd.as_fd(), 1);
            Some(eventfd)
        })
        .as_ref()
        .map(|file| file.as_fd())
}

/// One context's face of a machine.
pub(crate) struct SimEngine {
    core: Arc<Core>,
    machine: Arc<Machine>,
    /// Whether the machine is this context's alone (`Context::simulated`, `AIOCTX_ENGINE`):
    /// then nothing can crash it once the context is destroyed, and destroy lets go of its
    /// disk (the descriptors it opened on the caller's files).
    own_machine: bool,
}

impl SimEngine {
    /// A context's engine on a machine of its own.
    pub(crate) fn new(core: &Arc<Core>, config: SimConfig) -> io::Result<SimEngine> {
        Ok(SimEngine {
            core: Arc::clone(core),
            machine: SimMachine::new(config).0,
            own_machine: true,
        })
    }

    /// Takes up to `limit` of this context's requests that `matches` selects (the oldest
    /// first), from every place the machine holds them.
    fn take(&self, matches: impl Fn(u64) -> bool, limit: usize) -> Vec<Inflight> {
        self.machine
            .lock_state()
            .take(matches, |r| r.belongs_to(&self.core), limit)
    }

    /// Has the background thread serve the machine, if it does not yet.
    fn ensure_served(&self, state: &mut MachineState) {
        if !state.served {
            state.served = true;
            background::serve(&self.machine);
        }
    }
}

impl Engine for SimEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sim
    }

    fn supports(&self, _flags: RwFlags) -> bool {
        true
    }

    fn start(&self, mut request: Inflight) -> Result<(), (Inflight, io::Error)> {
        let config = &self.machine.config;
        let sector = sector_of(config);
        if misaligned_direct(&mut request.request, sector) {
            // As the kernel: the request is accepted and fails at once, in its event.
            request.complete(-(libc::EINVAL as i64));
            return Ok(());
        }
        let mut state = self.machine.lock_state();
        state.last_call = Instant::now();
        if state.crashed {
            drop(state);
            request.complete(-(libc::EIO as i64));
            return Ok(());
        }
        if request.request.opcode == Opcode::Poll {
            drop(state);
            return start_poll(request);
        }
        let r = &request.request;
        // Pipes and sockets wait for a real peer, outside virtual time: they go straight
        // to the transfers the background thread retries (their faults are still drawn).
        let stream = (r.opcode.is_read() || r.opcode.is_write()) && !r.mode.regular;
        let unit = if direct(r) { sector } else { 1 };
        match state.outcome(config, r.opcode, r.buffers.total_len(), unit) {
            Some(outcome @ (Outcome::Run | Outcome::Short(_))) if stream => {
                state.hold(request, Place::Parked(outcome));
            }
            Some(outcome) => state.queue(config, request, outcome),
            None => {
                state.hold(request, Place::Stuck);
            }
        }
        let idling = config.idle.is_some() && !state.due.is_empty();
        if idling || !state.parked.is_empty() {
            self.ensure_served(&mut state);
        }
        Ok(())
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        self.machine.lock_state().last_call = Instant::now();
        cancel_queued_or_poll(self.take(|key| key == obj, 1), &self.core, obj)
    }

    fn cancel_all(&self) {
        let (taken, disk) = {
            let mut state = self.machine.lock_state();
            let taken = state.take(|_| true, |r| r.belongs_to(&self.core), usize::MAX);
            // On a machine of its own, every request of the machine is the context's, and
            // none is left to run (polls never touch the disk): its descriptors of the
            // caller's files close now, not when the context is dropped, and before the
            // requests count out, so that no destroyer returns while one is open (SPEC §1:
            // destroy leaves no file held).
            let disk = self.own_machine.then(|| std::mem::take(&mut state.disk));
            (taken, disk)
        };
        drop(disk);
        complete_cancelled(taken);
        cancel_polls(&self.core, |_| true, usize::MAX);
    }

    fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.machine.lock_state().due.is_empty() {
            return None;
        }
        always_ready()
    }

    fn reap_ready(&self) {
        let faults = &self.machine.faults;
        let mut state = self.machine.lock_state();
        state.last_call = Instant::now();
        state.retry_parked(faults);
        state.step(faults);
        if !state.parked.is_empty() {
            self.ensure_served(&mut state);
        }
    }
}
