//! The upgrade path (issue 17): a store written by `sluice serve` on the
//! files layout (the default before segments), served again with no layout
//! set (the default, segments: its files stay, new instances become
//! records beside them), then converted by `sluice migrate --to segments`.

use std::path::PathBuf;

use sluice_index::Location;
use sluice_tests::part10_dataset;

use crate::ingest::generated_files;
use crate::migrate::{exports, files_store, locations, migrate, verify_clean};
use crate::operator::{row, sluice_ok};
use crate::query::{findscu, getscu_patient, received};
use crate::segment_ingest::{serve_on, sop_of, storescu, terminate};
use crate::serve::Served;

/// What the server holds is what was sent, each instance byte for byte
/// (its data set), found by C-FIND, retrieved by C-GET and exported.
fn assert_served(served: &Served, sent: &[PathBuf]) {
    // C-FIND: every sent instance's study (each its own) answered.
    let (answers, log) = findscu(
        served.port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=PEER1",
            "-k",
            "StudyInstanceUID",
        ],
    );
    assert_eq!(answers.len(), sent.len(), "{log}");
    for file in sent {
        let bytes = std::fs::read(file).unwrap();
        let study = dataset_study(&bytes);
        assert!(
            answers.iter().any(|answer| answer.contains(&study)),
            "{study} not found: {answers:?}"
        );
    }
    // C-GET and export: byte for byte.
    let got = tempfile::tempdir().unwrap();
    assert_eq!(getscu_patient(served.port, got.path()), sent.len());
    let retrieved = received(got.path());
    let exported = served.stored();
    assert_eq!(retrieved.len(), sent.len());
    assert_eq!(exported.len(), sent.len());
    for file in sent {
        let sop = sop_of(file);
        let bytes = std::fs::read(file).unwrap();
        assert!(
            part10_dataset(&retrieved[&sop]) == part10_dataset(&bytes),
            "C-GET {sop}"
        );
        assert!(
            part10_dataset(&exported[&sop]) == part10_dataset(&bytes),
            "export {sop}"
        );
    }
}

/// The Study Instance UID of a generated file (its data set's, read by
/// pydicom's writer order: the tag's value after `(0020,000D)`).
fn dataset_study(bytes: &[u8]) -> String {
    let tag = [0x20, 0x00, 0x0D, 0x00];
    let at = bytes
        .windows(4)
        .position(|window| window == tag)
        .expect("a Study Instance UID");
    // Explicit VR Little Endian: tag, "UI", 2-byte length, value.
    let length = u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
    String::from_utf8_lossy(&bytes[at + 8..at + 8 + length])
        .trim_end_matches('\0')
        .to_owned()
}

#[test]
fn a_files_store_served_on_the_default_layout_then_migrated_to_segments() {
    let sent_dir = tempfile::tempdir().unwrap();
    // Six instances stored as files (and the first again, quarantined).
    let (_shared, data, old) = files_store(sent_dir.path(), 6);
    let new_dir = tempfile::tempdir().unwrap();
    let new = generated_files(new_dir.path(), 6);
    let all: Vec<PathBuf> = old.iter().chain(&new).cloned().collect();

    // Served with no layout set: the new instances are records.
    let served = serve_on(&data, &[]);
    storescu(served.port, &new);
    let (old_places, _) = locations(&data, &old);
    assert!(old_places.iter().all(|place| *place == Location::File));
    let (new_places, live) = locations(&data, &new);
    assert!(new_places
        .iter()
        .all(|place| matches!(place, Location::Record(_))));
    assert_eq!(live, new.len() as u64);
    assert_served(&served, &all);
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    verify_clean(&data, all.len());
    // `sluice stats`: twelve instances, six files and six records in one
    // segment, the duplicate in quarantine.
    let stats = sluice_ok(&["stats", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(row(&stats, "instances")[1], "12", "{stats}");
    let (tables, disk) = stats.split_once("\nobjects ").expect("the areas");
    assert_eq!(row(tables, "locations")[1], "6", "{stats}");
    let disk = format!("objects {disk}");
    assert_eq!(row(&disk, "objects")[1], "6", "{stats}");
    assert_eq!(row(&disk, "quarantine")[1], "1", "{stats}");
    assert_eq!(row(&disk, "segments")[1], "1", "{stats}");
    // The segment the records went to (its id is whichever a core's
    // prepared segment took: storage.segment_zero_fill).
    let Location::Record(first) = new_places[0] else {
        unreachable!("records, asserted above")
    };
    let segment = row(&disk, &format!("{:016x}", first.segment));
    assert_eq!(segment[4..], ["6", "0"], "{stats}");

    // Again: both kinds found and served after a restart.
    let served = serve_on(&data, &[]);
    assert_served(&served, &all);
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");

    // Then converted: every instance a record, byte for byte the same.
    let before = exports(&data, &all);
    let (code, stdout, stderr) = migrate(&data, "segments", "4");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "migrated {0} of {0} instances to segments",
            old.len()
        )) && stdout.contains(&format!("{} already there", new.len())),
        "{stdout}"
    );
    let (places, live) = locations(&data, &all);
    assert!(places
        .iter()
        .all(|place| matches!(place, Location::Record(_))));
    assert_eq!(live, all.len() as u64);
    assert_eq!(exports(&data, &all), before);
    verify_clean(&data, all.len());
    let served = serve_on(&data, &[]);
    assert_served(&served, &all);
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
}
