//! `sluice-loadgen` end to end: the real binary against a real `sluice
//! serve`, DCMTK `storescp` and a pynetdicom SCP on loopback. Every test
//! checks what the receiver holds against what the loadgen counted (its
//! history file), and that statuses, rejections and aborts are tallied.

mod peers;
mod report;
mod retrieval;
mod scp;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sluice_loadgen::stats::RunResult;
use sluice_tests::run;

/// Runs `sluice-loadgen run` with `args` (plus --quiet, --out, --history)
/// and returns its result and the SOP Instance UIDs it counted as stored.
pub fn loadgen(dir: &Path, args: &[&str]) -> (RunResult, BTreeSet<String>) {
    loadgen_named(dir, "result.json", "history.jsonl", args)
}

/// [`loadgen`] writing its result and history into `dir` under these names.
pub fn loadgen_named(
    dir: &Path,
    result_name: &str,
    history_name: &str,
    args: &[&str],
) -> (RunResult, BTreeSet<String>) {
    let (output, result) = loadgen_exit(dir, result_name, history_name, args);
    assert!(
        output.status.success(),
        "sluice-loadgen {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = std::fs::read_to_string(dir.join(history_name))
        .expect("history file written")
        .lines()
        .filter(|line| line.contains("\"outcome\":\"stored\""))
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).expect("history line is JSON");
            assert_eq!(value["sha256"].as_str().map(str::len), Some(64), "{line}");
            value["sop_instance_uid"].as_str().expect("UID").to_string()
        })
        .collect();
    (result, stored)
}

/// A run that measures nothing (no association established): it still
/// writes its result, and exits non-zero with the reason on stderr, which
/// is returned.
pub fn loadgen_measuring_nothing(dir: &Path, args: &[&str]) -> (RunResult, String) {
    let (output, result) = loadgen_exit(dir, "result.json", "history.jsonl", args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no association with"), "{stderr}");
    (result, stderr)
}

/// Runs `sluice-loadgen run` (plus --quiet, --out, --history) whatever its
/// exit status, and parses the result file it wrote.
fn loadgen_exit(
    dir: &Path,
    result_name: &str,
    history_name: &str,
    args: &[&str],
) -> (std::process::Output, RunResult) {
    let out = dir.join(result_name);
    let output = run(
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
            .arg("run")
            .args(args)
            .args(["--quiet", "--cores", "2", "--response-timeout", "30"])
            .arg("--out")
            .arg(&out)
            .arg("--history")
            .arg(dir.join(history_name)),
        Duration::from_secs(120),
    );
    let result: RunResult =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_else(|error| {
            panic!(
                "sluice-loadgen {args:?} wrote no result ({error}):\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        }))
        .expect("result file parses");
    (output, result)
}

/// The SOP Instance UIDs of every Part 10 file under `dir` (recursively).
pub fn uids_on_disk(dir: &Path) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if let Some(uid) = sluice_loadgen::workload::part10_sop_instance_uid(&bytes) {
                    uids.insert(uid);
                }
            }
        }
    }
    uids
}

/// Runs `sluice-loadgen check` on the history `loadgen` wrote into `dir`;
/// returns (exit success, stdout).
pub fn check(dir: &Path, store: &Path, hashes: bool) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"));
    command
        .arg("check")
        .arg("--history")
        .arg(dir.join("history.jsonl"))
        .arg("--dir")
        .arg(store);
    if hashes {
        command.arg("--hashes");
    }
    let output = run(&mut command, Duration::from_secs(60));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
