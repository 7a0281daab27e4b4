//! The results: one row per client and workload (medians of the repetitions, the ratio to
//! the kernel row of the same client), as a table or as JSON.

use serde_json::{json, Value};

use super::client::Client;
use super::machine::Machine;
use super::sample::{Medians, Sample};
use super::workload::{Cache, Rw, Settings, Workload, DESTROY_BS};

pub struct Row {
    pub client: Client,
    pub workload: Workload,
    pub runs: Vec<Sample>,
    pub medians: Medians,
    /// This row's median IOPS over its baseline's (the kernel through the same client).
    pub ratio: Option<f64>,
}

/// Rows from the samples, in workload order, each with its ratio to the kernel row.
pub fn rows(results: Vec<(Client, Workload, Vec<Sample>)>) -> Vec<Row> {
    let mut rows: Vec<Row> = results
        .into_iter()
        .filter(|(_, _, runs)| !runs.is_empty())
        .map(|(client, workload, runs)| Row {
            client,
            workload,
            medians: Medians::of(&runs),
            runs,
            ratio: None,
        })
        .collect();
    let baselines: Vec<Option<f64>> = rows
        .iter()
        .map(|row| {
            rows.iter()
                .find(|b| b.workload == row.workload && b.client == row.client.baseline())
                .map(|b| b.medians.iops)
        })
        .collect();
    for (row, base) in rows.iter_mut().zip(baselines) {
        row.ratio = base.filter(|&b| b > 0.0).map(|b| row.medians.iops / b);
    }
    rows
}

pub fn print_table(rows: &[Row], machine: &Machine) {
    println!("{}", machine.line());
    println!(
        "{:<26} {:<18} {:<10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>5} {:>5} {:>9}",
        "workload",
        "client",
        "engine",
        "IOPS",
        "MiB/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "usr%",
        "sys%",
        "vs kernel"
    );
    let mut last = None;
    for row in rows {
        if last.is_some() && last != Some(row.workload) {
            println!();
        }
        last = Some(row.workload);
        let m = &row.medians;
        println!(
            "{:<26} {:<18} {:<10} {:>9} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>5.0} {:>5.0} {:>9}",
            row.workload.to_string(),
            row.client.name(),
            row.client.engine(),
            si(m.iops),
            m.mib_s,
            m.lat_p50_us,
            m.lat_p99_us,
            m.lat_p999_us,
            m.cpu_usr,
            m.cpu_sys,
            row.ratio.map_or("-".into(), ratio),
        );
    }
    if rows.iter().any(|r| r.workload.is_destroy()) {
        println!();
        println!(
            "destroy rows: IOPS is destroys per second of destroying (1 / mean destroy time); \
             latencies are the destroy call's"
        );
    }
    println!(
        "vs kernel: median IOPS over the kernel row of the same client (aioctx: the kernel's \
         AIO syscalls in the same loop; fio: fio's libaio on the system libaio)"
    );
}

/// 0.934 -> "0.93x", 250.2 -> "250x".
fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.2}x")
    }
}

/// 1234 -> "1.23k", 1234567 -> "1.23M".
pub fn si(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v if v >= 1e3 => format!("{:.2}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

pub fn json(rows: &[Row], machine: &Machine, settings: &Settings, repeat: u32) -> Value {
    let results: Vec<Value> = rows.iter().map(|row| row_json(row, settings)).collect();
    json!({
        "machine": machine,
        "command": command(),
        "file_size": settings.size,
        "runtime_s": settings.runtime.as_secs_f64(),
        "repeat": repeat,
        "results": results,
    })
}

fn row_json(row: &Row, settings: &Settings) -> Value {
    let (kind, rw, bs, iodepth, batch, direct, cache, in_flight) = match row.workload {
        Workload::Io(load) => (
            "io",
            load.rw,
            load.bs,
            load.iodepth,
            load.batch,
            load.direct,
            load.cache,
            None,
        ),
        Workload::Destroy { in_flight } => (
            "destroy",
            Rw::Randread,
            DESTROY_BS,
            in_flight,
            in_flight,
            true,
            Cache::Hot,
            Some(in_flight),
        ),
    };
    let m = &row.medians;
    json!({
        "client": row.client.name(),
        "engine": row.client.engine(),
        "workload": row.workload.to_string(),
        "kind": kind,
        "rw": rw,
        "bs": bs,
        "iodepth": iodepth,
        "batch": batch,
        "direct": direct,
        "cache": cache,
        "in_flight": in_flight,
        "numjobs": settings.numjobs,
        "shared": settings.shared,
        "iops": m.iops,
        "mib_s": m.mib_s,
        "lat_p50_us": m.lat_p50_us,
        "lat_p99_us": m.lat_p99_us,
        "lat_p999_us": m.lat_p999_us,
        "cpu_usr": m.cpu_usr,
        "cpu_sys": m.cpu_sys,
        "baseline": format!("{} {}", row.client.baseline().name(), row.client.baseline().engine()),
        "ratio": row.ratio,
        "runs": row.runs,
    })
}

/// The command line that produced the results, as the user typed it.
pub fn command() -> String {
    let mut words: Vec<String> = std::env::args().collect();
    if let Some(program) = words.first_mut() {
        *program = "aioctx".into();
    }
    words.join(" ")
}
