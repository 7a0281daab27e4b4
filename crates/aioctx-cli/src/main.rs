//! The `aioctx` command: `race` (the io_destroy race reproducer) and `info` (which engines
//! work here and why not). A thin layer over the `aioctx` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod info;
mod race;

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
    /// Reproduce the io_destroy race: submit reads into buffers, destroy, overwrite the
    /// buffers with a canary, and check that no late completion ever changes it.
    Race(race::Args),
    /// Show which engines work here, which one `auto` picks, and why the others do not.
    Info(info::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
