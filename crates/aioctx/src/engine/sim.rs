//! The simulator: a deterministic, fault-injecting engine for tests, of aioctx and of the
//! programs built on it.
//!
//! Every request draws, in submit order from a generator seeded by `SimConfig::seed`, a
//! delay and a fault: `EIO`, `ENOSPC` (writes), or a short transfer. Requests complete in
//! the order of their due time on a virtual clock that advances only as requests complete,
//! so a caller that submits a batch within the minimum delay and reaps it before the next
//! sees the same order, the same faults and the same results for the same seed, run after
//! run. (A request that completes while its batch is still being submitted moves the clock
//! for the rest of the batch.) Requests that are not
//! faulted really run against their files (on the simulator's thread); reads and writes of
//! pipes and sockets are retried under `RWF_NOWAIT` until ready, so nothing blocks it.
//! Polls wait on the process's poller. Everything not yet run can be cancelled. The
//! lifecycle (slots, completion, destroy) is the same code as for the real engines.

use std::collections::BTreeMap;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::blocking::perform_up_to;
use super::poller::{cancel_polls, start_poll};
use super::{cancel_queued_or_poll, complete_cancelled, Engine, EngineKind};
use crate::core::{Core, Inflight};
use crate::request::{Opcode, RwFlags};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::sync::lock;

/// What the simulator injects, and its seed. Parsed from `AIOCTX_SIM`, e.g.
/// `seed=7,eio=0.01,enospc=0.01,short=0.05,delay=10us..2ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Probability that a read, write or sync fails with `EIO`.
    pub eio: f64,
    /// Probability that a write fails with `ENOSPC`.
    pub enospc: f64,
    /// Probability that a read or write of two bytes or more moves fewer bytes.
    pub short: f64,
    /// Each request is due this long (on the virtual clock, and as long in real time)
    /// after submit, drawn uniformly.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            eio: 0.0,
            enospc: 0.0,
            short: 0.0,
            min_delay: Duration::from_micros(10),
            max_delay: Duration::from_micros(100),
        }
    }
}

impl SimConfig {
    /// The configuration `AIOCTX_SIM` describes (the default if unset).
    pub fn from_env() -> io::Result<SimConfig> {
        match std::env::var("AIOCTX_SIM") {
            Ok(text) if !text.is_empty() => text.parse(),
            _ => Ok(SimConfig::default()),
        }
    }
}

impl FromStr for SimConfig {
    type Err = io::Error;

    fn from_str(text: &str) -> io::Result<SimConfig> {
        let invalid =
            |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("AIOCTX_SIM: {what}"));
        let probability = |value: &str| {
            value
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| invalid(&format!("'{value}' is not a probability in 0..=1")))
        };
        let mut config = SimConfig::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| invalid(&format!("'{item}' is not key=value")))?;
            match key {
                "seed" => {
                    config.seed = value
                        .parse()
                        .map_err(|_| invalid(&format!("seed '{value}' is not a number")))?
                }
                "eio" => config.eio = probability(value)?,
                "enospc" => config.enospc = probability(value)?,
                "short" => config.short = probability(value)?,
                "delay" => {
                    let (min, max) = value.split_once("..").unwrap_or((value, value));
                    config.min_delay = parse_duration(min).ok_or_else(|| invalid(item))?;
                    config.max_delay = parse_duration(max).ok_or_else(|| invalid(item))?;
                    if config.min_delay > config.max_delay {
                        return Err(invalid(&format!("'{item}' has min above max")));
                    }
                }
                _ => return Err(invalid(&format!("unknown key '{key}'"))),
            }
        }
        Ok(config)
    }
}

/// `250us`, `2ms`, `1s`, `500ns`.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    Some(match unit {
        "ns" => Duration::from_nanos(number),
        "us" => Duration::from_micros(number),
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        _ => return None,
    })
}

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

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// What happens to a request when it is due.
enum Outcome {
    Run,
    Fail(i32),
    /// Move at most this many bytes.
    Short(usize),
}

struct Pending {
    request: Inflight,
    outcome: Outcome,
    /// When it is due in real time (the virtual delay, elapsed for real).
    deadline: Instant,
}

struct SimState {
    config: SimConfig,
    rng: Rng,
    /// The virtual clock in nanoseconds: the due time of the last request completed.
    now: u64,
    /// Number of requests ever queued, to order those due at the same time.
    seq: u64,
    /// By (virtual due time, seq).
    pending: BTreeMap<(u64, u64), Pending>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<SimState>,
    /// Signalled when the pending set or shutdown changes.
    changed: Condvar,
}

pub(crate) struct SimEngine {
    core: Arc<Core>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SimEngine {
    pub(crate) fn new(core: &Arc<Core>, config: SimConfig) -> io::Result<SimEngine> {
        let shared = Arc::new(Shared {
            state: Mutex::new(SimState {
                rng: Rng(config.seed),
                config,
                now: 0,
                seq: 0,
                pending: BTreeMap::new(),
                shutdown: false,
            }),
            changed: Condvar::new(),
        });
        let runner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("aioctx-sim".into())
            .spawn(move || runner.run())?;
        Ok(SimEngine {
            core: Arc::clone(core),
            shared,
            thread: Some(thread),
        })
    }

    fn take_pending(&self, matches: impl Fn(u64) -> bool, limit: usize) -> Vec<Inflight> {
        let mut state = lock(&self.shared.state);
        let keys: Vec<(u64, u64)> = state
            .pending
            .iter()
            .filter(|(_, p)| matches(p.request.request.key()))
            .map(|(key, _)| *key)
            .take(limit)
            .collect();
        keys.iter()
            .filter_map(|key| state.pending.remove(key))
            .map(|p| p.request)
            .collect()
    }
}

impl SimState {
    /// Queues a request due `delay` after the virtual now.
    fn queue(&mut self, request: Inflight, outcome: Outcome) {
        let delay = self.rng.between(
            self.config.min_delay.as_nanos() as u64,
            self.config.max_delay.as_nanos() as u64,
        );
        let key = (self.now + delay, self.seq);
        self.seq += 1;
        let deadline = Instant::now() + Duration::from_nanos(delay);
        self.pending.insert(
            key,
            Pending {
                request,
                outcome,
                deadline,
            },
        );
    }

    /// Draws the fate of a new request.
    fn outcome(&mut self, opcode: Opcode, len: usize) -> Outcome {
        let config = &self.config;
        let (eio, enospc, short) = (config.eio, config.enospc, config.short);
        let data = opcode.is_read() || opcode.is_write();
        if (data || opcode.is_sync()) && self.rng.chance(eio) {
            Outcome::Fail(libc::EIO)
        } else if opcode.is_write() && self.rng.chance(enospc) {
            Outcome::Fail(libc::ENOSPC)
        } else if data && len >= 2 && self.rng.chance(short) {
            Outcome::Short(self.rng.between(1, len as u64 - 1) as usize)
        } else {
            Outcome::Run
        }
    }
}

impl Shared {
    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            let Some((&key, first)) = state.pending.first_key_value() else {
                if state.shutdown {
                    return;
                }
                state = crate::sync::wait(&self.changed, state);
                continue;
            };
            let left = first.deadline.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                state = wait_timeout(&self.changed, state, left);
                continue;
            }
            let Some(pending) = state.pending.remove(&key) else {
                continue;
            };
            state.now = state.now.max(key.0);
            drop(state);
            let retry = execute(pending);
            state = lock(&self.state);
            if let Some(request) = retry {
                state.queue(request, Outcome::Run);
            }
        }
    }
}

fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match condvar.wait_timeout(guard, timeout) {
        Ok((guard, _)) => guard,
        Err(poisoned) => poisoned.into_inner().0,
    }
}

/// Runs a due request; gives it back if it is a pipe or socket transfer that would block.
fn execute(pending: Pending) -> Option<Inflight> {
    let Pending {
        mut request,
        outcome,
        ..
    } = pending;
    let limit = match outcome {
        Outcome::Fail(errno) => {
            request.complete(-(errno as i64));
            return None;
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
    let res = perform_up_to(&mut request.request, extra, limit);
    if stream && res == -(libc::EAGAIN as i64) {
        return Some(request);
    }
    request.complete(res);
    None
}

impl Engine for SimEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sim
    }

    fn supports(&self, _flags: RwFlags) -> bool {
        true
    }

    fn start(&self, request: Inflight) -> Result<(), (Inflight, io::Error)> {
        if request.request.opcode == Opcode::Poll {
            return start_poll(request);
        }
        let mut state = lock(&self.shared.state);
        let outcome = state.outcome(request.request.opcode, request.request.buffers.total_len());
        state.queue(request, outcome);
        drop(state);
        self.shared.changed.notify_one();
        Ok(())
    }

    fn cancel(&self, obj: u64) -> io::Result<()> {
        let cancelled =
            cancel_queued_or_poll(self.take_pending(|key| key == obj, 1), &self.core, obj);
        self.shared.changed.notify_one();
        cancelled
    }

    fn cancel_all(&self) {
        complete_cancelled(self.take_pending(|_| true, usize::MAX));
        cancel_polls(&self.core, |_| true, usize::MAX);
        self.shared.changed.notify_one();
    }
}

impl Drop for SimEngine {
    /// Runs after destroy waited, so nothing is pending: the thread ends at once.
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
