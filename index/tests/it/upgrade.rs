//! Upgrading an index written by an older schema, in place, at open: a real
//! schema 3 index (`tests/fixtures/schema-v3`, written by that version) is
//! opened, checked whole, and written to.

use sluice_index::{
    Disposition, FileId, InDoubtEntry, Location, QuarantineReason, RecordPlace, StoreOutcome,
    StoreRequest, Triplet, WriteOp, WriteOutcome,
};

use crate::common::{
    clear_table, fixture_copy, instance, open, put_raw, record, schema_version, set_schema_version,
    store,
};

/// The instances the fixture stores: (study, series, sop, file id, checksum seed).
const STORED: [(&str, &str, &str, u128, u8); 7] = [
    ("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1", 11, 1),
    ("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.2", 12, 1),
    ("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.3", 13, 1),
    ("1.2.3.1", "1.2.3.1.2", "1.2.3.1.2.1", 14, 1),
    ("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1", 21, 1),
    ("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.2", 22, 1),
    ("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.3", 23, 3),
];

/// Everything the fixture holds is there after the upgrade, and the index
/// is consistent.
fn assert_fixture_content(index: &sluice_index::Index) {
    let read = index.read().expect("read");
    for (study, series, sop, file_id, seed) in STORED {
        assert_eq!(
            read.instance(study, series, sop).expect("lookup"),
            Some(record(file_id, seed)),
            "{sop}"
        );
        let entry = read.instance_by_sop(sop).expect("by sop").expect("stored");
        assert_eq!(entry.triplet, Triplet::new(study, series, sop));
        assert_eq!(entry.record.file_id, FileId(file_id));
    }
    assert!(read
        .instance_by_sop("1.2.3.3.1.1")
        .expect("by sop")
        .is_none());
    assert!(read.study("1.2.3.3").expect("study").is_none());
    let listed: Vec<String> = read
        .instances_of_study("1.2.3.1", None, 100)
        .expect("listing")
        .items
        .into_iter()
        .map(|entry| entry.triplet.sop_instance_uid)
        .collect();
    assert_eq!(
        listed,
        ["1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.1.3", "1.2.3.1.2.1"]
    );
    let study = read.study("1.2.3.1").expect("study").expect("present");
    assert_eq!((study.number_of_series, study.number_of_instances), (2, 4));
    let series = read
        .series("1.2.3.2", "1.2.3.2.1")
        .expect("series")
        .expect("present");
    assert_eq!(series.number_of_instances, 3);
    let quarantine = read.quarantine_entries(None, 10).expect("quarantine").items;
    assert_eq!(quarantine.len(), 2);
    assert_eq!(quarantine[0].reason, QuarantineReason::Duplicate);
    assert!(matches!(
        quarantine[1].reason,
        QuarantineReason::SopInstanceConflict { .. }
    ));
    let commitment = read
        .commitment("1.2.3.100")
        .expect("commitment")
        .expect("present");
    assert_eq!(commitment.payload, b"payload");
    let report = read.check_consistency(20).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(
        (
            report.instances,
            report.series,
            report.studies,
            report.quarantine_entries,
            report.commitments
        ),
        (7, 3, 2, 2, 1)
    );
}

/// After the upgrade the index is written to as usual: a new instance, a
/// duplicate of a migrated one, and the release of the migrated conflict,
/// which moves a migrated SOP Instance UID to another series.
fn assert_writable(index: &sluice_index::Index) {
    let results = index
        .writer()
        .execute(vec![
            store("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.4", 15, 1),
            store("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.2", 51, 5),
            WriteOp::ReleaseQuarantine(2),
        ])
        .expect("batch");
    assert_eq!(results[0], Ok(WriteOutcome::Store(StoreOutcome::Stored)));
    assert!(matches!(
        &results[1],
        Ok(WriteOutcome::Store(StoreOutcome::Duplicate(
            Disposition::Quarantined { .. }
        )))
    ));
    match &results[2] {
        Ok(WriteOutcome::Released(Some(released))) => {
            assert_eq!(
                released.replaced.as_ref().map(|r| r.file_id),
                Some(FileId(21))
            );
        }
        other => panic!("release: {other:?}"),
    }
    let read = index.read().expect("read");
    let moved = read
        .instance_by_sop("1.2.3.2.1.1")
        .expect("by sop")
        .expect("stored");
    assert_eq!(
        moved.triplet,
        Triplet::new("1.2.3.9", "1.2.3.9.1", "1.2.3.2.1.1")
    );
    assert!(!read
        .contains("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1")
        .expect("contains"));
    let report = read.check_consistency(20).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.instances, 8);
}

#[test]
fn schema_version_3_is_upgraded_in_place() {
    let dir = fixture_copy("schema-v3");
    assert_eq!(schema_version(dir.path()), 3);
    let index = open(dir.path());
    assert_fixture_content(&index);
    let in_doubt = index.read().expect("read").in_doubt().expect("in doubt");
    assert_eq!(in_doubt.len(), 1);
    assert_eq!(in_doubt[0].file_id, FileId(23));
    assert!(
        matches!(&in_doubt[0].entry, InDoubtEntry::Instance(entry) if entry.record.file_id == FileId(23))
    );
    index.close();
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
    // Reopened (no upgrade this time: the SOP index is found up to date).
    let index = open(dir.path());
    assert_fixture_content(&index);
    assert_writable(&index);
}

/// Version 2 is version 3 without the `in_doubt` table: the fixture with
/// version 2 written and its in-doubt mark gone, as version 2 would have it.
#[test]
fn schema_version_2_is_upgraded_in_place() {
    let dir = fixture_copy("schema-v3");
    set_schema_version(dir.path(), 2);
    clear_table(dir.path(), "in_doubt");
    let index = open(dir.path());
    assert_fixture_content(&index);
    assert!(index
        .read()
        .expect("read")
        .in_doubt()
        .expect("in doubt")
        .is_empty());
    assert_writable(&index);
    index.close();
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
}

/// Version 4 is version 3 with the `flagged` table: the fixture with version
/// 4 written and a flagged row for one of its files keeps that row.
#[test]
fn schema_version_4_is_upgraded_in_place() {
    let dir = fixture_copy("schema-v3");
    set_schema_version(dir.path(), 4);
    put_raw(dir.path(), "flagged", &23u128.to_be_bytes(), b"flagged 23");
    let index = open(dir.path());
    assert_fixture_content(&index);
    let flagged = index
        .read()
        .expect("read")
        .flagged(None, 10)
        .expect("flagged")
        .items;
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].file_id, FileId(23));
    assert_eq!(flagged[0].payload, b"flagged 23");
    assert_writable(&index);
    index.close();
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
}

/// Version 5 is version 6 without the `locations` and `segments` tables:
/// every instance is a file. The fixture upgraded to the current version,
/// then marked 5 (its new tables empty, as 5 left them absent), opens with
/// every instance a file and no segment, and takes records after.
#[test]
fn schema_version_5_is_upgraded_in_place() {
    let dir = fixture_copy("schema-v3");
    open(dir.path()).close();
    set_schema_version(dir.path(), 5);
    let index = open(dir.path());
    assert_fixture_content(&index);
    {
        let read = index.read().expect("read");
        for (.., file_id, _) in STORED {
            assert_eq!(
                read.location(FileId(file_id)).expect("location"),
                Location::File
            );
        }
        assert!(read.segments().expect("segments").is_empty());
    }
    assert_writable(&index);
    let place = RecordPlace {
        segment: 1,
        offset: 0,
        length: 8192,
    };
    let mut request = StoreRequest::new(instance("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.9", 91, 1));
    request.location = Location::Record(place);
    let results = index
        .writer()
        .execute(vec![WriteOp::Store(request)])
        .expect("batch");
    assert_eq!(results[0], Ok(WriteOutcome::Store(StoreOutcome::Stored)));
    let read = index.read().expect("read");
    assert_eq!(
        read.location(FileId(91)).expect("location"),
        Location::Record(place)
    );
    assert!(read.check_consistency(20).expect("check").is_consistent());
    drop(read);
    index.close();
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
}

/// Schemas 5 and 6 had no `study_by_patient_name`: the upgrade fills it
/// from the study records (the check counts its entries against them) and a
/// name query finds through it.
#[test]
fn schema_versions_5_and_6_get_their_patient_name_table() {
    for version in [5, 6] {
        patient_name_table_filled_from(version);
    }
}

fn patient_name_table_filled_from(version: u32) {
    let dir = fixture_copy("schema-v3");
    let index = open(dir.path());
    index.close();
    clear_table(dir.path(), "study_by_patient_name");
    set_schema_version(dir.path(), version);
    let index = open(dir.path());
    assert_fixture_content(&index);
    let read = index.read().expect("read");
    let name = read
        .study("1.2.3.1")
        .expect("study")
        .expect("present")
        .attributes
        .patient_name;
    assert!(!name.is_empty(), "the fixture's study has a name");
    let mut context = sluice_net::query::QueryContext::new(
        sluice_net::query::InformationModel::StudyRoot,
        sluice_net::query::Operation::Find,
    );
    context.relational = false;
    let bytes = sluice_net::query::IdentifierBuilder::new(sluice_net::query::Level::Study)
        .key(sluice_net::query::model::tags::PATIENT_NAME, &name)
        .encode(sluice_net::dimse::dataset::SmallDatasetEncoding::ExplicitVrLittleEndian)
        .expect("encode");
    let query = sluice_net::query::Query::decode(
        &bytes,
        sluice_net::dimse::dataset::SmallDatasetEncoding::ExplicitVrLittleEndian,
        &context,
    )
    .expect("decode");
    let page = read
        .find(
            &query,
            None,
            sluice_index::FindBudget {
                matches_max: 10,
                scanned_max: 10,
            },
        )
        .expect("find");
    assert!(page
        .matches
        .iter()
        .any(|found| found.study_instance_uid() == Some("1.2.3.1")));
    drop(read);
    index.close();
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
}

/// Schema 7 had no `segment_objects`: the upgrade creates it empty, keeps
/// the records' places and segment states, and the new operations work.
#[test]
fn schema_version_7_is_upgraded_in_place() {
    let dir = fixture_copy("schema-v3");
    let index = open(dir.path());
    let place = RecordPlace {
        segment: 5,
        offset: 0,
        length: 8192,
    };
    let mut request = StoreRequest::new(instance("1.2.3.9", "1.2.3.9.1", "1.2.3.9.1.1", 91, 1));
    request.location = Location::Record(place);
    index
        .writer()
        .execute(vec![WriteOp::Store(request), WriteOp::SealSegment(5)])
        .expect("batch");
    index.close();
    clear_table(dir.path(), "segment_objects");
    set_schema_version(dir.path(), 7);
    let index = open(dir.path());
    crate::common::assert_consistent(&index);
    {
        let read = index.read().expect("read");
        assert_eq!(read.location(FileId(91)).unwrap(), Location::Record(place));
        assert!(read.segment(5).unwrap().expect("known").sealed);
        assert_eq!(read.segment_objects().unwrap(), vec![]);
    }
    let object = sluice_index::SegmentObject {
        key: "node/0000000000000005.seg".into(),
        size_bytes: 8192,
        evicted: false,
    };
    let outcomes = index
        .writer()
        .execute(vec![
            WriteOp::SegmentUploaded {
                segment: 5,
                object: object.clone(),
            },
            WriteOp::SegmentEvicted(5),
        ])
        .expect("batch");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    index.close();
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
    assert_eq!(sluice_index::SCHEMA_VERSION, 9);
}

/// Schema 8 keyed `study_by_patient_name` by the names as stored: the
/// upgrade to 9 rewrites it with the folded names, and a case-insensitive
/// query finds the study through it.
#[test]
fn schema_version_8_name_keys_are_folded_in_place() {
    let dir = fixture_copy("schema-v3");
    let index = open(dir.path());
    let mut new = instance("1.2.3.9", "1.2.3.9.1", "1.2.3.9.1.1", 91, 1);
    new.study.patient_name = "MÜLLER^Jürgen=山田^太郎".into();
    index
        .writer()
        .execute(vec![WriteOp::Store(StoreRequest::new(new))])
        .expect("store");
    // What 8 wrote: every study's groups as stored.
    let stored: Vec<(&str, String)> = {
        let read = index.read().expect("read");
        ["1.2.3.1", "1.2.3.2", "1.2.3.9"]
            .into_iter()
            .map(|study| {
                let record = read.study(study).expect("study").expect("present");
                (study, record.attributes.patient_name)
            })
            .collect()
    };
    index.close();
    clear_table(dir.path(), "study_by_patient_name");
    let key = |value: &str, study: &str| [value.as_bytes(), b"\0", study.as_bytes()].concat();
    for (study, name) in &stored {
        for group in name.split('=') {
            put_raw(dir.path(), "study_by_patient_name", &key(group, study), b"");
        }
    }
    set_schema_version(dir.path(), 8);
    let index = open(dir.path());
    crate::common::assert_consistent(&index);
    index.close();
    let keys = crate::common::table_keys(dir.path(), "study_by_patient_name");
    assert!(keys.contains(&key("müller^jürgen", "1.2.3.9")), "{keys:?}");
    assert!(keys.contains(&key("山田^太郎", "1.2.3.9")));
    assert!(!keys.contains(&key("MÜLLER^Jürgen", "1.2.3.9")));
    assert_eq!(schema_version(dir.path()), sluice_index::SCHEMA_VERSION);
}
