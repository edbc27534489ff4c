//! Start-up recovery of open segments (docs/design/segments.md, "Recovery
//! at start"): stores whose instances are records written with the segment
//! writer and indexed with their places as the ingest path does, then left
//! as a crash leaves them (a record without its entry, a torn tail, a
//! segment no entry names, stale bytes of an earlier run, entries in doubt),
//! recovered by `recovery::recover`.

use std::os::unix::fs::FileExt;
use std::path::Path;

use sluice_engine::recovery::{recover, RecoveryReport};
use sluice_engine::store::layout::dataset_checksum;
use sluice_engine::store::part10::{file_header, seal, FileMeta, SEAL_BYTES};
use sluice_engine::store::segment::{encode_record, write_zeros, RecordUids, SegmentWriter};
use sluice_index::{
    InstanceRecord, Location, RecordPlace, SegmentState, StoreOutcome, StoreRequest, Triplet,
};

use crate::operator::{sluice_ok, StoreFixture, CT, EXPLICIT_LE, RECEIVED_AT_UNIX_NS};

/// The segment's id in the index (its file is named from it).
pub(crate) const SEGMENT: u64 = 0x0002_0000_0000_0007;
/// The writing run's epoch.
pub(crate) const EPOCH: u64 = 1_700_000_000_000_000_000;
/// A segment's size in these tests (the smallest the writer takes).
pub(crate) const SEGMENT_BYTES: u64 = 1 << 20;

/// One element of an explicit VR little endian data set, its value padded
/// to an even length (UIDs with a NUL, text with a space); UT and OB take
/// the long form.
pub(crate) fn element(out: &mut Vec<u8>, group: u16, element: u16, vr: &[u8; 2], value: &[u8]) {
    let mut value = value.to_vec();
    if value.len() % 2 == 1 {
        value.push(if vr == b"UI" { 0 } else { b' ' });
    }
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"UT" || vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&value);
}

/// One instance as the ingest path stores it in a record.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) triplet: Triplet,
    /// The sealed Part 10 file (what the record holds and export writes).
    pub(crate) part10: Vec<u8>,
    pub(crate) record: InstanceRecord,
}

/// A sealed Part 10 file of a CT instance whose data set carries `text`.
pub(crate) fn instance(
    fixture: &mut StoreFixture,
    series: &str,
    sop: &str,
    text: &str,
) -> Instance {
    let triplet = Triplet::new("1.7", series, sop);
    let mut dataset = Vec::new();
    element(&mut dataset, 0x0008, 0x0016, b"UI", CT.as_bytes());
    element(&mut dataset, 0x0008, 0x0018, b"UI", sop.as_bytes());
    element(&mut dataset, 0x0008, 0x0060, b"CS", b"CT");
    element(&mut dataset, 0x0010, 0x0010, b"PN", b"Doe^Jane");
    element(&mut dataset, 0x0010, 0x0020, b"LO", b"PID-7");
    element(&mut dataset, 0x0020, 0x000d, b"UI", b"1.7");
    element(&mut dataset, 0x0020, 0x000e, b"UI", series.as_bytes());
    element(
        &mut dataset,
        0x0020,
        0x4000,
        b"UT",
        text.repeat(200).as_bytes(),
    );
    let mut part10 = file_header(&FileMeta {
        sop_class_uid: CT,
        sop_instance_uid: sop,
        transfer_syntax_uid: EXPLICIT_LE,
        source_ae_title: "MODALITY",
    })
    .unwrap();
    let dataset_offset_bytes = part10.len() as u64;
    let checksum = dataset_checksum(&dataset);
    let at = part10.len() - SEAL_BYTES;
    part10[at..].copy_from_slice(&seal(dataset.len() as u64, checksum));
    part10.extend_from_slice(&dataset);
    let record = InstanceRecord {
        file_id: fixture.next_file_id(),
        file_size_bytes: part10.len() as u64,
        dataset_offset_bytes,
        transfer_syntax_uid: EXPLICIT_LE.into(),
        sop_class_uid: CT.into(),
        checksum,
        received_at_unix_ns: RECEIVED_AT_UNIX_NS,
        calling_ae_title: "MODALITY".into(),
        instance_number: None,
    };
    Instance {
        triplet,
        part10,
        record,
    }
}

fn uids(triplet: &Triplet) -> RecordUids {
    RecordUids {
        study: triplet.study_instance_uid.clone(),
        series: triplet.series_instance_uid.clone(),
        sop: triplet.sop_instance_uid.clone(),
    }
}

/// Appends `instance` as a record of `epoch`; its place.
pub(crate) fn append(
    writer: &mut SegmentWriter,
    segment: u64,
    epoch: u64,
    instance: &Instance,
) -> RecordPlace {
    let encoded = encode_record(epoch, &uids(&instance.triplet), &instance.part10).unwrap();
    let offset = writer.append(&encoded).unwrap();
    RecordPlace {
        segment,
        offset,
        length: encoded.as_slice().len() as u64,
    }
}

/// Indexes `instance` at `place`, as the ingest path does once its record
/// is written (`in_doubt`: while its flush runs).
pub(crate) fn index_record(
    fixture: &StoreFixture,
    instance: &Instance,
    place: RecordPlace,
    in_doubt: bool,
) {
    let mut request = StoreRequest::new(StoreFixture::new_instance(
        instance.triplet.clone(),
        instance.record.clone(),
        "Doe",
    ));
    request.location = Location::Record(place);
    request.in_doubt = in_doubt;
    assert_eq!(fixture.store_request(request), StoreOutcome::Stored);
}

pub(crate) fn segment_state(fixture: &StoreFixture, segment: u64) -> Option<SegmentState> {
    fixture.index().read().unwrap().segment(segment).unwrap()
}

pub(crate) fn location_of(fixture: &StoreFixture, sop: &str) -> Option<Location> {
    let txn = fixture.index().read().unwrap();
    let entry = txn.instance_by_sop(sop).unwrap()?;
    Some(txn.location(entry.record.file_id).unwrap())
}

/// Overwrites `length` bytes at `at` of the file with zeros (a write that
/// did not reach the disk).
fn zero(path: &Path, at: u64, length: usize) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0u8; length], at).unwrap();
}

/// Everything recovery may change: the segment's bytes, its index state,
/// and where each entry's bytes are.
fn snapshot(
    fixture: &StoreFixture,
    sops: &[&str],
) -> (Vec<u8>, Option<SegmentState>, Vec<Option<Location>>) {
    (
        std::fs::read(fixture.layout.segment_path(SEGMENT)).unwrap(),
        segment_state(fixture, SEGMENT),
        sops.iter().map(|sop| location_of(fixture, sop)).collect(),
    )
}

/// The crash left: two indexed records, a valid record whose entry the
/// crash took, and a torn record after it. Recovery indexes the valid one
/// again byte-exact (readable, exported equal to the original), cuts the
/// torn one and the unused preallocation off the file, seals the segment;
/// a second recovery changes nothing.
#[test]
fn a_torn_tail_is_cut_and_a_record_without_entry_indexed_again() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
    let first = instance(&mut fixture, "1.7.1", "1.7.1.1", "first;");
    let second = instance(&mut fixture, "1.7.1", "1.7.1.2", "second;");
    let lost = instance(&mut fixture, "1.7.2", "1.7.2.1", "its entry was lost;");
    let torn = instance(&mut fixture, "1.7.2", "1.7.2.2", "torn;");
    let first_place = append(&mut writer, SEGMENT, EPOCH, &first);
    let second_place = append(&mut writer, SEGMENT, EPOCH, &second);
    let lost_place = append(&mut writer, SEGMENT, EPOCH, &lost);
    let torn_place = append(&mut writer, SEGMENT, EPOCH, &torn);
    writer.sync().unwrap();
    drop(writer);
    index_record(&fixture, &first, first_place, false);
    index_record(&fixture, &second, second_place, false);
    // Part of the torn record's payload never reached the disk (its
    // header did).
    zero(&path, torn_place.offset + 512, 512);

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(report.segments_recovered, 1, "{report}");
    assert_eq!(report.segment_records_reindexed, 1, "{report}");
    assert_eq!(report.segment_bytes_cut, SEGMENT_BYTES - lost_place.end());
    assert!(report.index_is_whole(), "{report:?}");
    assert!(report.repaired_anything());
    assert!(
        report
            .to_string()
            .contains("1 open segment sealed: 1 record indexed again, 1 torn tail cut"),
        "{report}"
    );

    assert_eq!(std::fs::metadata(&path).unwrap().len(), lost_place.end());
    let state = segment_state(&fixture, SEGMENT).unwrap();
    assert!(state.sealed);
    assert_eq!(state.indexed_end, lost_place.end());
    assert_eq!(state.live_records, 3);
    assert_eq!(
        state.live_bytes,
        first_place.length + second_place.length + lost_place.length
    );
    assert_eq!(
        location_of(&fixture, "1.7.2.1"),
        Some(Location::Record(lost_place))
    );
    assert_eq!(
        location_of(&fixture, "1.7.2.2"),
        None,
        "a torn record is never indexed"
    );
    let entry = fixture
        .index()
        .read()
        .unwrap()
        .instance_by_sop("1.7.2.1")
        .unwrap()
        .unwrap();
    assert_eq!(entry.triplet, lost.triplet);
    assert_eq!(entry.record.checksum, lost.record.checksum);
    assert_eq!(entry.record.file_size_bytes, lost.record.file_size_bytes);
    assert_eq!(
        entry.record.dataset_offset_bytes,
        lost.record.dataset_offset_bytes
    );

    // A second recovery changes nothing.
    let sops = ["1.7.1.1", "1.7.1.2", "1.7.2.1", "1.7.2.2"];
    let before = snapshot(&fixture, &sops);
    let again = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(
        again,
        RecoveryReport {
            entries_checked: 3,
            elapsed: again.elapsed,
            ..RecoveryReport::default()
        }
    );
    assert_eq!(snapshot(&fixture, &sops), before);

    // The re-indexed record is exported byte-exact, as are the others.
    fixture.close();
    let data = fixture.data_dir().to_str().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    for instance in [&first, &second, &lost] {
        let exported = out
            .path()
            .join(format!("{}.dcm", instance.triplet.sop_instance_uid));
        sluice_ok(&[
            "export-instance",
            "--data-dir",
            &data,
            &instance.triplet.sop_instance_uid,
            exported.to_str().unwrap(),
        ]);
        assert!(std::fs::read(&exported).unwrap() == instance.part10);
    }
    let verified = sluice_ok(&["verify", "--data-dir", &data]);
    assert!(verified.contains("verified 3 files"), "{verified}");
}

/// A segment created and written, its records flushed, and the process
/// stopped before any entry naming it committed: no index row at all. Both
/// records are indexed again and the segment sealed.
#[test]
fn a_segment_without_an_index_row_is_recovered() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
    let one = instance(&mut fixture, "1.7.1", "1.7.1.1", "one;");
    let two = instance(&mut fixture, "1.7.1", "1.7.1.2", "two;");
    let one_place = append(&mut writer, SEGMENT, EPOCH, &one);
    let two_place = append(&mut writer, SEGMENT, EPOCH, &two);
    writer.sync().unwrap();
    drop(writer);
    // Not a segment file name: left alone.
    let stranger = fixture.layout.segments_dir().join("notes.txt");
    std::fs::write(&stranger, b"not ours").unwrap();
    assert_eq!(segment_state(&fixture, SEGMENT), None);

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(report.segments_recovered, 1);
    assert_eq!(report.segment_records_reindexed, 2);
    assert_eq!(report.segment_torn_tails, 0, "the records end at the zeros");
    assert_eq!(report.entries_checked, 2);
    assert!(report.index_is_whole(), "{report:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), two_place.end());
    assert_eq!(std::fs::read(&stranger).unwrap(), b"not ours");
    let state = segment_state(&fixture, SEGMENT).unwrap();
    assert!(state.sealed);
    assert_eq!(
        (state.live_records, state.indexed_end),
        (2, two_place.end())
    );
    assert_eq!(
        location_of(&fixture, "1.7.1.1"),
        Some(Location::Record(one_place))
    );
    assert_eq!(
        location_of(&fixture, "1.7.1.2"),
        Some(Location::Record(two_place))
    );

    let again = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(
        (again.segments_recovered, again.segment_records_reindexed),
        (0, 0)
    );
}

/// Segments whose blocks were written with zeros before records went in
/// (`SegmentWriter::create_zeroed`, `storage.segment_zero_fill`): recovery
/// reads the zeros past the last record as the end of the records, as it
/// reads a fallocated segment's, indexes the records without entry and cuts
/// the zeros off. A segment prepared for a core and never used (no index
/// row, no record) is removed, not sealed empty; one with a row and no
/// record is sealed as before.
#[test]
fn a_zero_filled_tail_ends_the_records_and_an_unused_prepared_segment_is_removed() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create_zeroed(&path, SEGMENT_BYTES, &|| false).unwrap();
    let one = instance(&mut fixture, "1.7.1", "1.7.1.1", "one;");
    let two = instance(&mut fixture, "1.7.1", "1.7.1.2", "two;");
    let one_place = append(&mut writer, SEGMENT, EPOCH, &one);
    let two_place = append(&mut writer, SEGMENT, EPOCH, &two);
    writer.sync().unwrap();
    drop(writer);
    index_record(&fixture, &one, one_place, false);
    let unused = fixture.layout.segment_path(SEGMENT + 1);
    drop(SegmentWriter::create_zeroed(&unused, SEGMENT_BYTES, &|| false).unwrap());
    // Its only record was torn: no row, nothing valid (never acknowledged).
    let torn_path = fixture.layout.segment_path(SEGMENT + 2);
    let mut torn = SegmentWriter::create_zeroed(&torn_path, SEGMENT_BYTES, &|| false).unwrap();
    let torn_place = append(&mut torn, SEGMENT + 2, EPOCH, &two);
    drop(torn);
    zero(&torn_path, torn_place.offset + 512, 512);

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(report.segments_recovered, 1, "{report}");
    assert_eq!(report.segment_records_reindexed, 1, "{report}");
    assert_eq!(report.segment_torn_tails, 0, "the records end at the zeros");
    assert_eq!(report.empty_segments_removed, 2, "{report}");
    assert!(
        report.to_string().contains("2 unused segments removed"),
        "{report}"
    );
    assert!(report.index_is_whole(), "{report:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), two_place.end());
    assert!(!unused.exists() && !torn_path.exists());
    assert_eq!(
        segment_state(&fixture, SEGMENT + 1),
        None,
        "not sealed empty"
    );
    assert_eq!(segment_state(&fixture, SEGMENT + 2), None);
    assert!(segment_state(&fixture, SEGMENT).unwrap().sealed);
    assert_eq!(
        location_of(&fixture, "1.7.1.2"),
        Some(Location::Record(two_place))
    );
    let again = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(
        (again.segments_recovered, again.empty_segments_removed),
        (0, 0)
    );
}

/// Segments handed out partly written (`storage.segment_zero_fill`: the
/// preparer's paced zeros had covered only their start): recovery reads the
/// records, then the written zeros past them, then the unwritten rest, as
/// the end of the records; and records that ran past the zeros into the
/// unwritten part are all found. Both indexed and cut as a fallocated or
/// a whole zero-filled segment is.
#[test]
fn a_partly_written_segment_recovers_as_a_whole_one() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let zeros = sluice_engine::store::segment::AlignedBuf::zeroed(64 << 10);
    let mut ends = Vec::new();
    let mut all = Vec::new();
    // The first: records within its 64 KiB of zeros. The second: 4 KiB of
    // zeros, its records past them.
    for (n, zeroed) in [(0u64, 64u64 << 10), (1, 4 << 10)] {
        let path = fixture.layout.segment_path(SEGMENT + n);
        let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
        let file = writer.try_clone_file().unwrap();
        write_zeros(&file, 0, zeroed, &zeros).unwrap();
        file.sync_data().unwrap();
        let mut places = Vec::new();
        for k in 0..3 {
            let sop = format!("1.7.3.{n}.{k}");
            let one = instance(&mut fixture, "1.7.3", &sop, "partly;");
            places.push((append(&mut writer, SEGMENT + n, EPOCH, &one), one, sop));
        }
        writer.sync().unwrap();
        drop(writer);
        let last = places[2].0.end();
        if n == 0 {
            assert!(last < zeroed, "within the zeros");
        } else {
            assert!(places[1].0.offset >= zeroed, "past the zeros");
        }
        index_record(&fixture, &places[0].1, places[0].0, false);
        ends.push((path, last));
        all.extend(places);
    }

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(report.segments_recovered, 2, "{report}");
    assert_eq!(report.segment_records_reindexed, 4, "{report}");
    assert_eq!(report.segment_torn_tails, 0, "the records end at zeros");
    assert!(report.index_is_whole(), "{report:?}");
    for (path, end) in &ends {
        assert_eq!(std::fs::metadata(path).unwrap().len(), *end);
    }
    for (place, _, sop) in &all {
        assert_eq!(location_of(&fixture, sop), Some(Location::Record(*place)));
    }
}

/// Stale bytes past a cut: a whole record of an earlier run after the
/// furthest indexed record is not taken for a new one; the file is cut at
/// the indexed end.
#[test]
fn a_stale_record_of_an_earlier_epoch_is_not_taken() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
    let indexed = instance(&mut fixture, "1.7.1", "1.7.1.1", "indexed;");
    let stale = instance(&mut fixture, "1.7.1", "1.7.1.2", "stale;");
    let indexed_place = append(&mut writer, SEGMENT, EPOCH, &indexed);
    append(&mut writer, SEGMENT, EPOCH - 1, &stale);
    writer.sync().unwrap();
    drop(writer);
    index_record(&fixture, &indexed, indexed_place, false);

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(report.segments_recovered, 1);
    assert_eq!(report.segment_records_reindexed, 0);
    assert_eq!(report.segment_torn_tails, 1, "stale bytes end the records");
    assert_eq!(location_of(&fixture, "1.7.1.2"), None);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), indexed_place.end());
    assert!(segment_state(&fixture, SEGMENT).unwrap().sealed);
}

/// A valid record without an entry whose instance is already stored: a
/// byte-identical copy is dropped (its bytes dead), another data set is
/// held in quarantine at its place.
#[test]
fn duplicates_found_by_recovery_are_dropped_when_identical_else_quarantined() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
    let stored = instance(&mut fixture, "1.7.1", "1.7.1.1", "stored;");
    let identical = Instance {
        record: InstanceRecord {
            file_id: fixture.next_file_id(),
            ..stored.record.clone()
        },
        ..stored.clone()
    };
    let other = instance(&mut fixture, "1.7.1", "1.7.1.1", "another data set;");
    let stored_place = append(&mut writer, SEGMENT, EPOCH, &stored);
    append(&mut writer, SEGMENT, EPOCH, &identical);
    let other_place = append(&mut writer, SEGMENT, EPOCH, &other);
    writer.sync().unwrap();
    drop(writer);
    index_record(&fixture, &stored, stored_place, false);

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(report.segment_records_reindexed, 1, "{report}");
    assert!(report.index_is_whole(), "{report:?}");
    let txn = fixture.index().read().unwrap();
    let held = txn.quarantine_entries(None, 10).unwrap().items;
    assert_eq!(held.len(), 1);
    assert_eq!(
        txn.location(held[0].instance.record.file_id).unwrap(),
        Location::Record(other_place)
    );
    assert_eq!(held[0].instance.record.checksum, other.record.checksum);
    let state = txn.segment(SEGMENT).unwrap().unwrap();
    assert_eq!(state.live_records, 2, "the identical copy's bytes are dead");
    assert_eq!(state.live_bytes, stored_place.length + other_place.length);
    // The file keeps every record up to the last valid one.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), other_place.end());
}

/// Entries committed in doubt whose file id is a record: a whole and valid
/// record is kept; a torn one has its entry removed and its place becomes
/// dead bytes (nothing moved, nothing unlinked).
#[test]
fn in_doubt_entries_of_records_are_kept_when_whole_else_removed() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
    let whole = instance(&mut fixture, "1.7.1", "1.7.1.1", "whole;");
    let torn = instance(&mut fixture, "1.7.1", "1.7.1.2", "torn;");
    let after = instance(&mut fixture, "1.7.1", "1.7.1.3", "after;");
    let whole_place = append(&mut writer, SEGMENT, EPOCH, &whole);
    let torn_place = append(&mut writer, SEGMENT, EPOCH, &torn);
    let after_place = append(&mut writer, SEGMENT, EPOCH, &after);
    writer.sync().unwrap();
    drop(writer);
    index_record(&fixture, &whole, whole_place, true);
    index_record(&fixture, &torn, torn_place, true);
    index_record(&fixture, &after, after_place, false);
    zero(&path, torn_place.offset + 512, 512);
    assert_eq!(fixture.index().read().unwrap().in_doubt().unwrap().len(), 2);

    let report = recover(&fixture.layout, fixture.index()).unwrap();
    assert_eq!(
        (report.in_doubt_kept, report.in_doubt_removed),
        (1, 1),
        "{report}"
    );
    assert!(fixture
        .index()
        .read()
        .unwrap()
        .in_doubt()
        .unwrap()
        .is_empty());
    assert_eq!(
        location_of(&fixture, "1.7.1.1"),
        Some(Location::Record(whole_place))
    );
    assert_eq!(location_of(&fixture, "1.7.1.2"), None);
    assert_eq!(
        location_of(&fixture, "1.7.1.3"),
        Some(Location::Record(after_place))
    );
    let state = segment_state(&fixture, SEGMENT).unwrap();
    assert!(state.sealed);
    assert_eq!(state.live_records, 2);
    assert_eq!(state.live_bytes, whole_place.length + after_place.length);
    // Nothing below the indexed end is cut: the torn record stays as dead
    // bytes between live ones.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), after_place.end());
    assert!(report.index_is_whole(), "{report:?}");
}
