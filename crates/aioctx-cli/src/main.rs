//! The `aioctx` command: `bench` (workloads on every engine and beside fio, the main job),
//! `run` (a program on the drop-in), `race` (the io_destroy race reproducer) and `info`
//! (which engines work here and why not). A thin layer over the `aioctx` library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod dropin;
mod info;
mod race;
mod run;
mod sys;

#[derive(Parser)]
#[command(
    name = "aioctx",
    version,
    about = "Linux AIO contexts in user space, with a destroy that always waits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure workloads on every engine, the kernel's AIO and (with --compare-fio) fio, on
    /// one file in one run; with no options, the standard matrix.
    Bench(bench::Args),
    /// Run a program on the drop-in libaio.so.1 (LD_PRELOAD); exits with its status.
    Run(run::Args),
    /// Reproduce the io_destroy race: submit reads into buffers, destroy, overwrite the
    /// buffers with a canary, and check that no late completion ever changes it.
    Race(race::Args),
    /// Show which engines work here, which one `auto` picks, and why the others do not.
    Info(info::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // A usage error is one line and status 2; help and version print as clap has them.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("bad arguments");
            eprintln!("aioctx: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Run(args) => run::run(args),
        Command::Race(args) => race::run(args),
        Command::Info(args) => info::run(args),
    }
}

/// The engine named on the command line, else by `AIOCTX_ENGINE`, else auto; an unknown
/// name is a one-line error and exit status 2 (a usage error).
fn engine_or_exit(name: Option<&str>) -> aioctx::EngineKind {
    let parsed = match name {
        Some(name) => name.parse(),
        None => aioctx::EngineKind::from_env(),
    };
    parsed.unwrap_or_else(|e| {
        eprintln!("aioctx: {e}");
        std::process::exit(2)
    })
}
