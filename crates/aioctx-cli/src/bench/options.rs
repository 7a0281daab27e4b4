//! `aioctx bench`'s options, checked into a plan; every bad option is one line and exit 2.

use std::path::PathBuf;
use std::time::Duration;

use aioctx::engine::probe_all;
use aioctx::EngineKind;

use super::workload::{standard_matrix, Cache, IoLoad, Rw, Settings, Workload};

#[derive(clap::Args)]
pub struct Args {
    /// I/O pattern (with any workload option, one workload instead of the standard matrix).
    #[arg(long, value_enum)]
    rw: Option<Rw>,
    /// Block size, e.g. 4k, 64k, 1m (default 4k).
    #[arg(long)]
    bs: Option<String>,
    /// Requests kept in flight per job (default 32).
    #[arg(long)]
    iodepth: Option<u32>,
    /// Requests per submit call (default 1; at most --iodepth).
    #[arg(long)]
    batch: Option<u32>,
    /// Open the file with O_DIRECT.
    #[arg(long)]
    direct: bool,
    /// Page cache before each run: hot (all pages cached) or cold (dropped, checked with
    /// mincore).
    #[arg(long, value_enum)]
    cache: Option<Cache>,
    /// Size of the test file, e.g. 512m, 1g (default 512m).
    #[arg(long)]
    size: Option<String>,
    /// Length of each run, e.g. 2, 2s, 500ms (default 1s).
    #[arg(long)]
    runtime: Option<String>,
    /// Use this file (made with --size if missing, and kept).
    #[arg(long, conflicts_with = "dir")]
    file: Option<PathBuf>,
    /// Make the temp test file here (default: $TMPDIR, else /var/tmp); removed after.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Threads per client, each with its own context (or one shared with --shared).
    #[arg(long, default_value_t = 1)]
    numjobs: u32,
    /// All jobs of an aioctx client on one shared context.
    #[arg(long)]
    shared: bool,
    /// aioctx engines: one, a comma-separated list, or all (default: all that work here).
    #[arg(long)]
    engine: Option<String>,
    /// Interleaved repetitions of every run; results are their medians.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Also run fio (libaio on the system libaio and on the drop-in, io_uring, psync,
    /// posixaio) on the same file in the same run.
    #[arg(long)]
    compare_fio: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw the results as an SVG bar chart into this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print each fio command line (the job options) before it runs.
    #[arg(long)]
    verbose: bool,
}

/// Where the test file comes from.
pub enum FileChoice {
    /// A temp file made in this directory and removed after.
    Temp(PathBuf),
    /// The user's file, made if missing, kept; its first `--size` bytes (default: all).
    Named(PathBuf, Option<u64>),
}

/// What to run, checked.
pub struct Plan {
    pub workloads: Vec<Workload>,
    pub settings: Settings,
    pub engines: Vec<EngineKind>,
    /// Engines `all` left out, with the reason.
    pub skipped_engines: Skipped,
    pub repeat: u32,
    pub file: FileChoice,
    pub compare_fio: bool,
    pub json: bool,
    pub svg: Option<PathBuf>,
    pub verbose: bool,
}

/// A usage error: printed as one line, exit status 2.
pub struct Usage(pub String);

macro_rules! usage {
    ($($arg:tt)*) => { Usage(format!($($arg)*)) };
}

impl Args {
    fn names_a_workload(&self) -> bool {
        self.rw.is_some()
            || self.bs.is_some()
            || self.iodepth.is_some()
            || self.batch.is_some()
            || self.direct
            || self.cache.is_some()
    }
}

pub fn plan(args: Args) -> Result<Plan, Usage> {
    let size_given = match &args.size {
        Some(text) => {
            Some(parse_size(text).ok_or_else(|| usage!("--size: '{text}' is not a size"))?)
        }
        None => None,
    };
    let size = size_given.unwrap_or(512 << 20);
    let runtime = match &args.runtime {
        Some(text) => parse_duration(text)
            .ok_or_else(|| usage!("--runtime: '{text}' is not a duration (2, 2s, 500ms)"))?,
        None => Duration::from_secs(1),
    };
    if args.numjobs == 0 {
        return Err(usage!("--numjobs must be at least 1"));
    }
    if args.repeat == 0 {
        return Err(usage!("--repeat must be at least 1"));
    }
    let workloads = if args.names_a_workload() {
        vec![Workload::Io(io_load(&args)?)]
    } else {
        standard_matrix()
    };
    let largest_bs = workloads
        .iter()
        .map(|w| match w {
            Workload::Io(load) => load.bs,
            Workload::Destroy { .. } => super::workload::DESTROY_BS,
        })
        .max()
        .unwrap_or(4096);
    if size < largest_bs * u64::from(args.numjobs) {
        return Err(usage!("--size {size} is smaller than one block per job"));
    }
    let file = file_choice(&args, size, size_given)?;
    let (engines, skipped_engines) = engines(args.engine.as_deref())?;
    Ok(Plan {
        workloads,
        settings: Settings {
            size,
            runtime,
            numjobs: args.numjobs,
            shared: args.shared,
        },
        engines,
        skipped_engines,
        repeat: args.repeat,
        file,
        compare_fio: args.compare_fio,
        json: args.json,
        svg: args.svg,
        verbose: args.verbose,
    })
}

fn io_load(args: &Args) -> Result<IoLoad, Usage> {
    let bs = match &args.bs {
        Some(text) => parse_size(text).ok_or_else(|| usage!("--bs: '{text}' is not a size"))?,
        None => 4096,
    };
    if bs == 0 {
        return Err(usage!("--bs must be at least 1 byte"));
    }
    if args.direct && !bs.is_multiple_of(512) {
        return Err(usage!("--bs {bs} with --direct must be a multiple of 512"));
    }
    let iodepth = args.iodepth.unwrap_or(32);
    if iodepth == 0 {
        return Err(usage!("--iodepth must be at least 1"));
    }
    let batch = args.batch.unwrap_or(1);
    if batch == 0 || batch > iodepth {
        return Err(usage!(
            "--batch must be between 1 and --iodepth ({iodepth})"
        ));
    }
    Ok(IoLoad {
        rw: args.rw.unwrap_or(Rw::Randread),
        bs,
        iodepth,
        batch,
        direct: args.direct,
        cache: args.cache.unwrap_or(Cache::Hot),
    })
}

fn file_choice(args: &Args, size: u64, size_given: Option<u64>) -> Result<FileChoice, Usage> {
    if let Some(file) = &args.file {
        return Ok(FileChoice::Named(file.clone(), size_given));
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
    });
    let free = crate::sys::free_space(&dir).map_err(|e| usage!("--dir {}: {e}", dir.display()))?;
    if size > free {
        return Err(usage!(
            "--size {size} is larger than the free space of {} ({free} bytes)",
            dir.display()
        ));
    }
    Ok(FileChoice::Temp(dir))
}

/// The engines to run: named ones must work here; `all` (the default) takes those that do.
type Skipped = Vec<(EngineKind, String)>;

fn engines(spec: Option<&str>) -> Result<(Vec<EngineKind>, Skipped), Usage> {
    let probes = probe_all();
    let spec = spec.unwrap_or("all");
    if spec == "all" {
        let mut skipped = Vec::new();
        let mut engines = Vec::new();
        for probe in probes.into_iter().filter(|p| p.kind != EngineKind::Sim) {
            match probe.result {
                Ok(()) => engines.push(probe.kind),
                Err(reason) => skipped.push((probe.kind, reason.to_string())),
            }
        }
        return Ok((engines, skipped));
    }
    let mut engines = Vec::new();
    for name in spec.split(',') {
        let kind: EngineKind = name.trim().parse().map_err(|e| usage!("--engine: {e}"))?;
        let kind = kind.resolve();
        if let Some(reason) = probes
            .iter()
            .find(|p| p.kind == kind)
            .and_then(|p| p.result.as_ref().err())
        {
            return Err(usage!("--engine: {kind} cannot run here: {reason}"));
        }
        if !engines.contains(&kind) {
            engines.push(kind);
        }
    }
    Ok((engines, Vec::new()))
}

/// "4096", "4k", "4K", "4KiB", "1m", "1g", "1t" (powers of 1024, as fio reads them).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text
        .strip_suffix("ib")
        .or(text.strip_suffix('b'))
        .unwrap_or(&text);
    let (digits, shift) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 10),
        'm' => (&text[..text.len() - 1], 20),
        'g' => (&text[..text.len() - 1], 30),
        't' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// "2", "2s", "1.5s", "500ms": seconds unless it says ms.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1.0)
    };
    let seconds = number.parse::<f64>().ok()? * scale;
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}
