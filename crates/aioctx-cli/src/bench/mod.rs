//! `aioctx bench`: fio-like workloads on one file, every client side by side in one run
//! (aioctx per engine, the kernel's own AIO, and with `--compare-fio` fio's engines on the
//! system libaio and on the drop-in), repetitions interleaved, ratios from the medians.

mod aioctx_client;
mod client;
mod destroy;
mod fio_client;
mod io_loop;
mod kernel_client;
mod machine;
mod options;
mod progress;
mod report;
mod sample;
mod svg;
mod testfile;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

pub use options::Args;

use client::{Client, FioEngine};
use machine::Machine;
use options::{FileChoice, Plan, Usage};
use progress::Progress;
use sample::Sample;
use testfile::TestFile;
use workload::Workload;

/// What the fio clients need: fio itself, and the drop-in for the rows over it.
struct Fio {
    path: PathBuf,
    dropin: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let mut plan = match options::plan(args) {
        Ok(plan) => plan,
        Err(Usage(message)) => {
            eprintln!("aioctx: {message}");
            return ExitCode::from(2);
        }
    };
    for (kind, reason) in &plan.skipped_engines {
        eprintln!("bench: engine {kind} left out: {reason}");
    }
    let fio = plan.compare_fio.then(find_fio).flatten();
    let file = match &plan.file {
        FileChoice::Temp(dir) => TestFile::temporary(dir, plan.settings.size),
        FileChoice::Named(path, size) => TestFile::named(path, *size),
    };
    let file = match file {
        Ok(file) => file,
        Err(e) => {
            eprintln!("aioctx: {e}");
            return ExitCode::FAILURE;
        }
    };
    plan.settings.size = file.size;
    let clients: Vec<Client> = Client::lineup(&plan.engines, fio.is_some())
        .into_iter()
        .filter(|c| {
            !matches!(c, Client::Fio(FioEngine::Dropin(_)))
                || fio.as_ref().is_some_and(|f| f.dropin.is_some())
        })
        .collect();
    let machine = Machine::describe(&file.path);
    let (results, failures) = execute(&plan, &clients, &file, fio.as_ref());
    drop(file);
    let rows = report::rows(results);
    if plan.json {
        println!(
            "{:#}",
            report::json(&rows, &machine, &plan.settings, plan.repeat)
        );
    } else {
        report::print_table(&rows, &machine);
    }
    if let Some(path) = &plan.svg {
        if let Err(e) = std::fs::write(
            path,
            svg::render(&rows, &clients, &machine, plan.repeat, &report::command()),
        ) {
            eprintln!("aioctx: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// fio and the drop-in, or why not (one line each; the other clients run regardless).
fn find_fio() -> Option<Fio> {
    let Some(path) = fio_client::find_fio() else {
        eprintln!(
            "aioctx: fio is not installed (Debian package fio: apt-get install fio); \
             showing the aioctx and kernel results only"
        );
        return None;
    };
    let dropin = match crate::dropin::find_or_build() {
        Ok(dropin) => Some(dropin),
        Err(e) => {
            eprintln!("aioctx: {e}; the fio rows over the drop-in are left out");
            None
        }
    };
    Some(Fio { path, dropin })
}

type Results = Vec<(Client, Workload, Vec<Sample>)>;

/// Every repetition runs every workload on every client before the next repetition starts,
/// with the clients' order rotated each time, so that drift on a shared machine falls on
/// all of them alike. A failed run is one line on stderr and leaves a gap in its row.
fn execute(plan: &Plan, clients: &[Client], file: &TestFile, fio: Option<&Fio>) -> (Results, u32) {
    let mut results: Results = Vec::new();
    for workload in &plan.workloads {
        for client in clients.iter().filter(|c| c.runs(workload)) {
            results.push((*client, *workload, Vec::new()));
        }
    }
    let runs = results.len() as u64 * u64::from(plan.repeat);
    let budget: f64 = results
        .iter()
        .map(|(_, w, _)| match w {
            Workload::Io(_) => plan.settings.runtime,
            Workload::Destroy { .. } => plan.settings.runtime.min(destroy::MAX_TIME),
        })
        .sum::<std::time::Duration>()
        .as_secs_f64()
        * f64::from(plan.repeat);
    eprintln!(
        "bench: {runs} runs on {} ({} MiB), about {budget:.0} s of measuring",
        file.path.display(),
        file.size >> 20
    );
    let progress = Progress::new(runs);
    let mut failures = 0;
    for repetition in 0..plan.repeat {
        for workload in &plan.workloads {
            let mut order: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(_, (_, w, _))| w == workload)
                .map(|(i, _)| i)
                .collect();
            let len = order.len().max(1);
            order.rotate_left(repetition as usize % len);
            for i in order {
                let client = results[i].0;
                progress.begin(repetition + 1, plan.repeat, workload, client);
                match run_once(plan, client, workload, file, fio, &progress) {
                    Ok(sample) => {
                        progress.done(&sample);
                        results[i].2.push(sample);
                    }
                    Err(e) => {
                        failures += 1;
                        progress.println(&format!("bench: {client} on {workload}: {e}"));
                    }
                }
            }
        }
    }
    progress.finish();
    (results, failures)
}

fn run_once(
    plan: &Plan,
    client: Client,
    workload: &Workload,
    file: &TestFile,
    fio: Option<&Fio>,
    progress: &Progress,
) -> Result<Sample, String> {
    let settings = &plan.settings;
    let load = match workload {
        Workload::Destroy { in_flight } => {
            let direct = file.open(true).map_err(|e| e.to_string())?;
            let blocks = settings.size / workload::DESTROY_BS;
            return destroy::measure(client, *in_flight, blocks, direct, settings.runtime)
                .map_err(|e| e.to_string());
        }
        Workload::Io(load) => load,
    };
    let cached = file.prepare(load)?;
    let live = |completed: u64, elapsed: std::time::Duration| progress.live(completed, elapsed);
    let mut sample = match client {
        Client::Aioctx(kind) => {
            let handle = file.open(load.direct).map_err(|e| e.to_string())?;
            let run = aioctx_client::measure(kind, load, settings, handle, &live)
                .map_err(|e| e.to_string())?;
            let t = &run.tally;
            let mut sample = Sample::measured(t.requests, t.bytes, &t.lat, t.elapsed, t.cpu);
            sample.context_submitted = Some(run.context_submitted);
            sample.context_completed = Some(run.context_completed);
            sample
        }
        Client::Kernel => {
            let handle = file.open(load.direct).map_err(|e| e.to_string())?;
            let t =
                kernel_client::measure(load, settings, handle, &live).map_err(|e| e.to_string())?;
            Sample::measured(t.requests, t.bytes, &t.lat, t.elapsed, t.cpu)
        }
        Client::Fio(engine) => {
            let fio = fio.ok_or("fio is not available")?;
            fio_client::measure(
                &fio.path,
                engine,
                load,
                settings,
                file,
                fio.dropin.as_deref(),
                plan.verbose,
            )?
        }
    };
    sample.cached_bytes_at_start = Some(cached);
    Ok(sample)
}
