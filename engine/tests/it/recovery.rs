//! Start-up recovery on stores built directly through `sluice-index` and the
//! layout: temporary files removed, unindexed files moved to `orphans/`,
//! indexed files left alone, missing and wrong-size files reported.

use sluice_engine::recovery::{recover, RecoveryReport};

use crate::operator::StoreFixture;

#[test]
fn recovery_cleans_debris_and_reports_damage() {
    let mut fixture = StoreFixture::new();
    let kept = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let missing = fixture.add("1.1", "1.1.1", "1.1.1.2", "Doe");
    let truncated = fixture.add("1.1", "1.1.1", "1.1.1.3", "Doe");
    let (quarantine_id, quarantined) = fixture.add_duplicate(&kept, "OTHER");
    let layout = fixture.layout.clone();

    // Debris of a crash: files being received on two cores.
    for core in [0, 1] {
        let path = layout.tmp_path(core, fixture.next_file_id());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"half a data set").unwrap();
    }
    // A complete file whose index transaction never committed, in each area,
    // and a file with a name the layout never produces.
    let unindexed_object_id = fixture.next_file_id();
    let unindexed_object = layout.object_path(unindexed_object_id);
    std::fs::create_dir_all(unindexed_object.parent().unwrap()).unwrap();
    std::fs::write(&unindexed_object, b"never acknowledged").unwrap();
    let unindexed_quarantine_id = fixture.next_file_id();
    let unindexed_quarantine = layout.quarantine_path(unindexed_quarantine_id);
    std::fs::create_dir_all(unindexed_quarantine.parent().unwrap()).unwrap();
    std::fs::write(&unindexed_quarantine, b"never acknowledged either").unwrap();
    let stranger = layout.objects_dir().join("notes.txt");
    std::fs::write(&stranger, b"not ours").unwrap();
    // Damage: one indexed file gone, one cut short.
    std::fs::remove_file(&missing.path).unwrap();
    std::fs::write(&truncated.path, &truncated.bytes[..200]).unwrap();

    let report = recover(&layout, fixture.index()).unwrap();

    assert_eq!(report.temp_files_removed, 2);
    assert!(
        layout.tmp_dir_of_core(0).is_dir(),
        "the core directories stay"
    );
    assert_eq!(
        std::fs::read_dir(layout.tmp_dir_of_core(0))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(report.orphans_moved, 3);
    assert!(!unindexed_object.exists());
    assert!(!unindexed_quarantine.exists());
    assert!(!stranger.exists());
    assert_eq!(
        std::fs::read(layout.orphan_path(unindexed_object_id)).unwrap(),
        b"never acknowledged"
    );
    assert_eq!(
        std::fs::read(layout.orphan_path(unindexed_quarantine_id)).unwrap(),
        b"never acknowledged either"
    );
    assert_eq!(
        std::fs::read(layout.orphans_dir().join("notes.txt")).unwrap(),
        b"not ours"
    );

    // Indexed files are untouched, in both areas.
    assert_eq!(std::fs::read(&kept.path).unwrap(), kept.bytes);
    assert_eq!(std::fs::read(&quarantined.path).unwrap(), quarantined.bytes);
    assert_eq!(
        std::fs::read(&truncated.path).unwrap(),
        &truncated.bytes[..200],
        "a damaged indexed file is reported, not moved"
    );

    assert_eq!(report.entries_checked, 4);
    assert_eq!(report.missing_files_total, 1);
    assert_eq!(report.missing_files.len(), 1);
    let gone = &report.missing_files[0];
    assert_eq!(gone.triplet, missing.instance.triplet);
    assert_eq!(gone.path, missing.path);
    assert_eq!(gone.actual_bytes, None);
    assert_eq!(gone.quarantine_id, None);
    assert_eq!(report.wrong_size_total, 1);
    let short = &report.wrong_size[0];
    assert_eq!(short.triplet, truncated.instance.triplet);
    assert_eq!(short.expected_bytes, truncated.bytes.len() as u64);
    assert_eq!(short.actual_bytes, Some(200));
    assert!(!report.index_is_whole());

    let line = report.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with(
            "recovery: 2 temporary files removed, 3 unindexed files moved to orphans/, \
             4 index entries checked: 1 file missing, 1 of the wrong size ("
        ),
        "{line}"
    );

    // A second run finds nothing new to clean, and the same damage.
    let again = recover(&layout, fixture.index()).unwrap();
    assert_eq!(again.temp_files_removed, 0);
    assert_eq!(again.orphans_moved, 0);
    assert_eq!(again.missing_files_total, 1);
    assert_eq!(again.wrong_size_total, 1);
    // The quarantined duplicate is still an entry with its file.
    let txn = fixture.index().read().unwrap();
    assert!(txn.quarantine_entry(quarantine_id).unwrap().is_some());
}

#[test]
fn recovery_of_a_clean_store_changes_nothing() {
    let mut fixture = StoreFixture::new();
    let stored = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let (_, quarantined) = fixture.add_duplicate(&stored, "OTHER");
    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(
        report,
        RecoveryReport {
            entries_checked: 2,
            elapsed: report.elapsed,
            ..RecoveryReport::default()
        }
    );
    assert!(report.index_is_whole());
    assert!(report
        .to_string()
        .starts_with("recovery: 0 temporary files removed, 0 unindexed files moved to orphans/, 2 index entries checked: 0 files missing, 0 of the wrong size"));
    assert_eq!(std::fs::read(&stored.path).unwrap(), stored.bytes);
    assert_eq!(std::fs::read(&quarantined.path).unwrap(), quarantined.bytes);
}

#[test]
fn recovery_never_moves_a_referenced_file_found_in_the_other_area() {
    // An interrupted `quarantine release` links the quarantined file into
    // objects/ before the index commits: that name holds a referenced id.
    let mut fixture = StoreFixture::new();
    let stored = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let (_, quarantined) = fixture.add_duplicate(&stored, "OTHER");
    let layout = fixture.layout.clone();
    let linked = layout.object_path(quarantined.file_id);
    std::fs::create_dir_all(linked.parent().unwrap()).unwrap();
    std::fs::hard_link(&quarantined.path, &linked).unwrap();
    let report = recover(&layout, fixture.index()).unwrap();
    assert_eq!(report.orphans_moved, 0);
    assert!(linked.exists());
    assert!(quarantined.path.exists());
    assert!(report.index_is_whole());
}

#[test]
fn recovery_moves_a_file_left_in_the_wrong_area_into_place() {
    // The ingest path writes into the area it expects and moves the file
    // after the index decided otherwise; a crash in between leaves a
    // referenced file in the other area.
    let mut fixture = StoreFixture::new();
    let stored = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let (_, quarantined) = fixture.add_duplicate(&stored, "OTHER");
    let other = fixture.add("1.1", "1.1.1", "1.1.1.2", "Doe");
    let layout = fixture.layout.clone();
    let misplaced = layout.object_path(quarantined.file_id);
    std::fs::create_dir_all(misplaced.parent().unwrap()).unwrap();
    std::fs::rename(&quarantined.path, &misplaced).unwrap();
    // A file with the right id in the wrong area, but not the recorded size:
    // left alone and reported.
    let damaged = layout.quarantine_path(other.file_id);
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    std::fs::rename(&other.path, &damaged).unwrap();
    std::fs::write(&damaged, b"short").unwrap();

    let report = recover(&layout, fixture.index()).unwrap();
    assert_eq!(
        report.orphans_moved, 0,
        "referenced files are never orphans"
    );
    assert_eq!(report.misplaced_moved, 1);
    assert_eq!(std::fs::read(&quarantined.path).unwrap(), quarantined.bytes);
    assert!(!misplaced.exists());
    assert_eq!(report.missing_files_total, 1);
    assert_eq!(report.missing_files[0].triplet, other.instance.triplet);
    assert_eq!(
        report.missing_files[0].other_area_path.as_deref(),
        Some(damaged.as_path())
    );
    assert_eq!(std::fs::read(&damaged).unwrap(), b"short");
    assert!(
        report
            .to_string()
            .contains("1 file missing, 0 of the wrong size, 1 misplaced file moved into place ("),
        "{report}"
    );
}

#[test]
fn recovery_moves_an_indexed_file_outside_its_fanout_directory_into_place() {
    // A store written with another fan-out (the layout before 2026-11-27
    // used the id's last four hex digits), or a file an operator moved:
    // the name is a referenced file id, so it goes to its place, never to
    // orphans/. An unreferenced id in a wrong directory is still an orphan.
    let mut fixture = StoreFixture::new();
    let stored = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let (_, quarantined) = fixture.add_duplicate(&stored, "OTHER");
    let layout = fixture.layout.clone();
    let mut moved = Vec::new();
    for (area_dir, entry) in [
        (layout.objects_dir(), &stored),
        (layout.quarantine_dir(), &quarantined),
    ] {
        let name = entry.path.file_name().unwrap().to_owned();
        let current_dir = entry.path.parent().unwrap();
        let elsewhere = ["zz", "00", "ff"]
            .iter()
            .map(|first| area_dir.join(first).join("zz"))
            .find(|dir| dir != current_dir)
            .unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::rename(&entry.path, elsewhere.join(&name)).unwrap();
        moved.push(elsewhere.join(&name));
    }
    let unreferenced_id = fixture.next_file_id();
    let unreferenced = layout
        .objects_dir()
        .join("zz/zz")
        .join(sluice_engine::store::layout::file_name(unreferenced_id));
    std::fs::write(&unreferenced, b"never acknowledged").unwrap();

    let report = recover(&layout, fixture.index()).unwrap();

    assert_eq!(report.misplaced_moved, 2, "{report}");
    assert_eq!(report.orphans_moved, 1, "{report}");
    assert!(report.index_is_whole(), "{report}");
    assert_eq!(std::fs::read(&stored.path).unwrap(), stored.bytes);
    assert_eq!(std::fs::read(&quarantined.path).unwrap(), quarantined.bytes);
    for path in moved {
        assert!(!path.exists(), "{}", path.display());
    }
    assert_eq!(
        std::fs::read(layout.orphan_path(unreferenced_id)).unwrap(),
        b"never acknowledged"
    );
}

/// Entries committed in doubt (the ingest path commits while the file's
/// syncs run): a complete file keeps its entry, moved into place when its
/// rename was lost (still in `tmp/<core>/`); a cut-short or missing file
/// loses its entry, and the partial file goes to `orphans/`. The marks are
/// cleared, the index stays consistent, and a second run changes nothing.
#[test]
fn recovery_settles_entries_committed_in_doubt() {
    let mut fixture = StoreFixture::new();
    let layout = fixture.layout.clone();
    let in_place = fixture.add_in_doubt("2.1", "2.1.1", "2.1.1.1");
    let in_tmp = fixture.add_in_doubt("2.1", "2.1.1", "2.1.1.2");
    let partial = fixture.add_in_doubt("2.1", "2.1.1", "2.1.1.3");
    let missing = fixture.add_in_doubt("2.1", "2.1.1", "2.1.1.4");
    // The ids' core field is 0: tmp/0/ is where their temporary files were.
    let tmp_path = layout.tmp_path(0, in_tmp.file_id);
    std::fs::create_dir_all(tmp_path.parent().unwrap()).unwrap();
    std::fs::rename(&in_tmp.path, &tmp_path).unwrap();
    std::fs::write(&partial.path, &partial.bytes[..partial.bytes.len() - 10]).unwrap();
    std::fs::remove_file(&missing.path).unwrap();

    let report = recover(&layout, fixture.index()).unwrap();

    assert_eq!(report.in_doubt_kept, 2, "{report:?}");
    assert_eq!(report.in_doubt_removed, 2, "{report:?}");
    assert!(report.index_is_whole(), "{report:?}");
    assert_eq!(report.temp_files_removed, 0);
    assert_eq!(report.orphans_moved, 0);
    assert_eq!(std::fs::read(&in_place.path).unwrap(), in_place.bytes);
    assert_eq!(std::fs::read(&in_tmp.path).unwrap(), in_tmp.bytes);
    assert!(!tmp_path.exists());
    assert!(!partial.path.exists());
    assert_eq!(
        std::fs::read(layout.orphan_path(partial.file_id)).unwrap(),
        &partial.bytes[..partial.bytes.len() - 10]
    );
    {
        let read = fixture.index().read().unwrap();
        for (written, kept) in [
            (&in_place, true),
            (&in_tmp, true),
            (&partial, false),
            (&missing, false),
        ] {
            let triplet = &written.instance.triplet;
            let found = read
                .contains(
                    &triplet.study_instance_uid,
                    &triplet.series_instance_uid,
                    &triplet.sop_instance_uid,
                )
                .unwrap();
            assert_eq!(found, kept, "{}", triplet.sop_instance_uid);
        }
        assert!(read.in_doubt().unwrap().is_empty());
        assert!(read.check_consistency(10).unwrap().is_consistent());
    }
    let again = recover(&layout, fixture.index()).unwrap();
    assert_eq!(
        (
            again.in_doubt_kept,
            again.in_doubt_removed,
            again.orphans_moved
        ),
        (0, 0, 0)
    );
    assert!(again.index_is_whole());
    assert!(
        report
            .to_string()
            .contains("2 in-doubt entries verified and kept, 2 incomplete and removed"),
        "{report}"
    );
}

/// The files layout, as the clean-stop tests serve it.
const FILES_LAYOUT: [&str; 2] = ["--storage-layout", "files"];

/// A data directory (with the temporary directory holding it) of the files
/// layout whose server stored three instances and stopped cleanly (SIGTERM:
/// the clean-stop record written), with a stray file in `objects/` that only
/// the full check sees; its stored files by SOP Instance UID, and the stray
/// file's path.
fn cleanly_stopped_with_a_stray_file() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::collections::BTreeMap<String, std::path::PathBuf>,
    std::path::PathBuf,
) {
    use crate::ingest::generated_files;
    use crate::segment_ingest::{data_dir, serve_on, storescu, terminate};

    let (shared, data) = data_dir();
    let files_dir = tempfile::tempdir().unwrap();
    let files = generated_files(files_dir.path(), 3);
    let served = serve_on(&data, &FILES_LAYOUT);
    storescu(served.port, &files);
    let stored = served.files("objects");
    assert_eq!(stored.len(), 3);
    let log = terminate(served);
    assert!(log.contains("clean stop recorded"), "{log}");
    assert!(data.join("clean-stop").is_file());
    let stray = data.join("objects").join("stray.dcm");
    std::fs::write(&stray, b"not ours").unwrap();
    (shared, data, stored, stray)
}

/// A clean stop (SIGTERM: drained, settled) is recorded, and the start
/// after it skips the walk of the archive (a stray file in `objects/` is
/// not even seen); a SIGKILL leaves no record, and the start after it
/// checks the whole archive: the stray file goes to `orphans/` and a
/// sealed file whose entry is gone (as a lost commit leaves it) is indexed
/// again. The record also survives the index being opened and recovered
/// (the next clean stop's start skips the walk again).
#[test]
fn a_clean_restart_skips_the_archive_walk_and_a_killed_one_does_not() {
    use crate::segment_ingest::{serve_on, terminate};
    const SKIPPED: &str = "recovery (clean stop recorded: archive walk and entry check skipped): \
                           0 temporary files removed, 0 unindexed files moved to orphans/, \
                           0 index entries checked";

    let (_shared, data, stored, stray) = cleanly_stopped_with_a_stray_file();
    let layout = FILES_LAYOUT;
    let served = serve_on(&data, &layout);
    let log = served.log();
    assert!(log.contains(SKIPPED), "{log}");
    assert!(stray.is_file(), "the walk was skipped");
    assert!(
        !data.join("clean-stop").exists(),
        "the record is consumed at start"
    );
    served.stop(); // SIGKILL: no record

    // The commit of one stored instance lost, its sealed file kept.
    let (lost_sop, lost_path) = stored.iter().next().unwrap();
    {
        let config = sluice_engine::config::Config::from_args([
            "sluice",
            "--data-dir",
            data.to_str().unwrap(),
            "--storage-layout",
            "files",
        ])
        .unwrap();
        let store = sluice_engine::store::Store::open(config).unwrap();
        let entry = store.instance_by_sop(lost_sop).unwrap().unwrap();
        store
            .index()
            .writer()
            .execute(vec![sluice_index::WriteOp::Remove(entry.triplet)])
            .unwrap();
        assert!(store.instance_by_sop(lost_sop).unwrap().is_none());
    }
    assert!(lost_path.is_file());
    let served = serve_on(&data, &layout);
    let log = served.log();
    assert!(
        log.contains("the last stop was not clean (no clean-stop record)"),
        "{log}"
    );
    assert!(
        log.contains(
            "recovery: 0 temporary files removed, 1 unindexed file moved to orphans/, \
             3 index entries checked: 0 files missing, 0 of the wrong size, \
             1 sealed file without an entry indexed again"
        ),
        "{log}"
    );
    assert!(!stray.exists());
    assert_eq!(
        std::fs::read(data.join("orphans").join("stray.dcm")).unwrap(),
        b"not ours"
    );
    assert_eq!(served.files("objects"), stored, "indexed again in place");
    terminate(served);

    let served = serve_on(&data, &layout);
    let log = served.log();
    assert!(log.contains(SKIPPED), "{log}");
    served.stop();
}

/// `sluice serve --full-recovery` checks the whole archive even with a
/// valid clean-stop record, and says why: the stray file only the walk
/// sees goes to `orphans/`, every entry's file is checked. The record is
/// consumed all the same, and the flag holds for that start only.
#[test]
fn full_recovery_checks_the_whole_archive_after_a_clean_stop() {
    use crate::segment_ingest::{serve_on, terminate};

    let (_shared, data, stored, stray) = cleanly_stopped_with_a_stray_file();
    let mut args = FILES_LAYOUT.to_vec();
    args.push("--full-recovery");
    let served = serve_on(&data, &args);
    let log = served.log();
    assert!(
        log.contains("reason=\"asked for at this start (sluice serve --full-recovery)\""),
        "{log}"
    );
    assert!(
        log.contains(
            "recovery: 0 temporary files removed, 1 unindexed file moved to orphans/, \
             3 index entries checked: 0 files missing, 0 of the wrong size ("
        ),
        "{log}"
    );
    assert!(!stray.exists());
    assert_eq!(
        std::fs::read(data.join("orphans").join("stray.dcm")).unwrap(),
        b"not ours"
    );
    assert!(!data.join("clean-stop").exists(), "consumed at start");
    assert_eq!(served.files("objects"), stored);
    terminate(served);

    // Without the flag, the next clean restart skips the walk again.
    let served = serve_on(&data, &FILES_LAYOUT);
    let log = served.log();
    assert!(
        log.contains("recovery (clean stop recorded: archive walk and entry check skipped)"),
        "{log}"
    );
    served.stop();
}
