//! Bad DICOMDIRs: each defect is reported with where it is, the rest of the
//! directory is still read where it can be, and nothing panics.

use sluice_media::{read_dicomdir, DirectoryError, FileIdError, IssueKind};

use crate::support::{pydicom_test_file, synthetic_dicomdir};

/// Offset of the first occurrence of `needle`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Offset of the value of element (0004,xxxx) of the record at `record`.
fn field(bytes: &[u8], record: usize, element: u16) -> usize {
    let tag = [0x04, 0x00, element as u8, (element >> 8) as u8];
    record + find(&bytes[record..], &tag) + 8
}

#[test]
fn a_good_directory_has_no_issue() {
    let good = synthetic_dicomdir(2, 2, 2, 3);
    let directory = read_dicomdir(&good).unwrap();
    assert!(directory.issues.is_empty(), "{:#?}", directory.issues);
    assert_eq!(directory.patients.len(), 2);
    assert_eq!(directory.studies.len(), 4);
    assert_eq!(directory.series.len(), 8);
    assert_eq!(directory.instances.len(), 24);
}

#[test]
fn broken_offsets_loops_and_bad_records_are_reported_where_they_are() {
    let good = synthetic_dicomdir(2, 1, 1, 3);
    let first_record = find(&good, &[0xFE, 0xFF, 0x00, 0xE0]);
    let first_root_at = find(&good, &[0x04, 0x00, 0x00, 0x12]) + 8;

    // The root offset points at no record: nothing is reachable.
    let mut bytes = good.clone();
    put_u32(&mut bytes, first_root_at, 12_345);
    let directory = read_dicomdir(&bytes).unwrap();
    assert!(directory.instances.is_empty());
    assert!(directory
        .issues
        .iter()
        .any(|issue| matches!(issue.kind, IssueKind::BadOffset { value: 12_345, .. })));
    assert!(directory
        .issues
        .iter()
        .any(|issue| matches!(issue.kind, IssueKind::Unreachable { count: 12 })));
    let message = directory.issues[0].to_string();
    assert!(message.contains("12345"), "{message}");

    // A record whose next offset is itself: a loop, reported once.
    let mut bytes = good.clone();
    let next = field(&bytes, first_record, 0x1400);
    put_u32(&mut bytes, next, first_record as u32);
    let directory = read_dicomdir(&bytes).unwrap();
    assert!(directory
        .issues
        .iter()
        .any(|issue| issue.offset == first_record as u64
            && matches!(issue.kind, IssueKind::ReachedTwice { .. })));
    // The first patient's instances are still found.
    assert_eq!(directory.instances.len(), 3);

    // A lower-level offset into the middle of a record.
    let mut bytes = good.clone();
    let lower = field(&bytes, first_record, 0x1420);
    put_u32(&mut bytes, lower, first_record as u32 + 3);
    let directory = read_dicomdir(&bytes).unwrap();
    assert!(directory
        .issues
        .iter()
        .any(|issue| issue.offset == first_record as u64
            && matches!(issue.kind, IssueKind::BadOffset { .. })));

    // An unknown record type (same length as PATIENT).
    let mut bytes = good.clone();
    let at = find(&bytes, b"PATIENT ");
    bytes[at..at + 8].copy_from_slice(b"FANCY   ");
    let directory = read_dicomdir(&bytes).unwrap();
    assert!(directory
        .issues
        .iter()
        .any(|issue| matches!(&issue.kind, IssueKind::UnknownRecordType(name) if name == "FANCY")));
    assert_eq!(directory.patients.len(), 1);

    // A File ID that would leave the File-set: reported, not returned.
    let mut bytes = good.clone();
    let at = find(&bytes, b"DICOM\\PA000001\\ST000001\\SE000001\\IM000002");
    bytes[at + 6..at + 14].copy_from_slice(b"..\\ETC__");
    let directory = read_dicomdir(&bytes).unwrap();
    assert_eq!(directory.instances.len(), 5);
    assert!(directory.issues.iter().any(|issue| matches!(
        issue.kind,
        IssueKind::BadFileId(FileIdError::IllegalCharacter { character: '.', .. })
    )));

    // An inactive record is skipped with its subtree.
    let mut bytes = good.clone();
    let in_use = field(&bytes, first_record, 0x1410);
    bytes[in_use..in_use + 2].copy_from_slice(&[0, 0]);
    let directory = read_dicomdir(&bytes).unwrap();
    assert_eq!(directory.instances.len(), 3);
    assert!(directory
        .issues
        .iter()
        .any(|issue| matches!(issue.kind, IssueKind::Inactive)));

    // A missing Type 1 key.
    let mut bytes = good.clone();
    let at = find(&bytes, &[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0]);
    bytes[at + 8..at + 10].copy_from_slice(b"  ");
    let directory = read_dicomdir(&bytes).unwrap();
    assert!(directory.issues.iter().any(|issue| matches!(
        issue.kind,
        IssueKind::MissingKey {
            record_type: "SERIES",
            ..
        }
    )));
    assert_eq!(directory.instances.len(), 6);
}

#[test]
fn truncated_directories_keep_what_was_read() {
    let good = synthetic_dicomdir(1, 1, 1, 4);
    // Up to the Directory Record Sequence's header, a cut file is not a
    // readable DICOMDIR at all.
    let first_record = find(&good, &[0xFE, 0xFF, 0x00, 0xE0]);
    let mut previous = 0;
    for cut in 0..good.len() {
        match read_dicomdir(&good[..cut]) {
            Ok(directory) => {
                // Records are lost from the end, never invented; every cut
                // short of the end is reported.
                assert!(directory.instances.len() <= 4);
                assert!(directory.instances.len() >= previous);
                previous = directory.instances.len();
                if cut < good.len() - 8 {
                    assert!(!directory.issues.is_empty(), "cut at {cut}");
                }
            }
            Err(_) if cut < first_record => {}
            Err(other) => panic!("cut at {cut}: {other}"),
        }
    }
    assert_eq!(previous, 4);
}

#[test]
fn files_that_are_not_directories_are_errors() {
    let ct = std::fs::read(pydicom_test_file("CT_small.dcm")).unwrap();
    assert!(matches!(
        read_dicomdir(&ct),
        Err(DirectoryError::NotADirectory(_))
    ));
    assert!(matches!(
        read_dicomdir(b"not dicom"),
        Err(DirectoryError::Meta(_))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xD1C0_D1E5),
        ..proptest::prelude::ProptestConfig::default()
    })]
    /// Mutated directories never panic, and every instance returned has a
    /// valid File ID.
    #[test]
    fn mutated_directories_never_panic(
        mutations in proptest::collection::vec((0usize..4000, proptest::prelude::any::<u8>()), 1..12),
    ) {
        let mut bytes = synthetic_dicomdir(2, 1, 2, 2);
        let length = bytes.len();
        for (at, byte) in mutations {
            bytes[at % length] = byte;
        }
        if let Ok(directory) = read_dicomdir(&bytes) {
            for instance in &directory.instances {
                let value = instance.file_id.to_value();
                proptest::prop_assert!(!value.contains('.'));
                proptest::prop_assert!(!value.contains('/'));
            }
        }
    }
}
