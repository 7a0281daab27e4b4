//! `SimConfig`: what the simulator injects, parsed from and printed as one line
//! (`AIOCTX_SIM`), so that the line a run prints reproduces it.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

/// The longest delay the simulator accepts (a day): virtual time is kept in nanoseconds.
const MAX_DELAY: Duration = Duration::from_secs(86_400);

/// How request latencies are drawn between `min_delay` and `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Uniformly.
    Uniform,
    /// Long-tailed: most requests near the minimum, a few near the maximum (a draw `u` in
    /// 0..1 gives `min + (max - min) * u^16`: 4% beyond the middle, 0.7% in the last tenth).
    Tail,
}

/// When power is lost (see the module doc's "Power loss").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// Just before the machine runs its N-th request (counting from 1).
    Request(u64),
    /// Before a request drawn from the seed in this range (inclusive).
    Between(u64, u64),
}

/// What the simulator injects, and its seed. Parsed from `AIOCTX_SIM`, e.g.
/// `seed=7,eio=0.01,enospc=0.01,short=0.05,delay=10us..2ms,latency=tail,crash=1..50,idle=off`;
/// `Display` prints every field in the same syntax, and parsing that line gives the same
/// configuration back (the replay line).
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The seed of every random choice: the same seed replays the same run.
    pub seed: u64,
    /// Probability that a read, write or sync fails with `EIO`.
    pub eio: f64,
    /// Probability that a write fails with `ENOSPC`.
    pub enospc: f64,
    /// Probability that a read or write of two bytes or more moves fewer bytes (with
    /// `O_DIRECT`: of two sectors or more, and a whole number of sectors).
    pub short: f64,
    /// Probability that a request is stuck: it completes only when cancelled or destroyed.
    pub stuck: f64,
    /// Each request is due this long after submit on the virtual clock.
    pub min_delay: Duration,
    /// Each request is due at most this long after submit on the virtual clock.
    pub max_delay: Duration,
    /// How delays are drawn between `min_delay` and `max_delay`.
    pub latency: Latency,
    /// At most how many requests submitted after a request may complete before it (None:
    /// any number; 0: completions in submit order).
    pub reorder: Option<u64>,
    /// When power is lost on its own (None: only when the test calls `SimMachine::crash`).
    pub crash: Option<CrashAt>,
    /// The simulated device's logical block size, 512 or 4096 bytes: the unit a write in
    /// flight at a crash is torn at, and the alignment `O_DIRECT` needs (offset, buffer
    /// addresses and lengths; else the request fails `EINVAL`, as on the kernel).
    pub sector: u32,
    /// How long the machine waits, in real time, for a call before its clock runs by itself
    /// (for callers that wait outside aioctx: on an eventfd, or reading the ring). None
    /// (`idle=off`): only calls move the clock, unconditionally reproducible.
    pub idle: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            eio: 0.0,
            enospc: 0.0,
            short: 0.0,
            stuck: 0.0,
            min_delay: Duration::from_micros(10),
            max_delay: Duration::from_micros(100),
            latency: Latency::Uniform,
            reorder: None,
            crash: None,
            sector: 512,
            idle: Some(Duration::from_millis(50)),
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

    /// Whether any fault (an error, a short transfer or a stuck request) can be injected.
    pub fn injects_faults(&self) -> bool {
        self.eio > 0.0 || self.enospc > 0.0 || self.short > 0.0 || self.stuck > 0.0
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("AIOCTX_SIM: {what}"))
}

fn probability(key: &str, value: &str) -> io::Result<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| invalid(&format!("{key}='{value}' is not a probability in 0..=1")))
}

fn number(key: &str, value: &str) -> io::Result<u64> {
    value
        .parse()
        .map_err(|_| invalid(&format!("{key}='{value}' is not a whole number")))
}

/// `a..b`, or a single value for both ends.
fn range(value: &str) -> (&str, &str) {
    value.split_once("..").unwrap_or((value, value))
}

impl FromStr for SimConfig {
    type Err = io::Error;

    fn from_str(text: &str) -> io::Result<SimConfig> {
        let mut config = SimConfig::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| invalid(&format!("'{item}' is not key=value")))?;
            match key {
                "seed" => config.seed = number(key, value)?,
                "eio" => config.eio = probability(key, value)?,
                "enospc" => config.enospc = probability(key, value)?,
                "short" => config.short = probability(key, value)?,
                "stuck" => config.stuck = probability(key, value)?,
                "delay" => {
                    let (min, max) = range(value);
                    let parse = |text: &str| {
                        parse_duration(text)
                            .filter(|d| *d <= MAX_DELAY)
                            .ok_or_else(|| {
                                invalid(&format!(
                                    "'{item}': '{text}' is not a duration of at most 1 day \
                                 (0, 500ns, 250us, 2ms, 1s)"
                                ))
                            })
                    };
                    config.min_delay = parse(min)?;
                    config.max_delay = parse(max)?;
                    if config.min_delay > config.max_delay {
                        return Err(invalid(&format!("'{item}' has min above max")));
                    }
                }
                "latency" => {
                    config.latency = match value {
                        "uniform" => Latency::Uniform,
                        "tail" => Latency::Tail,
                        _ => {
                            return Err(invalid(&format!(
                                "latency='{value}' is not uniform or tail"
                            )))
                        }
                    }
                }
                "reorder" => {
                    config.reorder = match value {
                        "any" => None,
                        _ => Some(number(key, value)?),
                    }
                }
                "crash" => {
                    config.crash = match range(value) {
                        ("none", "none") => None,
                        (a, b) if a == b => Some(CrashAt::Request(crash_point(a)?)),
                        (a, b) => {
                            let (a, b) = (crash_point(a)?, crash_point(b)?);
                            if a > b {
                                return Err(invalid(&format!("'{item}' has min above max")));
                            }
                            Some(CrashAt::Between(a, b))
                        }
                    }
                }
                "sector" => {
                    config.sector = match value {
                        "512" => 512,
                        "4096" | "4k" | "4K" => 4096,
                        _ => return Err(invalid(&format!("sector='{value}' is not 512 or 4096"))),
                    }
                }
                "idle" => {
                    config.idle = match value {
                        "off" => None,
                        _ => Some(
                            parse_duration(value)
                                .filter(|d| *d <= MAX_DELAY)
                                .ok_or_else(|| {
                                    invalid(&format!("idle='{value}' is off or a duration"))
                                })?,
                        ),
                    }
                }
                _ => return Err(invalid(&format!("unknown key '{key}'"))),
            }
        }
        Ok(config)
    }
}

fn crash_point(text: &str) -> io::Result<u64> {
    match number("crash", text)? {
        0 => Err(invalid("crash points count requests from 1")),
        n => Ok(n),
    }
}

impl fmt::Display for SimConfig {
    /// The replay line: every field, in `AIOCTX_SIM` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={},eio={},enospc={},short={},stuck={},delay={}..{},latency={},reorder=",
            self.seed,
            self.eio,
            self.enospc,
            self.short,
            self.stuck,
            DurationText(self.min_delay),
            DurationText(self.max_delay),
            match self.latency {
                Latency::Uniform => "uniform",
                Latency::Tail => "tail",
            },
        )?;
        match self.reorder {
            None => f.write_str("any")?,
            Some(n) => write!(f, "{n}")?,
        }
        match self.crash {
            None => f.write_str(",crash=none")?,
            Some(CrashAt::Request(n)) => write!(f, ",crash={n}")?,
            Some(CrashAt::Between(a, b)) => write!(f, ",crash={a}..{b}")?,
        }
        write!(f, ",sector={}", self.sector)?;
        match self.idle {
            None => f.write_str(",idle=off"),
            Some(idle) => write!(f, ",idle={}", DurationText(idle)),
        }
    }
}

/// A duration in the largest unit that states it exactly.
struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let units = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")];
        match units
            .iter()
            .find(|(size, _)| nanos > 0 && nanos.is_multiple_of(*size))
        {
            Some((size, unit)) => write!(f, "{}{unit}", nanos / size),
            None => write!(f, "{nanos}ns"),
        }
    }
}

/// `0`, `250us`, `2ms`, `1s`, `500ns`.
fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ns" => Some(Duration::from_nanos(number)),
        "us" => number.checked_mul(1_000).map(Duration::from_nanos),
        "ms" => number.checked_mul(1_000_000).map(Duration::from_nanos),
        "s" => number.checked_mul(1_000_000_000).map(Duration::from_nanos),
        _ => None,
    }
}
