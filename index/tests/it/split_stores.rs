//! The two stores of the index on disk: LMDB (`data.mdb`) and the SOP index
//! (the LSM tree in `sop-index/`) are committed one after the other, never
//! together, so a crash can leave either one ahead of the other
//! (docs/design/index-at-scale.md, "Crash cases"). These tests make each
//! case with real files — an earlier, durable copy of one store put back
//! beside the later other one, which is exactly what a power loss leaves
//! when one store's last writes did not reach the disk — and check that the
//! index opens whole: every instance found by its SOP Instance UID, none
//! found that LMDB does not hold, duplicates and conflicts still decided
//! right, and the consistency check clean.

use std::path::Path;

use sluice_index::{ConflictPolicy, Index, StoreOutcome, StoreRequest, WriteOp, WriteOutcome};

use crate::common::{assert_consistent, clear_table, instance, open, store};

const SOP_INDEX_DIR: &str = "sop-index";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Puts `saved` back in place of `dir` (both directories).
fn restore_dir(saved: &Path, dir: &Path) {
    std::fs::remove_dir_all(dir).expect("remove");
    copy_dir(saved, dir);
}

fn stored(results: &[sluice_index::ItemResult]) -> bool {
    results
        .iter()
        .all(|result| *result == Ok(WriteOutcome::Store(StoreOutcome::Stored)))
}

/// Batch A: two series of three instances each.
fn batch_a() -> Vec<WriteOp> {
    (1..=3)
        .flat_map(|n| {
            [
                store("5.1", "5.1.1", &format!("5.1.1.{n}"), 100 + n, 1),
                store("5.2", "5.2.1", &format!("5.2.1.{n}"), 200 + n, 1),
            ]
        })
        .collect()
}

/// Batch B: new instances in a new series and in an existing one, and the
/// SOP Instance UID `5.1.1.1` moved to another study (a conflict replaced).
fn batch_b() -> Vec<WriteOp> {
    let mut ops: Vec<WriteOp> = (1..=3)
        .map(|n| store("5.3", "5.3.1", &format!("5.3.1.{n}"), 300 + n, 1))
        .collect();
    ops.push(store("5.2", "5.2.1", "5.2.1.4", 204, 1));
    let mut moved = StoreRequest::new(instance("5.9", "5.9.1", "5.1.1.1", 901, 7));
    moved.conflict_policy = ConflictPolicy::Replace;
    ops.push(WriteOp::Store(moved));
    ops
}

fn triplet_of(index: &Index, sop: &str) -> Option<(String, String)> {
    index
        .read()
        .expect("read")
        .triplet_of_sop(sop)
        .expect("by sop")
        .map(|triplet| (triplet.study_instance_uid, triplet.series_instance_uid))
}

/// An index that stored batch A, then batch B, whose SOP index was then put
/// back as it was before batch B (LMDB keeps batch B's commit, with its
/// `sop_pending` group).
fn sop_index_without_batch_b() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    assert!(stored(&index.writer().execute(batch_a()).expect("batch A")));
    index.close();
    copy_dir(&dir.path().join(SOP_INDEX_DIR), saved.path());

    let index = open(dir.path());
    let results = index.writer().execute(batch_b()).expect("batch B");
    assert!(stored(&results[..4]));
    assert!(matches!(
        results[4],
        Ok(WriteOutcome::Store(
            StoreOutcome::SopInstanceConflict { .. }
        ))
    ));
    index.close();
    restore_dir(saved.path(), &dir.path().join(SOP_INDEX_DIR));
    dir
}

/// The SOP index lost its last group (its journal's tail did not reach the
/// disk) while LMDB kept the commit: opening adds the group again from
/// `sop_pending`, so every instance is found by its SOP Instance UID and a
/// conflict with one of them is still seen.
#[test]
fn sop_index_behind_lmdb_is_caught_up_from_sop_pending() {
    let dir = sop_index_without_batch_b();
    let index = open(dir.path());
    assert_eq!(assert_consistent(&index).instances, 10);
    for sop in ["5.3.1.1", "5.3.1.2", "5.3.1.3"] {
        assert_eq!(
            triplet_of(&index, sop),
            Some(("5.3".into(), "5.3.1".into()))
        );
    }
    assert_eq!(
        triplet_of(&index, "5.2.1.4"),
        Some(("5.2".into(), "5.2.1".into()))
    );
    assert_eq!(
        triplet_of(&index, "5.1.1.1"),
        Some(("5.9".into(), "5.9.1".into()))
    );
    // The writer sees batch B's instances too: another study sending one
    // of them is a conflict, not a second copy.
    let results = index
        .writer()
        .execute(vec![store("5.8", "5.8.1", "5.3.1.2", 802, 1)])
        .expect("batch");
    assert!(
        matches!(
            &results[0],
            Ok(WriteOutcome::Store(StoreOutcome::SopInstanceConflict { stored, .. }))
                if stored.study_instance_uid == "5.3"
        ),
        "{results:?}"
    );
    assert_consistent(&index);
}

/// The control: without `sop_pending` the same files open with batch B's
/// instances missing from the SOP index, and the consistency check says so
/// (so the test above fails if the catch-up does not happen).
#[test]
fn without_sop_pending_the_lost_group_is_caught_by_the_check() {
    let dir = sop_index_without_batch_b();
    clear_table(dir.path(), "sop_pending");

    let index = open(dir.path());
    let report = index
        .read()
        .expect("read")
        .check_consistency(20)
        .expect("check");
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.contains("5.3.1.1") && problem.contains("sop_index")),
        "{:?}",
        report.problems
    );
    assert_eq!(triplet_of(&index, "5.3.1.1"), None);
}

/// LMDB lost its last commit (written, not yet flushed: the meta page of a
/// commit answered before its flush) while the SOP index kept that
/// group's candidates: they name instances LMDB does not hold, which every
/// lookup verifies and ignores; the lost instances, stored again (as the
/// engine's recovery does from the files' seals), are stored, not taken
/// for duplicates or conflicts of themselves; and group numbers go on above
/// the lost one, so a later loss of the SOP index's tail is still caught up.
#[test]
fn sop_index_ahead_of_lmdb_names_nothing_that_is_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    assert!(stored(&index.writer().execute(batch_a()).expect("batch A")));
    index.close();
    std::fs::copy(dir.path().join("data.mdb"), saved.path().join("data.mdb")).expect("save");

    let index = open(dir.path());
    index.writer().execute(batch_b()).expect("batch B");
    index.close();
    // LMDB as it was before batch B; the SOP index keeps batch B.
    std::fs::copy(saved.path().join("data.mdb"), dir.path().join("data.mdb")).expect("restore");

    // The SOP index as it is now, ahead (kept to lose the next group below).
    copy_dir(&dir.path().join(SOP_INDEX_DIR), &saved.path().join("sop"));
    let index = open(dir.path());
    assert_eq!(assert_consistent(&index).instances, 6);
    for sop in ["5.3.1.1", "5.2.1.4"] {
        assert_eq!(triplet_of(&index, sop), None, "{sop}");
    }
    assert_eq!(
        triplet_of(&index, "5.1.1.1"),
        Some(("5.1".into(), "5.1.1".into())),
        "the move was lost with its commit"
    );
    assert!(!index
        .read()
        .expect("read")
        .contains("5.3", "5.3.1", "5.3.1.1")
        .expect("contains"));

    // Stored again (after another new series, so they get other series
    // ids than the lost commit gave them): new instances, nothing else.
    let mut again = vec![store("5.5", "5.5.1", "5.5.1.1", 501, 1)];
    again.extend(batch_b().into_iter().take(4));
    assert!(stored(&index.writer().execute(again).expect("again")));
    assert_eq!(
        triplet_of(&index, "5.3.1.1"),
        Some(("5.3".into(), "5.3.1".into()))
    );
    assert_eq!(assert_consistent(&index).instances, 11);
    index.close();

    // Now the SOP index loses that group in turn (back to the copy taken
    // while it was ahead): the group took a number above the lost one, so
    // the catch-up adds it again instead of taking it for applied.
    restore_dir(&saved.path().join("sop"), &dir.path().join(SOP_INDEX_DIR));
    let index = open(dir.path());
    assert_eq!(
        triplet_of(&index, "5.3.1.1"),
        Some(("5.3".into(), "5.3.1".into()))
    );
    assert_eq!(assert_consistent(&index).instances, 11);
}

/// A missing SOP index, or one that belongs to another index, is rebuilt
/// from LMDB at open.
#[test]
fn a_missing_or_foreign_sop_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    assert!(stored(&index.writer().execute(batch_a()).expect("batch A")));
    index.close();
    let index = open(other.path());
    assert!(stored(
        &index
            .writer()
            .execute(vec![store("6.1", "6.1.1", "6.1.1.1", 1, 1)])
            .expect("other")
    ));
    index.close();

    std::fs::remove_dir_all(dir.path().join(SOP_INDEX_DIR)).expect("remove");
    let index = open(dir.path());
    assert_eq!(assert_consistent(&index).instances, 6);
    assert_eq!(
        triplet_of(&index, "5.2.1.3"),
        Some(("5.2".into(), "5.2.1".into()))
    );
    index.close();

    restore_dir(
        &other.path().join(SOP_INDEX_DIR),
        &dir.path().join(SOP_INDEX_DIR),
    );
    let index = open(dir.path());
    assert_eq!(assert_consistent(&index).instances, 6);
    assert_eq!(triplet_of(&index, "6.1.1.1"), None);
    assert_eq!(
        triplet_of(&index, "5.1.1.2"),
        Some(("5.1".into(), "5.1.1".into()))
    );
}
