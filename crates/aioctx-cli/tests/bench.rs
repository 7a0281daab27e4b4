//! `aioctx bench` as a user runs it. Speed is reported, never asserted: these check the
//! accounting (every request counted once, bytes add up, every latency recorded), the
//! report's fields, the cold cache, the chart, and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FIELDS: [&str; 16] = [
    "client",
    "engine",
    "rw",
    "bs",
    "iodepth",
    "batch",
    "direct",
    "cache",
    "iops",
    "mib_s",
    "lat_p50_us",
    "lat_p99_us",
    "lat_p999_us",
    "cpu_usr",
    "cpu_sys",
    "runs",
];

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn bench(args: &[&str]) -> Output {
    bench_with_path(args, None)
}

fn bench_with_path(args: &[&str], path: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aioctx"));
    command
        .arg("bench")
        .args(["--dir", scratch().to_str().unwrap()])
        .args(args)
        .env_remove("AIOCTX_ENGINE");
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().expect("run aioctx bench")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints valid JSON")
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().expect("results is an array")
}

/// Requests, latencies and bytes of every run agree: each request counted once.
fn assert_runs_add_up(result: &Value, repeat: usize) {
    let runs = result["runs"].as_array().expect("runs is an array");
    assert_eq!(runs.len(), repeat, "{result}");
    let bs = result["bs"].as_u64().unwrap();
    for run in runs {
        let requests = run["requests"].as_u64().unwrap();
        assert!(requests > 0, "{run}");
        assert_eq!(run["lat_samples"].as_u64(), Some(requests), "{run}");
        assert_eq!(run["bytes"].as_u64(), Some(requests * bs), "{run}");
        if result["client"] == "aioctx" {
            assert_eq!(run["context_submitted"].as_u64(), Some(requests), "{run}");
            assert_eq!(run["context_completed"].as_u64(), Some(requests), "{run}");
        }
    }
    let mut iops: Vec<f64> = runs.iter().map(|r| r["iops"].as_f64().unwrap()).collect();
    iops.sort_by(f64::total_cmp);
    let median = if iops.len() % 2 == 1 {
        iops[iops.len() / 2]
    } else {
        (iops[iops.len() / 2 - 1] + iops[iops.len() / 2]) / 2.0
    };
    let reported = result["iops"].as_f64().unwrap();
    assert!((reported - median).abs() <= median * 1e-9, "{result}");
}

fn engines() -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args(["info", "--json"])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    info["engines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["available"] == true && e["engine"] != "sim")
        .map(|e| e["engine"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_request_is_counted_once_on_every_engine() {
    let output = bench(&[
        "--rw",
        "randread",
        "--iodepth",
        "8",
        "--batch",
        "4",
        "--size",
        "16m",
        "--runtime",
        "200ms",
        "--repeat",
        "2",
        "--json",
    ]);
    let report = json_of(&output);
    let results = results(&report);
    let mut clients: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["client"].as_str().unwrap(),
                r["engine"].as_str().unwrap()
            )
        })
        .collect();
    clients.sort();
    let mut expected: Vec<String> = engines().iter().map(|e| format!("aioctx {e}")).collect();
    expected.push("kernel kernel-aio".into());
    expected.sort();
    assert_eq!(clients, expected);
    for result in results {
        for field in FIELDS {
            assert!(!result[field].is_null(), "{field} missing in {result}");
        }
        assert_eq!(result["batch"], 4);
        assert_eq!(result["iodepth"], 8);
        assert_runs_add_up(result, 2);
    }
}

#[test]
fn shared_context_jobs_count_every_mixed_request_once() {
    let output = bench(&[
        "--rw",
        "randrw",
        "--bs",
        "8k",
        "--iodepth",
        "4",
        "--numjobs",
        "2",
        "--shared",
        "--engine",
        "threads",
        "--size",
        "16m",
        "--runtime",
        "200ms",
        "--repeat",
        "1",
        "--json",
    ]);
    let report = json_of(&output);
    for result in results(&report) {
        assert_eq!(result["rw"], "randrw");
        assert_eq!(result["numjobs"], 2);
        assert_runs_add_up(result, 1);
    }
}

#[test]
fn fio_clients_run_beside_aioctx_with_every_field() {
    let output = bench(&[
        "--compare-fio",
        "--engine",
        "threads",
        "--direct",
        "--iodepth",
        "4",
        "--size",
        "16m",
        "--runtime",
        "300ms",
        "--repeat",
        "1",
        "--json",
    ]);
    let report = json_of(&output);
    let results = results(&report);
    let clients: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["client"].as_str().unwrap(), r["engine"].as_str().unwrap()))
        .collect();
    for expected in [
        ("kernel", "kernel-aio"),
        ("aioctx", "threads"),
        ("fio-libaio", "kernel-aio"),
        ("fio-libaio-dropin", "threads"),
        ("fio-io_uring", "io_uring"),
        ("fio-psync", "psync"),
        ("fio-posixaio", "glibc-aio"),
    ] {
        assert!(
            clients.contains(&expected),
            "{expected:?} missing from {clients:?}"
        );
    }
    for result in results {
        for field in FIELDS {
            assert!(!result[field].is_null(), "{field} missing in {result}");
        }
        assert_eq!(result["direct"], true);
        assert_runs_add_up(result, 1);
        if result["client"] == "kernel" || result["client"] == "fio-libaio" {
            assert_eq!(result["ratio"].as_f64(), Some(1.0), "{result}");
        }
        assert!(result["ratio"].as_f64().is_some(), "{result}");
    }
}

#[test]
fn cold_cache_leaves_no_page_of_the_file_cached_before_each_run() {
    let file = scratch().join("cold-check.dat");
    let _ = std::fs::remove_file(&file);
    std::fs::write(&file, vec![7u8; 8 << 20]).unwrap();
    // Every page cached to begin with: the bench has to drop them.
    std::fs::read(&file).unwrap();
    let file_arg = file.to_str().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args([
            "bench",
            "--file",
            file_arg,
            "--cache",
            "cold",
            "--iodepth",
            "4",
            "--runtime",
            "200ms",
            "--repeat",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let report = json_of(&output);
    for result in results(&report) {
        assert_eq!(result["cache"], "cold");
        for run in result["runs"].as_array().unwrap() {
            assert_eq!(run["cached_bytes_at_start"], 0, "{result}");
        }
    }
    let output = Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args([
            "bench",
            "--file",
            file_arg,
            "--cache",
            "hot",
            "--engine",
            "threads",
            "--runtime",
            "100ms",
            "--repeat",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let report = json_of(&output);
    for result in results(&report) {
        for run in result["runs"].as_array().unwrap() {
            assert_eq!(run["cached_bytes_at_start"], 8 << 20, "{result}");
        }
    }
    assert!(file.exists(), "a file the user named is kept");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn missing_fio_is_one_line_naming_the_package_and_the_rest_is_printed() {
    let empty = scratch().join("no-fio-here");
    std::fs::create_dir_all(&empty).unwrap();
    let output = bench_with_path(
        &[
            "--compare-fio",
            "--engine",
            "threads",
            "--size",
            "16m",
            "--runtime",
            "100ms",
            "--repeat",
            "1",
        ],
        Some(empty.to_str().unwrap()),
    );
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_fio: Vec<&str> = stderr.lines().filter(|l| l.contains("fio")).collect();
    assert_eq!(about_fio.len(), 1, "{stderr}");
    assert!(about_fio[0].contains("Debian package fio"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("aioctx ") && stdout.contains("threads"),
        "{stdout}"
    );
    assert!(stdout.contains("kernel-aio"), "{stdout}");
    assert!(!stdout.contains("fio-"), "{stdout}");
}

#[test]
fn the_table_rates_every_row_against_the_kernel_row() {
    let output = bench(&[
        "--engine",
        "threads",
        "--iodepth",
        "2",
        "--size",
        "16m",
        "--runtime",
        "100ms",
        "--repeat",
        "1",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.lines().next().unwrap().contains("CPUs"), "{stdout}");
    let kernel = stdout
        .lines()
        .find(|l| l.contains(" kernel "))
        .expect("a kernel row");
    assert!(kernel.trim_end().ends_with("1.00x"), "{kernel}");
    let threads = stdout
        .lines()
        .find(|l| l.contains(" threads "))
        .expect("an aioctx row");
    assert!(threads.trim_end().ends_with('x'), "{threads}");
}

#[test]
fn svg_chart_is_well_formed_and_renders() {
    let svg = scratch().join("chart.svg");
    let png = scratch().join("chart.png");
    let _ = std::fs::remove_file(&png);
    let output = bench(&[
        "--engine",
        "threads",
        "--size",
        "16m",
        "--runtime",
        "100ms",
        "--repeat",
        "1",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    for expected in [
        "IOPS (log scale)",
        "workload",
        "aioctx threads",
        "kernel AIO syscalls",
        "CPUs",
    ] {
        assert!(text.contains(expected), "{expected} missing from the chart");
    }
    render(&svg, &png);
}

fn render(svg: &Path, png: &Path) {
    let status = Command::new("rsvg-convert")
        .arg("-o")
        .arg(png)
        .arg(svg)
        .status()
        .expect("rsvg-convert (Debian package librsvg2-bin) runs");
    assert!(status.success(), "rsvg-convert rejects the chart");
    let bytes = std::fs::read(png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "rsvg-convert wrote no PNG");
}

#[test]
fn bad_options_are_one_line_errors_with_status_2() {
    for args in [
        &["--bs", "0"][..],
        &["--iodepth", "0"],
        &["--engine", "nonesuch"],
        &["--size", "900t"],
        &["--batch", "9", "--iodepth", "8"],
        &["--runtime", "soon"],
        &["--no-such-option"],
    ] {
        let output = bench(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let no_space = bench(&["--size", "900t"]);
    assert!(String::from_utf8_lossy(&no_space.stderr).contains("free space"));
}

#[test]
fn the_temp_file_is_removed_after_the_run() {
    let dir = scratch().join("own-temp-file");
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aioctx"))
        .args([
            "bench",
            "--dir",
            dir.to_str().unwrap(),
            "--engine",
            "threads",
            "--size",
            "8m",
        ])
        .args(["--runtime", "100ms", "--repeat", "1"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
