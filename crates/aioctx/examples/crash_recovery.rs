//! A tiny append-only log, and what the simulator's power loss does to it.
//!
//! The log appends fixed-size records (magic, id, checksum, payload) and acknowledges each
//! one to its caller once it is written and, in the careful variant, once an `FSYNC` of the
//! file has completed after it. A seeded sweep crashes the machine at every point of the
//! run (before each request the machine runs, and once after the last one), reopens the
//! file, recovers the records (stopping at the first one that does not check out) and
//! counts the acknowledged records that did not come back: lost data. With the fsync the
//! count is 0 at every crash point; without it the sweep catches the log losing records it
//! had acknowledged.
//!
//! `cargo run --release -p aioctx --example crash_recovery` runs the sweep;
//! `... --example crash_recovery -- --replay '<line>' [--without-fsync]` runs one crash point
//! again from the replay line the sweep printed, and says what was acknowledged and lost.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aioctx::{Context, Request, SimConfig, SimMachine};

const RECORDS: u64 = 20;
const RECORD: usize = 64;
const MAGIC: u32 = 0x4c4f_4721;

/// What a sweep found.
#[derive(Debug)]
pub struct Sweep {
    pub crash_points: u64,
    /// Acknowledged records missing after recovery, over all crash points.
    pub lost: u64,
    /// The replay line of the first crash point that lost data.
    pub first_loss: Option<String>,
}

fn record(id: u64) -> [u8; RECORD] {
    let mut bytes = [0u8; RECORD];
    for (i, b) in bytes[16..].iter_mut().enumerate() {
        *b = (id as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let sum = checksum(&bytes[16..]);
    bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[4..12].copy_from_slice(&id.to_le_bytes());
    bytes[12..16].copy_from_slice(&sum.to_le_bytes());
    bytes
}

fn checksum(payload: &[u8]) -> u32 {
    payload.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Waits for the one request in flight; its result.
fn wait(ctx: &Context) -> io::Result<i64> {
    let events = ctx.get_events(1, 1, Some(Duration::from_secs(30)))?;
    events
        .first()
        .map(|event| event.res)
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no event"))
}

/// Appends records until the machine crashes (or all are written); returns the ids it
/// acknowledged.
fn append_until_crash(file: &Arc<File>, ctx: &Context, fsync: bool) -> io::Result<Vec<u64>> {
    let mut acknowledged = Vec::new();
    for id in 0..RECORDS {
        let offset = id * RECORD as u64;
        ctx.submit_one(Request::write(file.clone(), record(id).to_vec(), offset))?;
        if wait(ctx)? != RECORD as i64 {
            break;
        }
        if fsync {
            ctx.submit_one(Request::fsync(file.clone()))?;
            if wait(ctx)? != 0 {
                break;
            }
        }
        acknowledged.push(id);
    }
    Ok(acknowledged)
}

/// The records a restart finds: in order, up to the first that does not check out.
fn recover(path: &Path) -> io::Result<Vec<u64>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(RECORD)
        .map_while(|chunk| {
            let id = u64::from_le_bytes(chunk[4..12].try_into().ok()?);
            (chunk == record(id)).then_some(id)
        })
        .collect())
}

/// What one run found: the records acknowledged, and those recovered after the crash.
struct Run {
    acknowledged: Vec<u64>,
    recovered: Vec<u64>,
}

impl Run {
    fn lost(&self) -> u64 {
        let lost = self
            .acknowledged
            .iter()
            .filter(|id| !self.recovered.contains(id));
        lost.count() as u64
    }
}

/// One run of the log on a machine with `config`, then power loss, then recovery.
fn run_once(fsync: bool, config: SimConfig, path: &Path) -> io::Result<Run> {
    let machine = SimMachine::new(config);
    File::create(path)?;
    let file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
    let ctx = machine.context(8)?;
    let acknowledged = append_until_crash(&file, &ctx, fsync)?;
    // A point past the run's last request: power goes once the log has finished.
    machine.crash()?;
    drop(ctx);
    let recovered = recover(path)?;
    Ok(Run {
        acknowledged,
        recovered,
    })
}

/// One run with power lost at `point`; returns the acknowledged records lost and the run's
/// replay line.
fn crash_at(fsync: bool, point: u64, path: &Path) -> io::Result<(u64, String)> {
    let config: SimConfig = format!("seed={point},delay=0..1ms,crash={point}").parse()?;
    let line = config.to_string();
    Ok((run_once(fsync, config, path)?.lost(), line))
}

/// Crashes a run of the log at each of `points` points, with or without its fsync.
pub fn sweep(fsync: bool, points: u64) -> Sweep {
    let path = scratch(fsync);
    let mut sweep = Sweep {
        crash_points: 0,
        lost: 0,
        first_loss: None,
    };
    for point in 1..=points {
        match crash_at(fsync, point, &path) {
            Ok((lost, line)) => {
                sweep.crash_points += 1;
                sweep.lost += lost;
                if lost > 0 && sweep.first_loss.is_none() {
                    sweep.first_loss = Some(line);
                }
            }
            Err(e) => eprintln!("crash point {point}: {e}"),
        }
    }
    let _ = std::fs::remove_file(&path);
    sweep
}

fn scratch(fsync: bool) -> PathBuf {
    let name = format!("aioctx-crash-log-{}-{fsync}", std::process::id());
    std::env::temp_dir().join(name)
}

/// `--replay <line> [--without-fsync]`: the one run the line describes.
fn replay(args: &[String]) -> io::Result<()> {
    let line = args
        .get(1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "--replay needs a line"))?;
    let fsync = !args.iter().any(|a| a == "--without-fsync");
    let config: SimConfig = line.trim_start_matches("AIOCTX_SIM=").parse()?;
    let path = scratch(fsync);
    let run = run_once(fsync, config, &path);
    let _ = std::fs::remove_file(&path);
    let run = run?;
    println!("acknowledged: {:?}", run.acknowledged);
    println!("recovered: {:?}", run.recovered);
    println!("lost: {}", run.lost());
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--replay") {
        if let Err(e) = replay(&args) {
            eprintln!("crash_recovery: {e}");
            std::process::exit(2);
        }
        return;
    }
    // With fsync the run has 2 requests per record, without it 1: sweep both over every point.
    let points = 2 * RECORDS + 1;
    for (fsync, name) in [(true, "with fsync"), (false, "without fsync")] {
        let result = sweep(fsync, points);
        println!(
            "{name}: {} crash points tried, {} acknowledged records lost",
            result.crash_points, result.lost
        );
        if let Some(line) = result.first_loss {
            println!("{name}: first loss replays with AIOCTX_SIM={line}");
        }
    }
}
