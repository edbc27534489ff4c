//! Crash consistency: a child process commits batches and reports each one;
//! the parent kills it with SIGKILL at seeded random moments, reopens the
//! index and checks that every reported batch is there, whole, that no batch
//! is there in part, and that the tables agree.
//!
//! The child is this test binary itself, re-run with `CHILD_DIR_VAR` set: the
//! test `crash::crash_child` then runs the workload until it is killed.
//! Without the variable that same test runs a short workload in-process and
//! checks it, so it is a real test either way.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_index::{CommitmentRecord, CommitmentState, FileId, Index, WriteOp};

use crate::common::{open, store, Rng};

const CHILD_DIR_VAR: &str = "SLUICE_INDEX_CRASH_CHILD_DIR";
const CHILD_START_VAR: &str = "SLUICE_INDEX_CRASH_CHILD_START";
const ROUNDS: u32 = 24;
const SEED: u64 = 0x5eed_c0ff_ee00_0042;
const INSTANCES_PER_BATCH: u64 = 40;
const DUPLICATES_PER_BATCH: u64 = 4;

fn triplet(batch: u64, item: u64) -> (String, String, String) {
    let study = format!("1.2.826.0.1.7.{}", batch % 11);
    let series = format!("{study}.{batch}");
    let sop = format!("{series}.{item}");
    (study, series, sop)
}

/// Batch `n`: new instances, duplicates of batch `n - 1` (quarantined), and a
/// commitment record; so a batch touches every kind of table.
fn batch_ops(batch: u64) -> Vec<WriteOp> {
    let mut ops: Vec<WriteOp> = (0..INSTANCES_PER_BATCH)
        .map(|item| {
            let (study, series, sop) = triplet(batch, item);
            store(&study, &series, &sop, u128::from(batch * 1_000 + item), 1)
        })
        .collect();
    if batch > 0 {
        for item in 0..DUPLICATES_PER_BATCH {
            let (study, series, sop) = triplet(batch - 1, item);
            ops.push(store(
                &study,
                &series,
                &sop,
                u128::from(batch * 1_000 + 500 + item),
                2,
            ));
        }
    }
    ops.push(WriteOp::PutCommitment {
        transaction_uid: format!("1.2.826.0.1.8.{batch}"),
        record: CommitmentRecord {
            state: CommitmentState::Pending,
            requester_ae_title: "SCU".into(),
            created_at_unix_ns: batch,
            deadline_unix_ns: batch + 1,
            delivery_attempts: 0,
            next_attempt_at_unix_ns: 0,
            payload: batch.to_be_bytes().to_vec(),
        },
    });
    ops
}

/// Runs batches from `start` on, printing `committed N` after each commit.
fn run_workload(dir: &Path, start: u64, batches: Option<u64>) {
    let index = open(dir);
    let writer = index.writer();
    let mut stdout = std::io::stdout().lock();
    let mut batch = start;
    while batches.is_none_or(|count| batch < start + count) {
        let results = writer.execute(batch_ops(batch)).expect("batch commits");
        assert!(results.iter().all(Result::is_ok));
        writeln!(stdout, "committed {batch}").expect("report");
        stdout.flush().expect("flush");
        batch += 1;
    }
}

/// How many whole batches from 0 are present; panics on a partial batch.
fn verify(index: &Index) -> u64 {
    let read = index.read().expect("read");
    let mut batch = 0u64;
    loop {
        let present = (0..INSTANCES_PER_BATCH)
            .filter(|&item| {
                let (study, series, sop) = triplet(batch, item);
                let record = read.instance(&study, &series, &sop).expect("lookup");
                if let Some(record) = &record {
                    assert_eq!(record.file_id, FileId(u128::from(batch * 1_000 + item)));
                }
                record.is_some()
            })
            .count() as u64;
        let commitment = read
            .commitment(&format!("1.2.826.0.1.8.{batch}"))
            .expect("commitment");
        if present == 0 {
            assert!(
                commitment.is_none(),
                "batch {batch}: commitment without its instances"
            );
            break;
        }
        assert_eq!(
            present, INSTANCES_PER_BATCH,
            "batch {batch} is partly present"
        );
        assert_eq!(
            commitment.map(|c| c.payload),
            Some(batch.to_be_bytes().to_vec())
        );
        batch += 1;
    }
    // Nothing of any later batch exists.
    for later in batch..batch + 3 {
        let (study, series, sop) = triplet(later, 0);
        assert!(
            read.instance(&study, &series, &sop)
                .expect("lookup")
                .is_none(),
            "hole before batch {later}"
        );
    }
    let report = read.check_consistency(20).expect("check");
    assert!(
        report.is_consistent(),
        "after a crash: {:?}",
        report.problems
    );
    assert_eq!(report.instances, batch * INSTANCES_PER_BATCH);
    assert_eq!(
        report.quarantine_entries,
        batch.saturating_sub(1) * DUPLICATES_PER_BATCH
    );
    assert_eq!(report.commitments, batch);
    batch
}

#[test]
fn crash_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        let start: u64 = std::env::var(CHILD_START_VAR)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        run_workload(Path::new(&dir), start, None);
        return;
    }
    // In-process: the same workload, three batches, then the same checks.
    let dir = tempfile::tempdir().expect("tempdir");
    run_workload(dir.path(), 0, Some(3));
    assert_eq!(verify(&open(dir.path())), 3);
}

#[test]
fn sigkill_at_random_moments_loses_no_reported_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let executable = std::env::current_exe().expect("test binary");
    let mut rng = Rng::new(SEED);
    let mut next_batch = 0u64;
    let mut rounds_done = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&executable)
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_VAR, dir.path())
            .env(CHILD_START_VAR, next_batch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = crossbeam_channel::unbounded();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                // libtest may print "test crash::crash_child ... " on the same line.
                let report = line
                    .find("committed ")
                    .and_then(|at| line.get(at + "committed ".len()..));
                if let Some(batch) = report.and_then(|n| n.trim().parse::<u64>().ok()) {
                    let _ = sender.send(batch);
                }
            }
        });
        // Kill at a random moment after the child has committed something
        // (waiting for that, not for a fixed time, keeps the test independent
        // of how fast this machine is).
        let first = receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("the child commits a first batch");
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        let mut reported = vec![first];
        reported.extend(receiver.try_iter());
        let last_reported = reported.last().copied();
        assert_eq!(
            reported.first(),
            Some(&next_batch),
            "round {round}: the child started where told"
        );
        assert!(
            reported.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "round {round}: reports in order"
        );
        let index = open(dir.path());
        let present = verify(&index);
        index.close();
        let reported_end = last_reported.map_or(next_batch, |last| last + 1);
        rounds_done += 1;
        // Every reported batch is there; at most one more (committed, killed
        // before it was printed), because the child waits for each answer.
        assert!(
            present >= reported_end,
            "round {round}: {present} batches present, {reported_end} reported"
        );
        assert!(
            present <= reported_end + 1,
            "round {round}: {present} present but only {reported_end} reported"
        );
        next_batch = present;
    }
    assert_eq!(rounds_done, ROUNDS);
    assert!(
        next_batch >= u64::from(ROUNDS),
        "every round committed at least one batch"
    );
}
