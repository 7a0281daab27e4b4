//! `aioctx run [--engine E] [--stats] -- PROGRAM ARGS...`: an existing program on the
//! drop-in, through `LD_PRELOAD`; its exit status is the program's.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

#[derive(clap::Args)]
pub struct Args {
    /// Engine the drop-in runs on (sets AIOCTX_ENGINE; default: AIOCTX_ENGINE, else auto).
    #[arg(long)]
    engine: Option<String>,
    /// Print the AIOCTX_STATS line of every context the program had, when it exits.
    #[arg(long)]
    stats: bool,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    program: Vec<OsString>,
}

pub fn run(args: Args) -> ExitCode {
    let engine = crate::engine_or_exit(args.engine.as_deref());
    let dropin = match crate::dropin::find_or_build() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("aioctx: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut preload = dropin.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let mut command = Command::new(&args.program[0]);
    command
        .args(&args.program[1..])
        .env("LD_PRELOAD", preload)
        .env("AIOCTX_ENGINE", engine.name());
    // The program's own AIOCTX_STATS file, if it has one, is where the lines go and are read.
    let stats = args.stats.then(|| {
        std::env::var_os("AIOCTX_STATS").map_or_else(
            || {
                let path =
                    std::env::temp_dir().join(format!("aioctx-run-{}.stats", std::process::id()));
                let _ = std::fs::remove_file(&path);
                (path, true)
            },
            |path| (path.into(), false),
        )
    });
    // Lines already in the user's own file are not this run's.
    let mut already = 0;
    if let Some((path, _)) = &stats {
        command.env("AIOCTX_STATS", path);
        already = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    }
    let status = match command.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("aioctx: {}: {e}", args.program[0].to_string_lossy());
            return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    if let Some((path, ours)) = stats {
        let all = std::fs::read_to_string(&path).unwrap_or_default();
        let lines = all.get(already..).unwrap_or("");
        if lines.trim().is_empty() {
            eprintln!("aioctx: the program set up no AIO context on the drop-in");
        }
        for line in lines.lines() {
            eprintln!("{line}");
        }
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128 + signal as u8),
        (None, None) => ExitCode::FAILURE,
    }
}
