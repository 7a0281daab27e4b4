//! What one measurement is: an I/O pattern every client runs the same way, or a destroy with
//! requests in flight; and the standard matrix `aioctx bench` runs with no options.

use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Randread,
    Randwrite,
    Read,
    Write,
    Randrw,
}

impl Rw {
    pub fn name(self) -> &'static str {
        match self {
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::Randrw => "randrw",
        }
    }

    pub fn is_random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
}

/// Where the file's pages are when a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// Every page of the file in the page cache.
    Hot,
    /// No page of the file in the page cache (dropped, and checked with mincore).
    Cold,
}

/// An I/O pattern: what every client runs on the same file for the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoLoad {
    pub rw: Rw,
    pub bs: u64,
    pub iodepth: u32,
    /// Requests per submit call.
    pub batch: u32,
    pub direct: bool,
    pub cache: Cache,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Io(IoLoad),
    /// Set up a context, submit `in_flight` O_DIRECT 4 KiB random reads, time the destroy.
    Destroy {
        in_flight: u32,
    },
}

/// What every workload of one bench shares.
#[derive(Clone, Debug)]
pub struct Settings {
    pub size: u64,
    pub runtime: Duration,
    pub numjobs: u32,
    /// All jobs on one context instead of one each (aioctx only: fio has no such mode).
    pub shared: bool,
}

pub const DESTROY_BS: u64 = 4096;

impl Workload {
    pub fn is_destroy(&self) -> bool {
        matches!(self, Workload::Destroy { .. })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Io(load) => {
                let how = match (load.direct, load.cache) {
                    (true, _) => "direct",
                    (false, Cache::Hot) => "cached",
                    (false, Cache::Cold) => "cold",
                };
                write!(
                    f,
                    "{} {} {how} qd{}",
                    load.rw.name(),
                    human_size(load.bs),
                    load.iodepth
                )?;
                if load.batch > 1 {
                    write!(f, " b{}", load.batch)?;
                }
                Ok(())
            }
            Workload::Destroy { in_flight } => write!(f, "destroy, {in_flight} in flight"),
        }
    }
}

/// The matrix `aioctx bench` runs with no workload options: the cases users choose by.
pub fn standard_matrix() -> Vec<Workload> {
    let read = |iodepth, direct, cache| {
        Workload::Io(IoLoad {
            rw: Rw::Randread,
            bs: 4096,
            iodepth,
            batch: 1,
            direct,
            cache,
        })
    };
    vec![
        read(1, false, Cache::Hot),
        read(32, false, Cache::Hot),
        read(1, true, Cache::Hot),
        read(32, true, Cache::Hot),
        read(128, true, Cache::Hot),
        read(32, false, Cache::Cold),
        Workload::Io(IoLoad {
            rw: Rw::Randwrite,
            bs: 4096,
            iodepth: 32,
            batch: 1,
            direct: true,
            cache: Cache::Hot,
        }),
        Workload::Destroy { in_flight: 0 },
        Workload::Destroy { in_flight: 1 },
        Workload::Destroy { in_flight: 128 },
    ]
}

/// 4096 -> "4k", 1 << 30 -> "1g": how fio spells sizes.
pub fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "t"), (30, "g"), (20, "m"), (10, "k")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}
