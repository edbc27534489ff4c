//! Two processes on one index, as an operator command beside the running
//! server: LMDB arbitrates their writes; the SOP index (fjall) is owned by
//! one of them at a time (its lock file). The other finds SOP Instance UIDs
//! by scanning, logs what it adds in `sop_pending`, and the owner adds that
//! to its tree; when the owner closes, the other takes the tree.
//!
//! The owner is this test binary re-run with `OWNER_DIR_VAR` set (the test
//! `two_processes::owner_child`), driven through its stdin and stdout.
//! Without the variable that test runs the owner's part alone, in-process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_index::{Index, StoreOutcome, Triplet, WriteOutcome, SOP_INDEX_TABLE_NAME};

use crate::common::{assert_consistent, open, store};

const OWNER_DIR_VAR: &str = "SLUICE_INDEX_OWNER_CHILD_DIR";

fn outcome(results: &[sluice_index::ItemResult]) -> &StoreOutcome {
    match results.first() {
        Some(Ok(WriteOutcome::Store(outcome))) => outcome,
        other => panic!("expected a store outcome, got {other:?}"),
    }
}

fn triplet_of(index: &Index, sop: &str) -> Option<Triplet> {
    index
        .read()
        .expect("read")
        .triplet_of_sop(sop)
        .expect("by sop")
}

/// Waits (up to 10 s) until `sop` is found under `study`.
fn wait_for(index: &Index, sop: &str, study: &str) -> Duration {
    let started = Instant::now();
    while triplet_of(index, sop).map(|triplet| triplet.study_instance_uid) != Some(study.into()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sop} not found under {study}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn sop_index_entries(index: &Index) -> u64 {
    index
        .stats()
        .expect("stats")
        .table(SOP_INDEX_TABLE_NAME)
        .map_or(0, |table| table.entries)
}

/// The owner: stores its instances, then (told to) waits until the other
/// process's instance is found through its SOP index, and checks that a
/// conflict with it is seen.
fn run_owner(dir: &Path, mut next_line: impl FnMut() -> String, mut say: impl FnMut(&str)) {
    let index = open(dir);
    let results = index
        .writer()
        .execute(vec![store("7.1", "7.1.1", "7.1.1.1", 71, 1)])
        .expect("store");
    assert_eq!(*outcome(&results), StoreOutcome::Stored);
    assert!(
        sop_index_entries(&index) > 0,
        "the first process owns the tree"
    );
    say("ready");
    assert_eq!(next_line(), "check");
    wait_for(&index, "7.5.1.1", "7.5");
    assert_conflict_with(&index, store("7.8", "7.8.1", "7.5.1.1", 78, 1), "7.5");
    say("checked");
    assert_eq!(next_line(), "close");
    index.close();
    say("closed");
}

#[test]
fn owner_child() {
    if let Some(dir) = std::env::var_os(OWNER_DIR_VAR) {
        let mut stdin = BufReader::new(std::io::stdin());
        let mut stdout = std::io::stdout();
        run_owner(
            Path::new(&dir),
            || {
                let mut line = String::new();
                stdin.read_line(&mut line).expect("read");
                line.trim().to_owned()
            },
            |word| {
                writeln!(stdout, "owner: {word}").expect("write");
                stdout.flush().expect("flush");
            },
        );
        return;
    }
    // In-process: the owner's first part alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let results = index
        .writer()
        .execute(vec![store("7.1", "7.1.1", "7.1.1.1", 71, 1)])
        .expect("store");
    assert_eq!(*outcome(&results), StoreOutcome::Stored);
    assert!(sop_index_entries(&index) > 0);
    wait_for(&index, "7.1.1.1", "7.1");
}

#[test]
fn a_second_process_works_without_the_sop_index_and_takes_it_when_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "two_processes::owner_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWNER_DIR_VAR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn owner");
    let mut to_owner = child.stdin.take().expect("stdin");
    let mut from_owner = BufReader::new(child.stdout.take().expect("stdout"));
    let mut expect = |word: &str| loop {
        let mut line = String::new();
        assert!(
            from_owner.read_line(&mut line).expect("read") > 0,
            "the owner exited before saying {word}"
        );
        if line.contains(&format!("owner: {word}")) {
            break;
        }
    };
    expect("ready");

    // This process opens the same index: the tree is the owner's.
    let index = open(dir.path());
    assert_eq!(sop_index_entries(&index), 0);
    // Lookups by SOP Instance UID scan, and find the owner's instance.
    assert_eq!(
        triplet_of(&index, "7.1.1.1"),
        Some(Triplet::new("7.1", "7.1.1", "7.1.1.1"))
    );
    // Stores: a new instance, and a conflict with the owner's (seen).
    let results = index
        .writer()
        .execute(vec![store("7.5", "7.5.1", "7.5.1.1", 75, 1)])
        .expect("store");
    assert_eq!(*outcome(&results), StoreOutcome::Stored);
    assert_conflict_with(&index, store("7.9", "7.9.1", "7.1.1.1", 79, 1), "7.1");
    assert_eq!(
        triplet_of(&index, "7.5.1.1"),
        Some(Triplet::new("7.5", "7.5.1", "7.5.1.1"))
    );

    // The owner finds this process's instance through its tree.
    writeln!(to_owner, "check").expect("write");
    expect("checked");
    writeln!(to_owner, "close").expect("write");
    expect("closed");
    assert!(child.wait().expect("wait").success(), "the owner failed");

    // The owner let go: this process's writer takes the tree (it tries
    // once a second when idle), and finds everything through it.
    let started = Instant::now();
    while sop_index_entries(&index) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the tree was not taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        triplet_of(&index, "7.8.1.1"),
        None,
        "the owner's conflict was quarantined, not stored"
    );
    for (sop, study) in [("7.1.1.1", "7.1"), ("7.5.1.1", "7.5")] {
        wait_for(&index, sop, study);
    }
    let report = assert_consistent(&index);
    assert_eq!(report.instances, 2);
    assert_eq!(report.quarantine_entries, 2);
    index.close();

    let index = open(dir.path());
    let report = assert_consistent(&index);
    assert_eq!(report.instances, 2);
}

/// Stores `op` and checks that it is refused as a conflict with the SOP
/// Instance UID stored in `study`.
fn assert_conflict_with(index: &Index, op: sluice_index::WriteOp, study: &str) {
    let results = index.writer().execute(vec![op]).expect("store");
    assert!(
        matches!(outcome(&results), StoreOutcome::SopInstanceConflict { stored, .. } if stored.study_instance_uid == study),
        "{results:?}"
    );
}
