//! A full disk under the SOP Instance UID index (fjall): the write or flush
//! that runs out of space poisons the tree, and fjall refuses every later
//! write until it is reopened. The writer must answer the batches it cannot
//! keep as a full disk (out of resources) and reopen the tree by itself once
//! space returns, losing nothing it acknowledged.
//!
//! A small tmpfs (root: CI runs as root) holds the index; a filler file
//! takes every free byte, so the tree's next journal flush fails.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_index::{Index, IndexError, IndexOptions, WriteOp, SOP_INDEX_TABLE_NAME};

use crate::common::store;

/// A tmpfs of `size_mib`, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m"),
                "sluice-test",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xA5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling: {error}"),
        }
    }
    // The last pages of a tmpfs: bytes one by one.
    while file.write(&[0]).is_ok_and(|written| written == 1) {}
}

fn stores(batch: u32, count: u32) -> Vec<WriteOp> {
    (0..count)
        .map(|i| {
            let study = format!("1.2.840.99998.{batch}");
            let series = format!("{study}.1");
            store(
                &study,
                &series,
                &format!("{series}.{i}"),
                u128::from(batch * 1000 + i + 1),
                1,
            )
        })
        .collect()
}

/// Bytes of the SOP index's tree (0 while this process does not own it).
fn sop_index_bytes(index: &Index) -> u64 {
    index
        .stats()
        .expect("stats")
        .tables
        .iter()
        .find(|table| table.name == SOP_INDEX_TABLE_NAME)
        .expect("the SOP index's stats")
        .bytes
}

fn sop(batch: u32, i: u32) -> String {
    format!("1.2.840.99998.{batch}.1.{i}")
}

#[test]
fn a_full_disk_under_the_sop_index_is_out_of_resources_and_the_index_recovers() {
    let fs = Tmpfs::mount(24);
    let index_dir = fs.0.path().join("index");
    let options = IndexOptions {
        map_size_bytes: 16 << 20,
        ..crate::common::options()
    };
    let index = Index::open(&index_dir, options).expect("open");
    let writer = index.writer();
    // Acknowledged before the disk fills.
    let mut acknowledged = Vec::new();
    for batch in 0..20 {
        let results = writer
            .execute(stores(batch, 20))
            .expect("store before the fill");
        assert!(results.iter().all(Result::is_ok));
        acknowledged.push(batch);
    }

    let filler = fs.0.path().join("filler");
    fill(&filler);
    // Stores until the tree has failed a flush (the syncer flushes it about
    // once a second): every failure is a full disk, never anything else.
    let mut next = 100;
    let mut failures = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        match writer.execute(stores(next, 20)) {
            Ok(results) => {
                assert!(results.iter().all(Result::is_ok));
                acknowledged.push(next);
            }
            Err(error) => {
                assert!(
                    matches!(error, IndexError::DiskFull { .. }) && error.is_out_of_resources(),
                    "a full disk must be out of resources: {error:?}"
                );
                failures += 1;
            }
        }
        next += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(failures > 0, "the full disk failed no store");

    // Space returns: stores go through again, without a reopen of the index.
    std::fs::remove_file(&filler).expect("remove filler");
    let started = Instant::now();
    let first_after = next;
    loop {
        match writer.execute(stores(next, 20)) {
            Ok(results) => {
                assert!(results.iter().all(Result::is_ok));
                acknowledged.push(next);
                next += 1;
                if next >= first_after + 5 {
                    break;
                }
            }
            Err(error) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "stores still fail 10 s after space returned: {error:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The writer has reopened the tree (a process without it reports it
    // empty).
    let started = Instant::now();
    while sop_index_bytes(&index) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the SOP index was not reopened 10 s after space returned"
        );
        // An empty transaction's worth of waiting: the writer retries when
        // idle, at least once a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    let results = writer
        .execute(stores(next, 20))
        .expect("store after the reopen");
    assert!(results.iter().all(Result::is_ok));
    acknowledged.push(next);
    // The SOP index names every instance acknowledged, none twice.
    let check = |index: &Index| {
        let read = index.read().expect("read");
        for &batch in &acknowledged {
            for i in 0..20 {
                assert!(
                    read.instance_by_sop(&sop(batch, i))
                        .expect("by sop")
                        .is_some(),
                    "{} lost",
                    sop(batch, i)
                );
            }
        }
        drop(read);
        crate::common::assert_consistent(index);
    };
    check(&index);
    let report = crate::common::assert_consistent(&index);
    assert_eq!(report.instances, acknowledged.len() as u64 * 20);
    drop(writer);
    drop(index);

    // And after a reopen.
    let index = Index::open(&index_dir, options).expect("reopen");
    check(&index);
}

/// `count` stores of batch `batch` as consecutive 8 KiB records of
/// `segment`, from record `first` on.
fn record_stores(batch: u32, count: u32, segment: u64, first: u64) -> Vec<WriteOp> {
    (0..count)
        .map(|i| {
            let WriteOp::Store(mut request) = stores(batch, i + 1).pop().expect("a store") else {
                unreachable!("stores makes stores")
            };
            request.location = sluice_index::Location::Record(sluice_index::RecordPlace {
                segment,
                offset: (first + u64::from(i)) * 8192,
                length: 8192,
            });
            WriteOp::Store(request)
        })
        .collect()
}

/// An index on a 24 MiB tmpfs whose every commit's new pages extend its
/// file (no zeros written ahead), so a full disk fails the commit.
fn growing_index_on_tmpfs() -> (Tmpfs, std::path::PathBuf, IndexOptions, Index) {
    let fs = Tmpfs::mount(24);
    let index_dir = fs.0.path().join("index");
    let options = IndexOptions {
        map_size_bytes: 16 << 20,
        zero_ahead_bytes: 0,
        ..crate::common::options()
    };
    let index = Index::open(&index_dir, options).expect("open");
    (fs, index_dir, options, index)
}

/// Submits `ops` answered when applied; waits for the answer.
fn execute_early(index: &Index, ops: Vec<WriteOp>) -> sluice_index::BatchResult {
    let (batch, answer) = sluice_index::Batch::with_channel(ops);
    index
        .writer()
        .submit(batch.answered_when_applied())
        .expect("submit");
    answer.recv().expect("an answer")
}

/// A batch answered when applied (before its commit) whose commit then
/// fails on a full disk: the writer runs it again, and when no re-run
/// commits it halts: every later batch is refused (`WriterHalted`, A700
/// for the engine), so no later transaction moves the segment's indexed
/// end past the answered records (which start-up recovery of the engine
/// would index again). Once space returns, the stalled transaction
/// commits when tried again and the writer resumes without a restart.
#[test]
fn a_failed_commit_after_an_early_answer_halts_the_writer_until_it_commits() {
    let (fs, index_dir, options, index) = growing_index_on_tmpfs();
    const SEGMENT: u64 = 5;
    let mut next_record = 0;
    // Answered early and committed before the disk fills.
    for batch in 0..5 {
        let results = execute_early(&index, record_stores(batch, 20, SEGMENT, next_record))
            .expect("store before the fill");
        assert!(results.iter().all(Result::is_ok));
        next_record += 20;
    }
    // The first visible read after an early answer sees it.
    assert!(index
        .read()
        .expect("read")
        .instance_by_sop("1.2.840.99998.4.1.19")
        .expect("by sop")
        .is_some());
    let before = index
        .read()
        .expect("read")
        .segment(SEGMENT)
        .expect("segment")
        .expect("known");
    assert_eq!(before.indexed_end, next_record * 8192);

    let filler = fs.0.path().join("filler");
    fill(&filler);
    // Batches until one is answered (early) and then the writer halts: a
    // batch may also fail before its commit (the SOP index's journal
    // refusing a write first), which answers an error and halts nothing.
    let mut answered_then_halted = None;
    for batch in 100..400 {
        assert!(!index.writer_halted());
        match execute_early(&index, record_stores(batch, 50, SEGMENT, next_record)) {
            Err(error) => {
                assert!(error.is_out_of_resources(), "{error:?}");
                continue;
            }
            Ok(results) => assert!(results.iter().all(Result::is_ok)),
        }
        let answered = next_record;
        next_record += 50;
        // Whether that batch committed: a probe answered after the flush.
        match index
            .writer()
            .execute(record_stores(batch + 1000, 1, SEGMENT, next_record))
        {
            Ok(_) => next_record += 1,
            Err(IndexError::WriterHalted { .. }) => {
                answered_then_halted = Some((batch, answered));
                break;
            }
            // The disk full for the probe: the batch before it committed.
            Err(error) if error.is_out_of_resources() => {}
            Err(error) => panic!("the probe failed otherwise: {error:?}"),
        }
    }
    let (batch, answered) =
        answered_then_halted.expect("no early-answered commit failed on the full disk");
    assert!(index.writer_halted());
    let state = |index: &Index| {
        index
            .read()
            .expect("read")
            .segment(SEGMENT)
            .expect("segment")
            .expect("known")
    };
    let answered_present = |index: &Index| {
        index
            .read()
            .expect("read")
            .instance_by_sop(&format!("1.2.840.99998.{batch}.1.1"))
            .expect("by sop")
            .is_some()
    };
    // Halted while the disk stays full: nothing more is written, and the
    // answered records stay past the indexed end (recovery's to find).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let later = index
        .writer()
        .execute(record_stores(batch + 2000, 1, SEGMENT, next_record + 10));
    assert!(
        matches!(later, Err(IndexError::WriterHalted { .. })),
        "{later:?}"
    );
    assert!(state(&index).indexed_end <= answered * 8192);
    assert!(!answered_present(&index));
    // Space returns: the stalled transaction commits when tried again (at
    // most a second later, idle or not), deciding what was answered, and
    // the writer takes batches again.
    std::fs::remove_file(&filler).expect("remove filler");
    let started = std::time::Instant::now();
    while index.writer_halted() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the stalled commit was not run again 10 s after space returned"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(answered_present(&index));
    assert_eq!(state(&index).indexed_end, (answered + 50) * 8192);
    let results = execute_early(
        &index,
        record_stores(batch + 3000, 1, SEGMENT, answered + 50),
    )
    .expect("a store after the writer resumed");
    assert!(results.iter().all(Result::is_ok));
    crate::common::assert_consistent(&index);
    drop(index);
    let index = Index::open(&index_dir, options).expect("reopen");
    assert!(answered_present(&index));
    assert_eq!(state(&index).indexed_end, (answered + 51) * 8192);
    crate::common::assert_consistent(&index);
}

/// A batch answered early whose commit meets a disk full a moment: space
/// returns at once, so the commit or one of its re-runs goes through: the
/// writer does not halt, and the entries answered are there.
#[test]
fn an_early_answered_commit_that_fails_once_is_run_again() {
    let (fs, _, _, index) = growing_index_on_tmpfs();
    let filler = fs.0.path().join("filler");
    fill(&filler);
    let mut answered = Vec::new();
    for batch in 0..40 {
        let result = execute_early(&index, record_stores(batch, 50, 9, u64::from(batch) * 50));
        if std::fs::metadata(&filler).is_ok() {
            std::fs::remove_file(&filler).expect("remove filler");
        }
        if let Ok(results) = result {
            assert!(results.iter().all(Result::is_ok));
            answered.push(batch);
            // A reader waits until the commit (or its re-run) settled.
            drop(index.read().expect("read"));
            assert!(
                !index.writer_halted(),
                "batch {batch}'s commit not run again"
            );
            if answered.len() >= 3 {
                break;
            }
        }
        // The disk full again for the next.
        fill(&filler);
    }
    let _ = std::fs::remove_file(&filler);
    assert!(!answered.is_empty());
    assert!(!index.writer_halted());
    let read = index.read().expect("read");
    for batch in answered {
        for i in 0..50 {
            assert!(
                read.instance_by_sop(&format!("1.2.840.99998.{batch}.1.{i}"))
                    .expect("by sop")
                    .is_some(),
                "batch {batch} store {i} answered and lost"
            );
        }
    }
    drop(read);
    crate::common::assert_consistent(&index);
}
