//! The operator commands on a store whose instances are segment records
//! (written with the segment writer and indexed with their places, as the
//! ingest path does), run as the `sluice` binary: `show` and `quarantine
//! show` print a record's place, `quarantine release` keeps it, `quarantine
//! purge` leaves its bytes dead (nothing unlinked), `stats` lists the
//! segment's live and dead bytes, and `media export` writes records like
//! files.

use sluice_engine::store::segment::SegmentWriter;
use sluice_index::{Disposition, Location, RecordPlace, StoreOutcome, StoreRequest};

use crate::operator::{sluice_binary, StoreFixture};
use crate::segment_recovery::{
    append, index_record, instance, Instance, EPOCH, SEGMENT, SEGMENT_BYTES,
};

/// Runs the binary; its stdout, failing the test on a non-zero exit.
fn run_ok(args: &[&str]) -> String {
    let (status, stdout, stderr) = sluice_binary(args);
    assert_eq!(status, Some(0), "{args:?}\n{stdout}\n{stderr}");
    stdout
}

/// Holds `instance` (a duplicate of a stored one) in quarantine at `place`;
/// its quarantine id.
fn quarantine_record(fixture: &StoreFixture, instance: &Instance, place: RecordPlace) -> u64 {
    let mut request = StoreRequest::new(StoreFixture::new_instance(
        instance.triplet.clone(),
        instance.record.clone(),
        "Doe",
    ));
    request.location = Location::Record(place);
    match fixture.store_request(request) {
        StoreOutcome::Duplicate(Disposition::Quarantined { quarantine_id }) => quarantine_id,
        other => panic!("expected a quarantined duplicate, got {other:?}"),
    }
}

/// The cells of the row of `output` whose first cell is `first`.
fn row<'a>(output: &'a str, first: &str) -> Vec<&'a str> {
    output
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in\n{output}"))
}

#[test]
fn operator_commands_name_keep_and_kill_records() {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let path = fixture.layout.segment_path(SEGMENT);
    let mut writer = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
    let first = instance(&mut fixture, "1.7.1", "1.7.1.1", "first;");
    let second = instance(&mut fixture, "1.7.1", "1.7.1.2", "second;");
    let first_again = instance(&mut fixture, "1.7.1", "1.7.1.1", "first, sent again;");
    let second_again = instance(&mut fixture, "1.7.1", "1.7.1.2", "second, sent again;");
    let places: Vec<RecordPlace> = [&first, &second, &first_again, &second_again]
        .into_iter()
        .map(|instance| append(&mut writer, SEGMENT, EPOCH, instance))
        .collect();
    writer.sync().unwrap();
    drop(writer);
    index_record(&fixture, &first, places[0], false);
    index_record(&fixture, &second, places[1], false);
    let released_id = quarantine_record(&fixture, &first_again, places[2]);
    let purged_id = quarantine_record(&fixture, &second_again, places[3]);
    fixture.close();
    let data = fixture.data_dir().to_str().unwrap().to_owned();
    let segment_bytes = std::fs::read(&path).unwrap();
    let place_text = |place: &RecordPlace| {
        format!(
            "{} (segment {SEGMENT:016x}, record at offset {}, {} bytes)",
            path.display(),
            place.offset,
            place.length
        )
    };

    // `show` and `quarantine show` print the record's place.
    let shown = run_ok(&["show", "1.7.1.1", "--data-dir", &data]);
    assert!(
        shown.contains(&format!("Record:              {}", place_text(&places[0]))),
        "{shown}"
    );
    assert!(!shown.contains("File:"), "{shown}");
    let held = run_ok(&[
        "quarantine",
        "show",
        &released_id.to_string(),
        "--data-dir",
        &data,
    ]);
    assert!(
        held.contains(&format!("Record:              {}", place_text(&places[2]))),
        "{held}"
    );
    assert!(
        held.lines()
            .any(|line| line.starts_with("Stored instance:")
                && line.contains(&place_text(&places[0]))),
        "{held}"
    );

    // `stats` lists the open segment: four live records, nothing dead.
    let all: u64 = places.iter().map(|place| place.length).sum();
    let stats = run_ok(&["stats", "--data-dir", &data]);
    let segments = stats.split("segments ").last().unwrap();
    assert_eq!(
        row(segments, &format!("{SEGMENT:016x}")),
        [
            format!("{SEGMENT:016x}").as_str(),
            "open",
            &SEGMENT_BYTES.to_string(),
            &all.to_string(),
            "4",
            "0"
        ],
        "{stats}"
    );

    // A release keeps the record where it is; the record it replaces is
    // dead bytes. A purge unlinks nothing. The segment's bytes never change.
    let released = run_ok(&[
        "quarantine",
        "release",
        &released_id.to_string(),
        "--data-dir",
        &data,
    ]);
    assert!(
        released.contains(&format!("is now stored as {}", place_text(&places[2])))
            && released.contains(&format!(
                "dead bytes of its record at {}",
                place_text(&places[0])
            )),
        "{released}"
    );
    let purged = run_ok(&[
        "quarantine",
        "purge",
        &purged_id.to_string(),
        "--data-dir",
        &data,
    ]);
    assert!(
        purged.contains(&format!(
            "its record {} is now dead bytes",
            place_text(&places[3])
        )),
        "{purged}"
    );
    assert!(
        std::fs::read(&path).unwrap() == segment_bytes,
        "segment bytes changed"
    );
    let shown = run_ok(&["show", "1.7.1.1", "--data-dir", &data]);
    assert!(shown.contains(&place_text(&places[2])), "{shown}");

    let stats = run_ok(&["stats", "--data-dir", &data]);
    let segments = stats.split("segments ").last().unwrap();
    let cells = row(segments, &format!("{SEGMENT:016x}"));
    assert_eq!(
        cells[3..],
        [
            (places[1].length + places[2].length).to_string(),
            "2".to_owned(),
            (places[0].length + places[3].length).to_string()
        ],
        "{stats}"
    );

    // The released record exports byte-exact; `media export` writes both
    // stored records with their data sets as stored.
    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("released.dcm");
    run_ok(&[
        "export-instance",
        "1.7.1.1",
        exported.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(std::fs::read(&exported).unwrap() == first_again.part10);
    let media = out.path().join("cd");
    let report = run_ok(&[
        "media",
        "export",
        "--out",
        media.to_str().unwrap(),
        "--study",
        "1.7",
        "--data-dir",
        &data,
    ]);
    assert!(report.contains("exported 2 instances"), "{report}");
    let mut written: Vec<Vec<u8>> = walk(&media)
        .into_iter()
        .filter(|file| file.file_name().unwrap() != "DICOMDIR")
        .map(|file| std::fs::read(file).unwrap())
        .collect();
    assert_eq!(written.len(), 2, "{report}");
    for instance in [&first_again, &second] {
        let dataset = &instance.part10[instance.record.dataset_offset_bytes as usize..];
        let found = written.iter().position(|file| file.ends_with(dataset));
        assert!(
            found.is_some(),
            "no exported file holds {:?}",
            instance.triplet
        );
        written.remove(found.unwrap());
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
