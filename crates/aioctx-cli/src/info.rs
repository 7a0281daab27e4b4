//! `aioctx info [--json]`: every engine, whether it works here, why not, and auto's choice.

use std::process::ExitCode;

use aioctx::engine::{probe_all, EngineKind};

#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> ExitCode {
    let probes = probe_all();
    let auto = EngineKind::Auto.resolve();
    let default = match EngineKind::from_env() {
        Ok(kind) => kind.resolve(),
        Err(e) => {
            eprintln!("aioctx: AIOCTX_ENGINE: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        let engines: Vec<_> = probes
            .iter()
            .map(|p| {
                serde_json::json!({
                    "engine": p.kind.name(),
                    "available": p.available(),
                    "reason": p.result.as_ref().err().map(ToString::to_string),
                })
            })
            .collect();
        let report = serde_json::json!({
            "engines": engines,
            "auto": auto.name(),
            "default": default.name(),
        });
        println!("{report:#}");
    } else {
        for p in &probes {
            match &p.result {
                Ok(()) => println!("{:<8} available", p.kind.name()),
                Err(reason) => println!("{:<8} unavailable: {reason}", p.kind.name()),
            }
        }
        println!("auto     -> {}", auto.name());
        println!("default  -> {} (AIOCTX_ENGINE overrides)", default.name());
    }
    ExitCode::SUCCESS
}
