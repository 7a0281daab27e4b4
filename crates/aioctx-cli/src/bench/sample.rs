//! What one run measured, and the medians of a client's repetitions.

use std::time::Duration;

use hdrhistogram::Histogram;

/// One run of one client on one workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Requests completed (destroy workloads: destroys timed).
    pub requests: u64,
    /// Bytes the completions report transferred.
    pub bytes: u64,
    /// Latencies recorded: one per request.
    pub lat_samples: u64,
    pub elapsed_s: f64,
    pub iops: f64,
    pub mib_s: f64,
    pub lat_p50_us: f64,
    pub lat_p99_us: f64,
    pub lat_p999_us: f64,
    /// CPU time in user and system mode, percent of one CPU over the run.
    pub cpu_usr: f64,
    pub cpu_sys: f64,
    /// Bytes of the file in the page cache when the run started (mincore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_bytes_at_start: Option<u64>,
    /// aioctx's own counters of the run's contexts: submitted and completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_submitted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_completed: Option<u64>,
}

/// Latencies in nanoseconds, 1 ns to an hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

impl Sample {
    /// A sample from the bench's own counts: rates over `elapsed`, percentiles from `lat`,
    /// CPU from the process's time used over the run.
    pub fn measured(
        requests: u64,
        bytes: u64,
        lat: &Histogram<u64>,
        elapsed: Duration,
        cpu: (Duration, Duration),
    ) -> Sample {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let us = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
        Sample {
            requests,
            bytes,
            lat_samples: lat.len(),
            elapsed_s: seconds,
            iops: requests as f64 / seconds,
            mib_s: bytes as f64 / seconds / f64::from(1 << 20),
            lat_p50_us: us(0.5),
            lat_p99_us: us(0.99),
            lat_p999_us: us(0.999),
            cpu_usr: cpu.0.as_secs_f64() / seconds * 100.0,
            cpu_sys: cpu.1.as_secs_f64() / seconds * 100.0,
            cached_bytes_at_start: None,
            context_submitted: None,
            context_completed: None,
        }
    }
}

/// The median of each figure over a client's repetitions.
#[derive(Clone, Debug)]
pub struct Medians {
    pub iops: f64,
    pub mib_s: f64,
    pub lat_p50_us: f64,
    pub lat_p99_us: f64,
    pub lat_p999_us: f64,
    pub cpu_usr: f64,
    pub cpu_sys: f64,
}

impl Medians {
    pub fn of(runs: &[Sample]) -> Medians {
        let median = |figure: fn(&Sample) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            match values.len() {
                0 => 0.0,
                n if n % 2 == 1 => values[n / 2],
                n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
            }
        };
        Medians {
            iops: median(|s| s.iops),
            mib_s: median(|s| s.mib_s),
            lat_p50_us: median(|s| s.lat_p50_us),
            lat_p99_us: median(|s| s.lat_p99_us),
            lat_p999_us: median(|s| s.lat_p999_us),
            cpu_usr: median(|s| s.cpu_usr),
            cpu_sys: median(|s| s.cpu_sys),
        }
    }
}
