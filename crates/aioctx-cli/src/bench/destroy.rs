//! Destroy latency: set up a context, submit N O_DIRECT 4 KiB random reads, and time the
//! destroy, which returns only once all N are done; on aioctx and on the kernel's own
//! `io_destroy` for the same load.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Context, EngineKind, Request, SharedMem};

use super::client::Client;
use super::sample::{latency_histogram, Sample};
use super::workload::DESTROY_BS;
use crate::sys::{KernelAio, KernelOp};

/// Destroys timed per run at most: the kernel hands `aio-nr` back asynchronously, and a
/// few thousand quick cycles exhaust `aio-max-nr` for everyone on the machine.
const MAX_DESTROYS: u64 = 200;
/// Every run times at least this many, however slow.
const MIN_DESTROYS: u64 = 5;
/// A run times destroys for at most this long (the kernel's `io_destroy` takes tens of ms:
/// it waits out an RCU grace period), or the bench's runtime if that is shorter.
pub const MAX_TIME: Duration = Duration::from_millis(300);
const CONTEXT_EVENTS: u32 = 128;

pub fn measure(
    client: Client,
    in_flight: u32,
    blocks: u64,
    file: Arc<File>,
    runtime: Duration,
) -> io::Result<Sample> {
    let mut lat = latency_histogram();
    let mut total = Duration::ZERO;
    let mut offsets = Offsets(0x2545_f491_4f6c_dd1d, blocks);
    let mem = Arc::new(SharedMem::map(
        in_flight.max(1) as usize * DESTROY_BS as usize,
    )?);
    let (usr0, sys0) = crate::sys::cpu_time();
    let started = Instant::now();
    let budget = runtime.min(MAX_TIME);
    let mut destroys = 0;
    while destroys < MIN_DESTROYS || (destroys < MAX_DESTROYS && started.elapsed() < budget) {
        let took = match client {
            Client::Aioctx(kind) => aioctx_destroy(kind, in_flight, &file, &mut offsets)?,
            _ => kernel_destroy(in_flight, &file, &mem, &mut offsets)?,
        };
        lat.record((took.as_nanos() as u64).max(1))
            .map_err(io::Error::other)?;
        total += took;
        destroys += 1;
    }
    let wall = started.elapsed();
    let (usr1, sys1) = crate::sys::cpu_time();
    // The rate is destroys per second of destroying: 1 / mean destroy latency.
    let mut sample = Sample::measured(
        destroys,
        destroys * u64::from(in_flight) * DESTROY_BS,
        &lat,
        total,
        (usr1.saturating_sub(usr0), sys1.saturating_sub(sys0)),
    );
    sample.mib_s = 0.0;
    sample.cpu_usr = (usr1.saturating_sub(usr0)).as_secs_f64() / wall.as_secs_f64() * 100.0;
    sample.cpu_sys = (sys1.saturating_sub(sys0)).as_secs_f64() / wall.as_secs_f64() * 100.0;
    Ok(sample)
}

fn aioctx_destroy(
    kind: EngineKind,
    in_flight: u32,
    file: &Arc<File>,
    offsets: &mut Offsets,
) -> io::Result<Duration> {
    let ctx = Context::builder()
        .depth(CONTEXT_EVENTS)
        .engine(kind)
        .build()?;
    let mut batch = (0..in_flight)
        .map(|i| {
            let buf = AlignedBuf::page_aligned(DESTROY_BS as usize)?;
            Ok(Request::read(Arc::clone(file), buf, offsets.next()).data(u64::from(i)))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let accepted = ctx.submit(&mut batch)?.len();
    if accepted != in_flight as usize {
        return Err(io::Error::other(format!(
            "submit took {accepted} of {in_flight}"
        )));
    }
    let start = Instant::now();
    ctx.destroy()?;
    Ok(start.elapsed())
}

fn kernel_destroy(
    in_flight: u32,
    file: &Arc<File>,
    mem: &Arc<SharedMem>,
    offsets: &mut Offsets,
) -> io::Result<Duration> {
    let aio = setup_retrying(file, mem)?;
    let ops: Vec<KernelOp> = (0..in_flight as usize)
        .map(|slot| KernelOp {
            slot,
            write: false,
            offset: offsets.next(),
        })
        .collect();
    let accepted = if ops.is_empty() { 0 } else { aio.submit(&ops)? };
    if accepted != ops.len() {
        return Err(io::Error::other(format!(
            "io_submit took {accepted} of {in_flight}"
        )));
    }
    let start = Instant::now();
    aio.destroy()?;
    Ok(start.elapsed())
}

/// `io_setup`, waiting out an `EAGAIN` while the kernel hands back the `aio-nr` of
/// contexts destroyed just before (it does so asynchronously).
fn setup_retrying(file: &Arc<File>, mem: &Arc<SharedMem>) -> io::Result<KernelAio> {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        match KernelAio::setup(
            CONTEXT_EVENTS,
            Arc::clone(file),
            Arc::clone(mem),
            DESTROY_BS as usize,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Random block-aligned offsets within the file.
struct Offsets(u64, u64);

impl Offsets {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % self.1 * DESTROY_BS
    }
}
