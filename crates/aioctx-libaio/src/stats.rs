//! `AIOCTX_STATS=<path>`: each destroyed context appends one line of counters, so a test can
//! prove that the drop-in (and which engine) served a program, not the system's libaio.
//!
//! ```text
//! pid=4242 engine=threads submitted=65536 completed=65536 cancelled=0
//! ```

use std::io::Write;

use aioctx::Context;

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
