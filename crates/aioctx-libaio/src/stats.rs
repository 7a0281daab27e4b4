//! `AIOCTX_STATS=<path>`: each context appends one line of counters when it is destroyed,
//! or at exit if it is still live then (QEMU never destroys its context), so a test can
//! prove that the drop-in (and which engine) served a program, not the system's libaio.
//!
//! ```text
//! pid=4242 engine=threads submitted=65536 completed=65536 cancelled=0
//! ```

use std::io::Write;
use std::sync::Once;

use aioctx::Context;

use crate::handles;

/// Arranges for the contexts still live at exit to be recorded (once per process).
pub(crate) fn record_at_exit() {
    static REGISTERED: Once = Once::new();
    if std::env::var_os("AIOCTX_STATS").is_none() {
        return;
    }
    REGISTERED.call_once(|| {
        // SAFETY: `record_live` is a plain function that lives as long as the process.
        unsafe { libc::atexit(record_live) };
    });
}

extern "C" fn record_live() {
    // No panic may unwind out of an atexit handler into libc.
    let _ = std::panic::catch_unwind(|| handles::live_contexts().iter().for_each(|c| record(c)));
}

/// Appends the context's line to `$AIOCTX_STATS`, if set. Failing to write it is not the
/// caller's error: the line is simply missing.
pub(crate) fn record(context: &Context) {
    let Some(path) = std::env::var_os("AIOCTX_STATS") else {
        return;
    };
    let stats = context.stats();
    let line = format!(
        "pid={} engine={} submitted={} completed={} cancelled={}\n",
        std::process::id(),
        context.engine(),
        stats.submitted,
        stats.completed,
        stats.cancelled,
    );
    // One write of one line with O_APPEND: lines of concurrent processes do not interleave.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = file.write_all(line.as_bytes());
    }
}
