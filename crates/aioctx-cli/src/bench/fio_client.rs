//! The fio clients: the same workload as a fio job on the same file, with fio's libaio
//! engine (on the system libaio, or on the drop-in through `LD_PRELOAD`), io_uring, psync
//! or posixaio; its JSON report read back into a sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::client::FioEngine;
use super::sample::Sample;
use super::testfile::TestFile;
use super::workload::{IoLoad, Settings};

/// fio in `PATH`, if it is there.
pub fn find_fio() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("fio"))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| {
                m.is_file() && {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                }
            })
        })
}

/// fio's job options for the workload: the same file, size, block size, depth, batch (to
/// submit and to reap) and time as every other client; fio keeps the page cache as the
/// bench left it.
pub fn job_options(
    engine: FioEngine,
    load: &IoLoad,
    settings: &Settings,
    file: &TestFile,
) -> Vec<String> {
    let ioengine = match engine {
        FioEngine::Libaio | FioEngine::Dropin(_) => "libaio",
        FioEngine::IoUring => "io_uring",
        FioEngine::Psync => "psync",
        FioEngine::Posixaio => "posixaio",
    };
    vec![
        "--name=aioctx-bench".into(),
        format!("--filename={}", file.path.display()),
        format!("--size={}", file.size),
        format!("--ioengine={ioengine}"),
        format!("--rw={}", load.rw.name()),
        format!("--bs={}", load.bs),
        format!("--iodepth={}", load.iodepth),
        format!("--iodepth_batch_submit={}", load.batch),
        // Reaps a batch's worth at a time, as the bench's own loop does (issue 11's T1b).
        format!("--iodepth_batch_complete_min={}", load.batch),
        format!("--direct={}", u8::from(load.direct)),
        format!("--numjobs={}", settings.numjobs),
        format!("--runtime={}ms", settings.runtime.as_millis().max(1)),
        "--time_based=1".into(),
        "--invalidate=0".into(),
        "--norandommap=1".into(),
        "--randrepeat=0".into(),
        "--group_reporting=1".into(),
        "--unified_rw_reporting=mixed".into(),
        "--lat_percentiles=1".into(),
        "--output-format=json".into(),
    ]
}

/// Runs fio once; `dropin` is the `libaio.so.1` to preload for `FioEngine::Dropin`.
pub fn measure(
    fio: &Path,
    engine: FioEngine,
    load: &IoLoad,
    settings: &Settings,
    file: &TestFile,
    dropin: Option<&Path>,
    verbose: bool,
) -> Result<Sample, String> {
    let options = job_options(engine, load, settings, file);
    let mut command = Command::new(fio);
    command.args(&options).stdin(Stdio::null());
    let stats = match engine {
        FioEngine::Dropin(kind) => {
            let dropin = dropin.ok_or("no drop-in library to preload")?;
            let stats = file
                .path
                .with_extension(format!("stats-{}", std::process::id()));
            let _ = std::fs::remove_file(&stats);
            command
                .env("LD_PRELOAD", dropin)
                .env("AIOCTX_ENGINE", kind.name())
                .env("AIOCTX_STATS", &stats);
            Some((stats, kind))
        }
        _ => None,
    };
    if verbose {
        let env = match &stats {
            Some((path, kind)) => format!(
                "LD_PRELOAD={} AIOCTX_ENGINE={kind} AIOCTX_STATS={} ",
                dropin.map_or(String::new(), |d| d.display().to_string()),
                path.display()
            ),
            None => String::new(),
        };
        eprintln!("bench: {env}{} {}", fio.display(), options.join(" "));
    }
    let output = command.output().map_err(|e| format!("running fio: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first_complaint = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if !output.status.success() {
        return Err(format!("fio failed ({}): {first_complaint}", output.status));
    }
    if let Some((path, kind)) = &stats {
        let lines = std::fs::read_to_string(path).unwrap_or_default();
        let _ = std::fs::remove_file(path);
        if !lines.contains(&format!("engine={kind} ")) {
            return Err(format!(
                "fio did not run on the drop-in (no AIOCTX_STATS line with engine={kind}) \
                 {first_complaint}"
            ));
        }
    }
    parse_report(&String::from_utf8_lossy(&output.stdout))
}

/// fio's JSON report (one group, reads and writes reported together) as a sample.
fn parse_report(stdout: &str) -> Result<Sample, String> {
    // fio may print notes before the JSON object.
    let json = stdout.find('{').map_or("", |at| &stdout[at..]);
    let report: Value =
        serde_json::from_str(json).map_err(|e| format!("fio's JSON report: {e}"))?;
    let job = &report["jobs"][0];
    let mixed = &job["mixed"];
    let number = |v: &Value, what: &str| {
        v.as_f64()
            .ok_or_else(|| format!("fio's JSON report has no {what}"))
    };
    let percentile = |p: &str| -> Result<f64, String> {
        Ok(number(
            &mixed["lat_ns"]["percentile"][p],
            &format!("lat_ns percentile {p}"),
        )? / 1000.0)
    };
    let runtime_ms = number(&job["job_runtime"], "job_runtime")?;
    Ok(Sample {
        requests: number(&mixed["total_ios"], "total_ios")? as u64,
        bytes: number(&mixed["io_bytes"], "io_bytes")? as u64,
        lat_samples: number(&mixed["lat_ns"]["N"], "lat_ns N")? as u64,
        elapsed_s: runtime_ms / 1000.0,
        iops: number(&mixed["iops"], "iops")?,
        mib_s: number(&mixed["bw_bytes"], "bw_bytes")? / f64::from(1 << 20),
        lat_p50_us: percentile("50.000000")?,
        lat_p99_us: percentile("99.000000")?,
        lat_p999_us: percentile("99.900000")?,
        cpu_usr: number(&job["usr_cpu"], "usr_cpu")?,
        cpu_sys: number(&job["sys_cpu"], "sys_cpu")?,
        cached_bytes_at_start: None,
        context_submitted: None,
        context_completed: None,
    })
}
