//! The readers of segment records (docs/design/segments.md, "Reads"): a
//! store whose instances are records, written with the segment writer into
//! the store's `segments/` directory and indexed with their record places
//! through the index's write API (what the ingest path will do), read back
//! through the embedding API, the retrieve's resolution, `export-instance`
//! and `verify`.

use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use sluice_engine::config::Config;
use sluice_engine::store::segment::{encode_record, header_bytes_of, RecordUids, SegmentWriter};
use sluice_engine::store::{DatasetLocation, Store};
use sluice_index::{Location, RecordPlace, StoreOutcome, StoreRequest, Triplet};

use crate::operator::{sluice, sluice_ok, StoreFixture};

/// The segment's id in the index (its file is named from it).
const SEGMENT: u64 = 0x0001_0000_0000_002a;
/// The writing run's epoch.
const EPOCH: u64 = 1_700_000_000_000_000_000;

/// One instance stored as a record.
struct Stored {
    triplet: Triplet,
    part10: Vec<u8>,
    dataset_offset: u64,
    place: RecordPlace,
}

/// A store of three instances (two series), each a record of one segment.
fn record_store() -> (StoreFixture, Vec<Stored>) {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let mut writer = SegmentWriter::create(&fixture.layout.segment_path(SEGMENT), 1 << 20).unwrap();
    let mut stored = Vec::new();
    for (series, sop, content) in [
        ("1.5.1", "1.5.1.1", "first record's data set;"),
        ("1.5.1", "1.5.1.2", "second;"),
        ("1.5.2", "1.5.2.1", "the third record, in another series;"),
    ] {
        let triplet = Triplet::new("1.5", series, sop);
        let (_, part10, record) = fixture.part10(&triplet, content);
        let uids = RecordUids {
            study: triplet.study_instance_uid.clone(),
            series: triplet.series_instance_uid.clone(),
            sop: triplet.sop_instance_uid.clone(),
        };
        let encoded = encode_record(EPOCH, &uids, &part10).unwrap();
        let offset = writer.append(&encoded).unwrap();
        let place = RecordPlace {
            segment: SEGMENT,
            offset,
            length: encoded.as_slice().len() as u64,
        };
        let dataset_offset = record.dataset_offset_bytes;
        let mut request =
            StoreRequest::new(StoreFixture::new_instance(triplet.clone(), record, "Seg"));
        request.location = Location::Record(place);
        assert_eq!(fixture.store_request(request), StoreOutcome::Stored);
        stored.push(Stored {
            triplet,
            part10,
            dataset_offset,
            place,
        });
    }
    writer.sync().unwrap();
    fixture.close();
    (fixture, stored)
}

fn open_store(fixture: &StoreFixture) -> Store {
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        fixture.data_dir().to_str().unwrap(),
        "--free-space-floor",
        "0",
    ])
    .unwrap();
    Store::open(config).unwrap()
}

/// The embedding API reads records byte-exact, and the location a sender
/// gets names the segment and the data set's range in it (the range the
/// C-MOVE/C-GET sender opens and reads on the io cores).
#[test]
fn records_read_back_byte_exact_through_the_embedding_api() {
    let (fixture, stored) = record_store();
    let store = open_store(&fixture);
    for instance in &stored {
        let sop = &instance.triplet.sop_instance_uid;
        assert!(store.read_instance(sop).unwrap().unwrap() == instance.part10);
        let dataset = &instance.part10[instance.dataset_offset as usize..];
        assert!(store.read_dataset(sop).unwrap().unwrap() == dataset);

        let entry = store.instance_by_sop(sop).unwrap().unwrap();
        let located = store.dataset_of(&entry).unwrap();
        let header = header_bytes_of("1.5", &instance.triplet.series_instance_uid, sop);
        let (path, offset, length) = located.location.file_range();
        assert_eq!(path, fixture.layout.segment_path(SEGMENT));
        assert_eq!(
            offset,
            instance.place.offset + header + instance.dataset_offset
        );
        assert_eq!(length, dataset.len() as u64);
        assert!(matches!(
            located.location,
            DatasetLocation::Record { segment: SEGMENT, record_offset, .. }
                if record_offset == instance.place.offset
        ));
        // The range, read as the sender does (open the path, read at the
        // offset), is the data set and ends where it does.
        let file = std::fs::File::open(path).unwrap();
        let mut bytes = vec![0u8; length as usize];
        file.read_exact_at(&mut bytes, offset).unwrap();
        assert!(bytes == dataset);
        assert_eq!(
            located.location.part10_range(),
            (
                path,
                instance.place.offset + header,
                instance.part10.len() as u64
            )
        );
    }
    assert_eq!(store.read_instance("1.5.9.9").unwrap(), None);
}

/// A retrieve's resolution (what C-MOVE and C-GET send) names each record's
/// data set by segment and range.
#[test]
fn a_retrieve_resolves_records_to_their_ranges() {
    use sluice_net::query::model::tags;
    use sluice_net::query::{
        IdentifierBuilder, InformationModel, Level, Operation, Query, QueryContext,
    };
    let (fixture, stored) = record_store();
    let store = open_store(&fixture);
    let encoding = sluice_net::dimse::dataset::SmallDatasetEncoding::ExplicitVrLittleEndian;
    let query = Query::decode(
        &IdentifierBuilder::new(Level::Study)
            .key(tags::STUDY_INSTANCE_UID, "1.5")
            .encode(encoding)
            .unwrap(),
        encoding,
        &QueryContext::new(InformationModel::StudyRoot, Operation::Get),
    )
    .unwrap();
    let datasets = store.datasets_matching(&query, 10).unwrap();
    assert_eq!(datasets.len(), 3);
    for dataset in &datasets {
        let instance = stored
            .iter()
            .find(|i| i.triplet == dataset.triplet)
            .unwrap();
        let (path, _, length) = dataset.location.file_range();
        assert_eq!(path, fixture.layout.segment_path(SEGMENT));
        assert_eq!(
            length,
            instance.part10.len() as u64 - instance.dataset_offset
        );
        let bytes = store.read_dataset_head(dataset, u64::MAX).unwrap();
        assert!(bytes == instance.part10[instance.dataset_offset as usize..]);
        // A bounded head (C-FIND's file-head read) stops inside the record.
        let head = store.read_dataset_head(dataset, 16).unwrap();
        assert!(head == instance.part10[instance.dataset_offset as usize..][..16]);
    }
}

/// `export-instance` writes the record's Part 10 bytes as a normal file,
/// byte-exact; `verify` passes the records, then reports a flipped payload
/// byte by segment and offset, and `export-instance` refuses that record.
#[test]
fn export_and_verify_read_records() {
    let (fixture, stored) = record_store();
    let data = fixture.data_dir().to_str().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    for (n, instance) in stored.iter().enumerate() {
        let path = out.path().join(format!("{n}.dcm"));
        let output = sluice_ok(&[
            "export-instance",
            "--data-dir",
            &data,
            &instance.triplet.sop_instance_uid,
            path.to_str().unwrap(),
        ]);
        assert!(output.contains("exported"), "{output}");
        assert!(std::fs::read(&path).unwrap() == instance.part10);
    }

    let output = sluice_ok(&["verify", "--data-dir", &data]);
    assert!(
        output.contains(
            "verified 3 files (3 stored, 0 quarantined): 0 missing, 0 wrong size, \
             0 checksum mismatch, 0 unreadable, 0 damaged records"
        ),
        "{output}"
    );

    // One byte of the second record's data set flipped on disk.
    let damaged = &stored[1];
    let header = header_bytes_of(
        "1.5",
        &damaged.triplet.series_instance_uid,
        &damaged.triplet.sop_instance_uid,
    );
    let at = damaged.place.offset + header + damaged.dataset_offset + 3;
    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fixture.layout.segment_path(SEGMENT))
        .unwrap();
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    drop(segment);

    let (result, output) = sluice(&["verify", "--data-dir", &data]);
    assert_eq!(result.unwrap(), ExitCode::from(1), "{output}");
    let line = output
        .lines()
        .find(|line| line.starts_with("DAMAGED"))
        .unwrap_or_else(|| panic!("no damaged record in\n{output}"));
    assert!(
        line.contains(&format!(
            "segment {SEGMENT:016x}, record at offset {}",
            damaged.place.offset
        )) && line.contains(&damaged.triplet.sop_instance_uid)
            && line.contains("payload checksum"),
        "{line}"
    );
    assert_eq!(output.matches("DAMAGED").count(), 1, "{output}");
    assert!(output.contains("1 damaged records"), "{output}");

    let path = out.path().join("damaged.dcm");
    let (result, output) = sluice(&[
        "export-instance",
        "--data-dir",
        &data,
        &damaged.triplet.sop_instance_uid,
        path.to_str().unwrap(),
    ]);
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "segment {SEGMENT:016x} at offset {}",
            damaged.place.offset
        )) && error.contains("payload checksum"),
        "{error}\n{output}"
    );
    assert!(!path.exists(), "a damaged record was exported");
}
