//! The `aioctx` command as a user runs it.

use std::process::{Command, Output};

fn aioctx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args(args)
        .env_remove("AIOCTX_ENGINE")
        .output()
        .expect("run aioctx")
}

/// `(destroys, late writes, errors)` from the last stdout line of `aioctx race`.
fn race_tally(output: &Output) -> (u64, u64, u64) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("race prints a result line");
    let numbers: Vec<u64> = last
        .strip_prefix("race: ")
        .expect("result line starts with 'race: '")
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(last.ends_with(" errors"), "{last}");
    (numbers[0], numbers[1], numbers[2])
}

#[test]
fn race_on_threads_finds_no_late_writes() {
    let output = aioctx(&["race", "--engine", "threads", "--iterations", "300"]);
    let (destroys, late, errors) = race_tally(&output);
    assert!(destroys >= 300);
    assert_eq!((late, errors), (0, 0));
    assert!(output.status.success());
}

#[test]
fn race_on_threads_with_direct_io_finds_no_late_writes() {
    let output = aioctx(&[
        "race",
        "--engine",
        "threads",
        "--threads",
        "8",
        "--direct",
        "--iterations",
        "300",
    ]);
    let (destroys, late, errors) = race_tally(&output);
    assert!(destroys >= 300);
    assert_eq!((late, errors), (0, 0));
    assert!(output.status.success());
}

/// The reproducer can fail: built with destroy's wait skipped, it must see late writes.
#[test]
fn race_catches_late_writes_when_destroy_does_not_wait() {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/negative-control");
    let built = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "build",
            "-q",
            "-p",
            "aioctx-cli",
            "--features",
            "negative-control",
            "--target-dir",
            target,
        ])
        .status()
        .expect("run cargo");
    assert!(built.success());
    let output = Command::new(format!("{target}/debug/aioctx"))
        .args([
            "race",
            "--engine",
            "threads",
            "--direct",
            "--iterations",
            "3000",
        ])
        .output()
        .expect("run the negative-control aioctx");
    let (_, late, _) = race_tally(&output);
    assert!(late > 0, "a destroy that does not wait must be caught");
    assert!(!output.status.success());
}

#[test]
fn unknown_engine_is_a_one_line_error_with_status_2() {
    let output = aioctx(&["race", "--engine", "nonesuch", "--iterations", "1"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nonesuch"));
}

#[test]
fn aioctx_engine_sets_the_default_engine() {
    let output = Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args(["race", "--iterations", "10"])
        .env("AIOCTX_ENGINE", "threads")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("engine threads"));
}

#[test]
fn info_names_every_engine_and_auto_choice() {
    let output = aioctx(&["info", "--json"]);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let engines = report["engines"].as_array().unwrap();
    let names: Vec<&str> = engines
        .iter()
        .map(|e| e["engine"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = aioctx::EngineKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, expected);
    let auto = report["auto"].as_str().unwrap();
    let chosen = engines
        .iter()
        .find(|e| e["engine"] == auto)
        .expect("auto picks a listed engine");
    assert_eq!(chosen["available"], true);
    for engine in engines {
        assert_eq!(
            engine["available"] == false,
            engine["reason"].is_string(),
            "{engine}"
        );
    }
    let text = aioctx(&["info"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("auto     -> {auto}")));
}

/// The number after `<name>: ` on a line of `aioctx race`'s stdout.
fn race_count(output: &Output, name: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{name}:' line in {stdout}"))
}

#[test]
fn race_on_sim_injects_faults_and_loses_none() {
    let output = Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args(["race", "--engine", "sim", "--iterations", "2000"])
        .env_remove("AIOCTX_SIM")
        .output()
        .expect("run aioctx");
    let (destroys, late, errors) = race_tally(&output);
    assert!(destroys >= 2000);
    assert_eq!(
        (late, errors),
        (0, 0),
        "injected faults are not race errors"
    );
    assert!(
        race_count(&output, "faults") > 0,
        "faults are on by default on sim"
    );
    assert_eq!(race_count(&output, "lost"), 0);
    assert!(output.status.success());
}
