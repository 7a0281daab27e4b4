//! `aioctx race`: the io_destroy race reproducer (the seed of the kernel fix "aio: block
//! io_destroy() until all context requests are completed").
//!
//! Each thread, over and over: set up a context, submit `depth` reads into memory it keeps,
//! destroy the context, and at once overwrite that memory with a canary. A destroy that
//! returns while a read is still in flight lets the read land on the canary later; before
//! the memory is used again (and once more at the end) the canary is checked. Every 4 KiB
//! block found changed is a late write.
//!
//! On the simulator each thread runs its own `SimMachine`, with the faults `AIOCTX_SIM` asks
//! for or, if it is unset, `eio=0.02,short=0.02` (seeded by the thread's index): each round
//! also waits for some of its reads, so the faults are injected, and checks that each
//! one surfaced in its request's event. The report then says `faults: <F>` (injected) and
//! `lost: <L>` (injected faults that surfaced in no event, plus requests that produced no
//! event at all); injected faults are not race errors.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::{Context, EngineKind, Request, SharedMem, SimConfig, SimMachine};
use indicatif::{ProgressBar, ProgressStyle};

const BLOCK: usize = 4096;
/// The file is this many blocks (16 MiB), filled with `FILL`.
const FILE_BLOCKS: u64 = 4096;
const FILL: u8 = 0x5a;
const CANARY: u64 = 0xc3c3_c3c3_c3c3_c3c3;
/// Regions each thread rotates through, so a region's canary is checked an iteration or
/// more after it was written, giving late writes time to land.
const REGIONS: usize = 4;
/// The simulator's faults when `AIOCTX_SIM` names none.
const SIM_FAULTS: &str = "eio=0.02,short=0.02";

#[derive(clap::Args)]
pub struct Args {
    /// Engine: auto, or one of those `aioctx info` lists (default: AIOCTX_ENGINE, else auto).
    #[arg(long)]
    engine: Option<String>,
    /// Threads racing at once, each with its own contexts.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Reads in flight per context when it is destroyed.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    depth: u32,
    /// Run for this long (default 10 s).
    #[arg(long, conflicts_with = "iterations")]
    seconds: Option<f64>,
    /// Run until this many contexts have been destroyed.
    #[arg(long)]
    iterations: Option<u64>,
    /// Open the file with O_DIRECT (reads then really wait for the device).
    #[arg(long)]
    direct: bool,
    /// Where to make the temp file (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// When the run ends.
#[derive(Clone, Copy)]
enum Until {
    Deadline(Instant),
    Destroys(u64),
}

#[derive(Default)]
struct Tally {
    destroys: AtomicU64,
    late_writes: AtomicU64,
    errors: AtomicU64,
    /// Faults the simulator injected, and those that did not surface in an event.
    faults: AtomicU64,
    lost: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| format!("{what}: {e}"));
    }

    /// Prints the result line (and the first error), and the exit status it means.
    fn report(&self, sim: bool) -> ExitCode {
        if sim {
            println!("faults: {}", self.faults.load(Ordering::Relaxed));
            println!("lost: {}", self.lost.load(Ordering::Relaxed));
        }
        println!("{}", self.line());
        if let Some(e) = self
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            eprintln!("race: first error: {e}");
        }
        let clean = self.late_writes.load(Ordering::Relaxed) == 0
            && self.errors.load(Ordering::Relaxed) == 0
            && self.lost.load(Ordering::Relaxed) == 0;
        if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn line(&self) -> String {
        format!(
            "race: {} destroys, {} late writes, {} errors",
            self.destroys.load(Ordering::Relaxed),
            self.late_writes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        )
    }
}

pub fn run(args: Args) -> ExitCode {
    let kind = crate::engine_or_exit(args.engine.as_deref());
    let Some(until) = until(&args) else {
        eprintln!("aioctx: --seconds must be a non-negative number");
        return ExitCode::from(2);
    };
    if let Err(e) = Context::builder().depth(args.depth).engine(kind).build() {
        eprintln!("aioctx: engine {kind} cannot run here: {e}");
        return ExitCode::FAILURE;
    }
    let resolved = kind.resolve();
    let sim = match (resolved == EngineKind::Sim).then(sim_config).transpose() {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("aioctx: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let data = match DataFile::create(&dir, args.direct) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("aioctx: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "race: engine {resolved}, {} threads, depth {}, {}{}",
        args.threads,
        args.depth,
        if args.direct { "O_DIRECT, " } else { "" },
        data.path.display()
    );
    let tally = Tally::default();
    std::thread::scope(|s| {
        for seed in 0..args.threads {
            let (tally, file) = (&tally, &data.file);
            let engine = match &sim {
                Some(config) => {
                    let config = SimConfig {
                        seed: config.seed.wrapping_add(u64::from(seed)),
                        ..config.clone()
                    };
                    eprintln!("race: thread {seed} replays with AIOCTX_SIM={config}");
                    Engine::Sim(SimMachine::new(config))
                }
                None => Engine::Real(resolved),
            };
            s.spawn(move || race_thread(&engine, args.depth, file, until, seed, tally));
        }
        report_progress(&tally, until, args.threads);
    });
    tally.report(sim.is_some())
}

/// The simulator's configuration for the race: `AIOCTX_SIM`, else `SIM_FAULTS`.
fn sim_config() -> std::io::Result<SimConfig> {
    match std::env::var("AIOCTX_SIM") {
        Ok(text) if !text.is_empty() => text.parse(),
        _ => SIM_FAULTS.parse(),
    }
}

/// Where a thread's contexts come from.
enum Engine {
    Real(EngineKind),
    Sim(SimMachine),
}

impl Engine {
    fn context(&self, depth: u32) -> std::io::Result<Context> {
        match self {
            Engine::Real(kind) => Context::builder().depth(depth).engine(*kind).build(),
            Engine::Sim(machine) => machine.context(depth),
        }
    }
}

/// When the run ends, from `--iterations` or `--seconds` (default 10 s); None if the
/// seconds are not a usable number.
fn until(args: &Args) -> Option<Until> {
    if let Some(n) = args.iterations {
        return Some(Until::Destroys(n));
    }
    let seconds = args.seconds.unwrap_or(10.0);
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Until::Deadline(Instant::now() + Duration::from_secs_f64(seconds)))
}

fn race_thread(
    engine: &Engine,
    depth: u32,
    file: &Arc<File>,
    until: Until,
    seed: u32,
    tally: &Tally,
) {
    let regions: Vec<Arc<SharedMem>> = match (0..REGIONS)
        .map(|_| SharedMem::map(depth as usize * BLOCK).map(Arc::new))
        .collect()
    {
        Ok(regions) => regions,
        Err(e) => return tally.error("mapping buffers", e),
    };
    let mut armed = [false; REGIONS];
    let mut rng = XorShift::new(seed);
    for iteration in 0.. {
        let proceed = match until {
            Until::Deadline(deadline) => Instant::now() < deadline,
            Until::Destroys(n) => tally.destroys.load(Ordering::Relaxed) < n,
        };
        if !proceed {
            break;
        }
        let slot = iteration % REGIONS;
        if armed[slot] {
            tally
                .late_writes
                .fetch_add(changed_blocks(&regions[slot]), Ordering::Relaxed);
        }
        one_round(
            engine,
            depth,
            file,
            &regions[slot],
            &mut rng,
            iteration,
            tally,
        );
        armed[slot] = true;
    }
    // Give any late write time to land, then look everywhere once more.
    std::thread::sleep(Duration::from_millis(100));
    for (region, armed) in regions.iter().zip(armed) {
        if armed {
            tally
                .late_writes
                .fetch_add(changed_blocks(region), Ordering::Relaxed);
        }
    }
}

/// Set up, submit, (sometimes reap a little,) destroy, and paint the canary at once.
fn one_round(
    engine: &Engine,
    depth: u32,
    file: &Arc<File>,
    region: &Arc<SharedMem>,
    rng: &mut XorShift,
    iteration: usize,
    tally: &Tally,
) {
    let ctx = match engine.context(depth) {
        Ok(ctx) => ctx,
        Err(e) => return tally.error("io_setup", e),
    };
    let mut batch = Vec::with_capacity(depth as usize);
    for i in 0..depth as usize {
        let offset = rng.below(FILE_BLOCKS) * BLOCK as u64;
        match Request::read_shared(Arc::clone(file), region, i * BLOCK..(i + 1) * BLOCK, offset) {
            Ok(request) => batch.push(request.data(i as u64)),
            Err(e) => return tally.error("building a read", e),
        }
    }
    match ctx.submit(&mut batch).map(|ids| ids.len()) {
        Ok(n) if n == depth as usize => {}
        Ok(n) => tally.error("io_submit", format!("accepted {n} of {depth}")),
        Err(e) => tally.error("io_submit", e),
    }
    if let Engine::Sim(machine) = engine {
        let wanted = rng.below(u64::from(depth) / 2 + 1) as usize;
        reap_faults(&ctx, machine, wanted, depth as usize, tally);
    } else if iteration % 4 == 1 {
        if let Err(e) = ctx.get_events(0, depth as usize / 2, Some(Duration::ZERO)) {
            tally.error("io_getevents", e);
        }
    }
    if let Err(e) = ctx.destroy() {
        tally.error("io_destroy", e);
    }
    let stats = ctx.stats();
    tally
        .lost
        .fetch_add(stats.submitted - stats.completed, Ordering::Relaxed);
    for word in region.words() {
        word.store(CANARY, Ordering::Relaxed);
    }
    tally.destroys.fetch_add(1, Ordering::Relaxed);
}

/// Waits for `wanted` reads (on the simulator that runs them and injects their faults),
/// takes every event there is, and counts the faults injected meanwhile that no event shows.
fn reap_faults(ctx: &Context, machine: &SimMachine, wanted: usize, depth: usize, tally: &Tally) {
    let before = machine.faults();
    let mut surfaced = 0;
    for (min, timeout) in [(wanted, Duration::from_secs(30)), (0, Duration::ZERO)] {
        match ctx.get_events(min, depth, Some(timeout)) {
            Ok(events) => {
                surfaced += events
                    .iter()
                    .filter(|e| e.res != -(libc::ECANCELED as i64) && e.res < BLOCK as i64)
                    .count() as u64
            }
            Err(e) => tally.error("io_getevents", e),
        }
    }
    let injected = machine.faults() - before;
    tally.faults.fetch_add(injected, Ordering::Relaxed);
    tally
        .lost
        .fetch_add(injected.saturating_sub(surfaced), Ordering::Relaxed);
}

/// 4 KiB blocks of `region` whose canary changed.
fn changed_blocks(region: &SharedMem) -> u64 {
    region
        .words()
        .chunks(BLOCK / 8)
        .filter(|block| block.iter().any(|w| w.load(Ordering::Relaxed) != CANARY))
        .count() as u64
}

fn report_progress(tally: &Tally, until: Until, threads: u32) {
    let started = Instant::now();
    let bar = match until {
        Until::Destroys(n) => ProgressBar::new(n),
        Until::Deadline(deadline) => {
            ProgressBar::new(deadline.saturating_duration_since(started).as_millis() as u64)
        }
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let plain = !std::io::stderr().is_terminal();
    let mut last_line = started;
    loop {
        let done = match until {
            Until::Destroys(n) => tally.destroys.load(Ordering::Relaxed) >= n,
            Until::Deadline(deadline) => Instant::now() >= deadline,
        };
        let position = match until {
            Until::Destroys(_) => tally.destroys.load(Ordering::Relaxed),
            Until::Deadline(_) => started.elapsed().as_millis() as u64,
        };
        bar.set_position(position);
        bar.set_message(tally.line());
        if plain && last_line.elapsed() >= Duration::from_secs(2) {
            let _ = writeln!(
                std::io::stderr(),
                "{} ({:.0?}, {threads} threads)",
                tally.line(),
                started.elapsed()
            );
            last_line = Instant::now();
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// The file the reads come from: `FILE_BLOCKS` blocks of `FILL`, removed on drop.
struct DataFile {
    path: PathBuf,
    file: Arc<File>,
}

impl DataFile {
    fn create(dir: &Path, direct: bool) -> Result<DataFile, String> {
        let path = dir.join(format!("aioctx-race-{}.dat", std::process::id()));
        let describe = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut writer = File::create(&path).map_err(describe)?;
        let chunk = vec![FILL; 1 << 20];
        for _ in 0..(FILE_BLOCKS as usize * BLOCK) / chunk.len() {
            writer.write_all(&chunk).map_err(describe)?;
        }
        writer.sync_all().map_err(describe)?;
        let mut options = OpenOptions::new();
        options.read(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(&path).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            if direct && e.raw_os_error() == Some(libc::EINVAL) {
                format!(
                    "{}: this file system does not support O_DIRECT; pick another with --dir",
                    dir.display()
                )
            } else {
                describe(e)
            }
        })?;
        Ok(DataFile {
            path,
            file: Arc::new(file),
        })
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A small fast PRNG for offsets (quality is irrelevant, speed is not).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u32) -> XorShift {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift((time ^ (u64::from(seed) << 32)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
