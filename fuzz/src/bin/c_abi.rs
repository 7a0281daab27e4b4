//! The fuzz target: arbitrary bytes drive io_setup, io_submit (every iocb field), io_getevents,
//! io_cancel and io_destroy through the drop-in's `extern "C"` functions; the harness panics
//! (a crash, for AFL) on any broken contract. Build and run with `scripts/fuzz`.

#[path = "../../../crates/aioctx-libaio/tests/harness/mod.rs"]
mod harness;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        harness::exercise(data);
    });
}
