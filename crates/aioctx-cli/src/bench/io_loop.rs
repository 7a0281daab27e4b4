//! The loop both of the bench's own clients run (aioctx and the kernel's AIO): keep
//! `iodepth` requests in flight, submit them `batch` at a time, reap with get_events, and
//! time every request from its submit to its reap.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::sample::latency_histogram;
use super::workload::{IoLoad, Rw};

/// A read or write of one block, into or out of slot `slot` of the job's buffers.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub slot: usize,
    pub write: bool,
    pub offset: u64,
}

/// A completion: the slot it frees and the result (bytes, or a negative errno).
#[derive(Clone, Copy, Debug)]
pub struct Done {
    pub slot: usize,
    pub res: i64,
}

/// What a client submits through and reaps from.
pub trait Queue {
    /// Submits the ops as one batch; returns how many were accepted (the rest were not).
    fn submit(&mut self, ops: &[Op]) -> io::Result<usize>;
    /// Waits up to `timeout` for at least `min` completions; appends up to `max`.
    fn reap(
        &mut self,
        min: usize,
        max: usize,
        timeout: Duration,
        done: &mut Vec<Done>,
    ) -> io::Result<()>;
}

/// What the jobs of one run share.
pub struct RunShared {
    pub start: Instant,
    pub deadline: Instant,
    /// When each slot's request was submitted, in ns since `start`.
    pub submitted_at: Vec<AtomicU64>,
    /// Requests completed so far, for the progress bar.
    pub completed: AtomicU64,
}

impl RunShared {
    pub fn new(slots: usize, runtime: Duration) -> RunShared {
        let start = Instant::now();
        RunShared {
            start,
            deadline: start + runtime,
            submitted_at: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            completed: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// What one job counted.
pub struct Tally {
    pub requests: u64,
    pub bytes: u64,
    pub lat: Histogram<u64>,
}

/// One job: `slots` are its own to start with; `in_flight` counts the requests of its
/// context (shared by every job on that context).
pub struct Job<'a> {
    pub queue: &'a mut dyn Queue,
    pub slots: std::ops::Range<usize>,
    pub in_flight: &'a AtomicUsize,
    /// Where a sequential job starts, in blocks.
    pub first_block: u64,
    pub seed: u64,
}

/// How long a reap waits before the job looks at the clock again.
const REAP_WAIT: Duration = Duration::from_millis(20);

pub fn run_job(job: Job<'_>, load: &IoLoad, blocks: u64, shared: &RunShared) -> io::Result<Tally> {
    let batch = load.batch as usize;
    let mut free: Vec<usize> = job.slots.clone().rev().collect();
    let mut pattern = Pattern::new(load.rw, blocks, job.first_block, job.seed);
    let mut tally = Tally {
        requests: 0,
        bytes: 0,
        lat: latency_histogram(),
    };
    let mut ops = Vec::with_capacity(batch);
    let mut done = Vec::with_capacity(job.slots.len());
    loop {
        let running = Instant::now() < shared.deadline;
        while running && free.len() >= batch {
            ops.clear();
            let at = shared.now_ns();
            for slot in free.drain(free.len() - batch..) {
                shared.submitted_at[slot].store(at, Ordering::Relaxed);
                let (write, block) = pattern.next();
                ops.push(Op {
                    slot,
                    write,
                    offset: block * load.bs,
                });
            }
            job.in_flight.fetch_add(batch, Ordering::Relaxed);
            let accepted = job.queue.submit(&ops)?;
            // Not accepted means not in flight: those slots are free again.
            job.in_flight.fetch_sub(batch - accepted, Ordering::Relaxed);
            free.extend(ops[accepted..].iter().map(|op| op.slot));
            if accepted < batch {
                break;
            }
        }
        let in_flight = job.in_flight.load(Ordering::Relaxed);
        if !running && in_flight == 0 {
            return Ok(tally);
        }
        let need = if running {
            batch.saturating_sub(free.len()).clamp(1, in_flight.max(1))
        } else {
            1
        };
        done.clear();
        job.queue
            .reap(need, job.slots.len(), REAP_WAIT, &mut done)?;
        let now = shared.now_ns();
        for d in &done {
            if d.res < 0 {
                return Err(io::Error::from_raw_os_error(-d.res as i32));
            }
            let submitted = shared.submitted_at[d.slot].load(Ordering::Relaxed);
            tally
                .lat
                .record(now.saturating_sub(submitted).max(1))
                .map_err(io::Error::other)?;
            tally.requests += 1;
            tally.bytes += d.res as u64;
            free.push(d.slot);
        }
        job.in_flight.fetch_sub(done.len(), Ordering::Relaxed);
        shared
            .completed
            .fetch_add(done.len() as u64, Ordering::Relaxed);
    }
}

/// Which block comes next, and whether it is written.
struct Pattern {
    rw: Rw,
    blocks: u64,
    next_block: u64,
    rng: u64,
}

impl Pattern {
    fn new(rw: Rw, blocks: u64, first_block: u64, seed: u64) -> Pattern {
        Pattern {
            rw,
            blocks,
            next_block: first_block % blocks,
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> (bool, u64) {
        // xorshift64: uniform enough for offsets, and costs nothing next to a request.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let write = match self.rw {
            Rw::Read | Rw::Randread => false,
            Rw::Write | Rw::Randwrite => true,
            Rw::Randrw => self.rng >> 63 == 1,
        };
        let block = if self.rw.is_random() {
            self.rng % self.blocks
        } else {
            let block = self.next_block;
            self.next_block = (block + 1) % self.blocks;
            block
        };
        (write, block)
    }
}

/// One job's queue and the in-flight count of the context it submits to.
pub struct JobQueue<'a> {
    pub queue: Box<dyn Queue + Send + 'a>,
    pub in_flight: &'a AtomicUsize,
}

/// What a whole run counted, over every job.
pub struct RunTally {
    pub requests: u64,
    pub bytes: u64,
    pub lat: Histogram<u64>,
    pub elapsed: Duration,
    /// CPU time the process used during the run: (user, system).
    pub cpu: (Duration, Duration),
}

/// Runs every job on its own thread for `runtime` and adds up what they counted; `live` is
/// told the completions so far every 200 ms.
pub fn run_jobs(
    jobs: Vec<JobQueue<'_>>,
    load: &IoLoad,
    blocks: u64,
    runtime: Duration,
    live: &dyn Fn(u64, Duration),
) -> io::Result<RunTally> {
    let per_job = load.iodepth as usize;
    let numjobs = jobs.len() as u64;
    let (usr0, sys0) = crate::sys::cpu_time();
    let shared = RunShared::new(per_job * jobs.len(), runtime);
    let results: Vec<io::Result<Tally>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, mut job)| {
                let shared = &shared;
                s.spawn(move || {
                    let job = Job {
                        queue: &mut *job.queue,
                        slots: i * per_job..(i + 1) * per_job,
                        in_flight: job.in_flight,
                        first_block: blocks / numjobs * i as u64,
                        seed: 0x9e37_79b9_7f4a_7c15
                            ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
                    };
                    run_job(job, load, blocks, shared)
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            live(
                shared.completed.load(Ordering::Relaxed),
                shared.start.elapsed(),
            );
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a job panicked")))
            })
            .collect()
    });
    let elapsed = shared.start.elapsed();
    let (usr1, sys1) = crate::sys::cpu_time();
    let mut total = RunTally {
        requests: 0,
        bytes: 0,
        lat: latency_histogram(),
        elapsed,
        cpu: (usr1.saturating_sub(usr0), sys1.saturating_sub(sys0)),
    };
    for tally in results {
        let tally = tally?;
        total.requests += tally.requests;
        total.bytes += tally.bytes;
        total.lat.add(&tally.lat).map_err(io::Error::other)?;
    }
    Ok(total)
}
