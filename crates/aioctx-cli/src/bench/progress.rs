//! The live progress bar on stderr: which run of how many, and the current IOPS.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::client::Client;
use super::report::si;
use super::sample::Sample;
use super::workload::Workload;

pub struct Progress {
    bar: ProgressBar,
    /// The current run's label and its last (completed, elapsed) reading.
    current: Mutex<(String, u64, Duration)>,
}

impl Progress {
    pub fn new(runs: u64) -> Progress {
        let bar = ProgressBar::new(runs);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        Progress {
            bar,
            current: Mutex::new((String::new(), 0, Duration::ZERO)),
        }
    }

    pub fn begin(&self, repetition: u32, repeat: u32, workload: &Workload, client: Client) {
        let label = format!("run {repetition}/{repeat}: {workload}, {client}");
        self.bar.set_message(label.clone());
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (label, 0, Duration::ZERO);
    }

    /// Completions so far in the current run: the bar shows the rate since the last reading.
    pub fn live(&self, completed: u64, elapsed: Duration) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (label, last_completed, last_elapsed) = &mut *current;
        let dt = elapsed.saturating_sub(*last_elapsed).as_secs_f64();
        if dt >= 0.2 {
            let rate = completed.saturating_sub(*last_completed) as f64 / dt;
            self.bar.set_message(format!("{label}: {} IOPS", si(rate)));
            *last_completed = completed;
            *last_elapsed = elapsed;
        }
    }

    pub fn done(&self, sample: &Sample) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        self.bar
            .set_message(format!("{}: {} IOPS", current.0, si(sample.iops)));
        self.bar.inc(1);
    }

    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
