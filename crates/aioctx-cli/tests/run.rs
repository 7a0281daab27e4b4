//! `aioctx run`: a program on the drop-in, with its exit status and the stats lines.

use std::process::Command;

fn aioctx_run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .arg("run")
        .args(args)
        .env_remove("AIOCTX_ENGINE")
        .env_remove("AIOCTX_STATS")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run aioctx run")
}

#[test]
fn fio_runs_on_the_named_engine_and_stats_say_so() {
    let file = format!("{}/run-fio.dat", env!("CARGO_TARGET_TMPDIR"));
    let name = format!("--filename={file}");
    let output = aioctx_run(&[
        "--engine",
        "threads",
        "--stats",
        "--",
        "fio",
        "--name=x",
        &name,
        "--size=16m",
        "--ioengine=libaio",
        "--direct=1",
        "--rw=randread",
        "--runtime=1",
        "--time_based",
    ]);
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("pid="))
        .unwrap_or_else(|| panic!("no stats line in {stderr}"));
    assert!(line.contains(" engine=threads "), "{line}");
}

#[test]
fn exit_status_is_the_programs() {
    let output = aioctx_run(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7));
    let output = aioctx_run(&["--", "sh", "-c", "echo \"$LD_PRELOAD $AIOCTX_ENGINE\""]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("libaio.so.1 auto"), "{stdout}");
}

#[test]
fn stats_say_when_the_program_used_no_context() {
    let output = aioctx_run(&["--stats", "--", "true"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no AIO context"), "{stderr}");
}

#[test]
fn a_missing_program_is_one_line_and_status_127() {
    let output = aioctx_run(&["--", "/nonexistent/program"]);
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}
