use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use super::*;

const SIZE: u64 = SEGMENT_BYTES_MIN;

fn uids(n: u32) -> RecordUids {
    RecordUids {
        study: "1.2.3".into(),
        series: "1.2.3.4".into(),
        sop: format!("1.2.3.4.{n}"),
    }
}

/// A Part 10-like payload of `len` bytes whose content depends on `n`.
fn payload(n: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 ^ n.wrapping_mul(31)) as u8)
        .collect()
}

fn writer(dir: &Path) -> SegmentWriter {
    SegmentWriter::create(&dir.join("0.seg"), SIZE).unwrap()
}

/// Appends the record of instance `n` with a payload of `len` bytes; its
/// offset.
fn append(segment: &mut SegmentWriter, epoch: u64, n: u32, len: usize) -> u64 {
    segment
        .append(&encode_record(epoch, &uids(n), &payload(n, len)).unwrap())
        .unwrap()
}

/// The segment opened to damage it as a crash would.
fn for_damage(dir: &Path) -> File {
    OpenOptions::new()
        .write(true)
        .open(dir.join("0.seg"))
        .unwrap()
}

fn reader(dir: &Path) -> File {
    File::open(dir.join("0.seg")).unwrap()
}

#[test]
fn records_read_back_byte_exact_and_scan_finds_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    assert_eq!(std::fs::metadata(segment.path()).unwrap().len(), SIZE);
    let sizes = [1usize, 4095, 4096, 40_000, 0];
    let mut offsets = Vec::new();
    for (n, len) in sizes.iter().enumerate() {
        let record = encode_record(7, &uids(n as u32), &payload(n as u32, *len)).unwrap();
        offsets.push(segment.append(&record).unwrap());
    }
    segment.sync().unwrap();
    let file = reader(dir.path());
    for (n, (len, offset)) in sizes.iter().zip(&offsets).enumerate() {
        assert_eq!(offset % RECORD_ALIGN, 0);
        let (head, bytes) = read_record(&file, *offset, SIZE).unwrap();
        assert_eq!(bytes, payload(n as u32, *len));
        assert_eq!(head.uids, uids(n as u32));
        assert_eq!(head.epoch, 7);
    }
    let scan = scan(&file, 0, SIZE, 0).unwrap();
    assert_eq!(
        scan.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        offsets
    );
    assert_eq!(scan.end, segment.append_position());
    assert_eq!(scan.stopped, Some(RecordError::NoRecord));
}

#[test]
fn a_torn_payload_ends_the_scan_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    let first = append(&mut segment, 1, 1, 9000);
    let second = append(&mut segment, 1, 2, 9000);
    append(&mut segment, 1, 3, 100);
    drop(segment);
    // The second record's last block never reached the disk.
    let file = for_damage(dir.path());
    file.write_all_at(&[0u8; 4096], second + 8192).unwrap();
    let scan = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    assert_eq!(scan.records.len(), 1);
    assert_eq!(scan.records[0].offset, first);
    assert_eq!(scan.end, second, "cut at the torn record");
    assert_eq!(scan.stopped, Some(RecordError::PayloadChecksum));
    let error = read_record(&reader(dir.path()), second, SIZE).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn a_torn_header_ends_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    append(&mut segment, 1, 1, 10);
    let second = append(&mut segment, 1, 2, 10);
    drop(segment);
    let file = for_damage(dir.path());
    // A UID byte of the second header changed.
    file.write_all_at(b"9", second + 64).unwrap();
    let scan = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    assert_eq!(scan.records.len(), 1);
    assert_eq!(scan.end, second);
    assert_eq!(scan.stopped, Some(RecordError::HeaderChecksum));
}

#[test]
fn a_record_claiming_more_than_the_segment_is_short_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    let record = encode_record(1, &uids(1), &payload(1, 3 * 4096)).unwrap();
    // Placed so that it runs past the end of the segment.
    segment.append = SIZE - 4096;
    assert!(!segment.fits(record.as_slice().len() as u64));
    assert_eq!(
        segment.append(&record).unwrap_err().kind(),
        io::ErrorKind::StorageFull
    );
    let file = for_damage(dir.path());
    file.write_all_at(&record.as_slice()[..4096], SIZE - 4096)
        .unwrap();
    let scan = scan(&reader(dir.path()), SIZE - 4096, SIZE, 0).unwrap();
    assert!(scan.records.is_empty());
    assert!(matches!(scan.stopped, Some(RecordError::Short { .. })));
    assert_eq!(scan.end, SIZE - 4096);
}

#[test]
fn a_stale_record_after_a_cut_is_not_taken_for_a_new_one() {
    // Run 1 wrote A (torn) then B (whole, never acknowledged: its batch's
    // flush had not ended). Recovery cut at A; run 2 wrote C exactly where
    // A was, as long as A. B now follows C and is whole: the epoch rule
    // ends the scan there.
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    let a = append(&mut segment, 1, 1, 5000);
    append(&mut segment, 1, 2, 5000);
    drop(segment);
    let file = for_damage(dir.path());
    file.write_all_at(&[0xff; 16], a + 4096).unwrap();
    let cut = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    assert_eq!(cut.end, a);
    let mut segment = SegmentWriter::open(&dir.path().join("0.seg"), cut.end).unwrap();
    append(&mut segment, 2, 3, 5000);
    segment.sync().unwrap();
    let scan = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    assert_eq!(scan.records.len(), 1);
    assert_eq!(scan.records[0].head.uids, uids(3));
    assert_eq!(
        scan.stopped,
        Some(RecordError::Epoch {
            previous: 2,
            found: 1
        })
    );
}

#[test]
fn opening_at_a_position_outside_the_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(writer(dir.path()));
    let path = dir.path().join("0.seg");
    assert!(SegmentWriter::open(&path, 100).is_err());
    assert!(SegmentWriter::open(&path, SIZE + RECORD_ALIGN).is_err());
    assert_eq!(
        SegmentWriter::open(&path, SIZE).unwrap().append_position(),
        SIZE
    );
}

#[test]
fn creating_over_an_existing_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(writer(dir.path()));
    let error = SegmentWriter::create(&dir.path().join("0.seg"), SIZE).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
}

#[test]
fn segments_work_where_the_file_system_may_refuse_o_direct() {
    // /dev/shm is tmpfs: O_DIRECT is refused before Linux 6.6 (the writer
    // then falls back to buffered writes), taken since.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut segment = writer(dir.path());
    let offset = append(&mut segment, 1, 1, 777);
    segment.sync().unwrap();
    let (_, bytes) = read_record(&reader(dir.path()), offset, SIZE).unwrap();
    assert_eq!(bytes, payload(1, 777));
}

#[test]
fn ext4_takes_o_direct() {
    // The data directory's usual file system (the checkout is on ext4 here,
    // where `./sluice-data` would be): writes bypass the page cache. Not
    // under `target/`, which a CARGO_TARGET_DIR elsewhere leaves absent.
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    assert!(writer(dir.path()).is_direct());
}

#[test]
fn uids_over_64_bytes_are_refused() {
    let mut long = uids(1);
    long.sop = "1".repeat(65);
    assert!(matches!(
        encode_record(1, &long, b"x"),
        Err(RecordError::Length(_))
    ));
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_head(&bytes);
        let mut with_magic = RECORD_MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode_head(&with_magic);
    }

    #[test]
    fn a_changed_header_byte_is_detected(at in 0usize..85, bit in 0u8..8) {
        let record = encode_record(3, &uids(9), b"payload").unwrap();
        let mut bytes = record.as_slice().to_vec();
        bytes[at] ^= 1 << bit;
        prop_assert!(decode_head(&bytes).is_err());
    }
}

/// A writer over the segment at `dir` whose file refuses writes (opened
/// read-only), so every write fails as a device error would.
fn failing_writer(dir: &Path) -> SegmentWriter {
    drop(writer(dir));
    let path = dir.join("0.seg");
    SegmentWriter {
        file: File::open(&path).unwrap(),
        path,
        size: SIZE,
        append: 0,
        direct: false,
        sealed: false,
    }
}

#[test]
fn a_failed_append_seals_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = failing_writer(dir.path());
    let record = encode_record(1, &uids(1), &payload(1, 100)).unwrap();
    assert!(segment.append(&record).is_err());
    assert!(segment.is_sealed());
    // The failed record's place stays reserved (it may hold part of it) and
    // nothing is reserved after it.
    assert_eq!(segment.append_position(), RECORD_ALIGN);
    assert!(!segment.fits(RECORD_ALIGN));
    assert_eq!(segment.reserve(RECORD_ALIGN), None);
    let again = segment.append(&record).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::StorageFull);
}

#[test]
fn a_failed_write_at_a_reserved_place_seals_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = failing_writer(dir.path());
    let record = encode_record(1, &uids(1), &payload(1, 100)).unwrap();
    let offset = segment.reserve(RECORD_ALIGN).unwrap();
    assert!(!segment.is_sealed());
    assert!(segment.write_at(&record, offset).is_err());
    assert!(segment.is_sealed());
    assert_eq!(segment.reserve(RECORD_ALIGN), None);
    assert_eq!(segment.append_position(), RECORD_ALIGN);
}

#[test]
fn a_sealed_segment_reserves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    append(&mut segment, 1, 1, 100);
    segment.seal();
    assert!(segment.is_sealed());
    assert_eq!(segment.reserve(RECORD_ALIGN), None);
    let file = reader(dir.path());
    assert_eq!(scan(&file, 0, SIZE, 0).unwrap().records.len(), 1);
}

/// The ingest path's encoding in its receive buffer gives the same bytes as
/// `encode_record`, whatever the payload's length and the buffer's spare
/// room (stale bytes past the payload included).
#[test]
fn encoding_in_place_equals_encoding_a_copy() {
    for len in [0usize, 1, 100, 4096 - 300, 4096, 10_000, 70_000] {
        let uids = uids(len as u32);
        let payload = payload(len as u32, len);
        let expected = encode_record(42, &uids, &payload).unwrap();
        let mut buf = AlignedBuf::zeroed(PAYLOAD_ROOM + len + 3 * 4096);
        buf.as_mut_slice().fill(0xEE);
        buf.as_mut_slice()[PAYLOAD_ROOM..PAYLOAD_ROOM + len].copy_from_slice(&payload);
        let body = crate::store::layout::dataset_checksum(&payload);
        let record_bytes = encode_in_place(&mut buf, len, 42, &uids, 0, body).unwrap();
        assert_eq!(record_bytes, expected.len() as u64, "length {len}");
        assert_eq!(buf.as_slice(), expected.as_slice(), "length {len}");
    }
    let mut buf = AlignedBuf::zeroed(PAYLOAD_ROOM + 10);
    let long = RecordUids {
        sop: "1".repeat(65),
        ..uids(0)
    };
    let body = crate::store::layout::dataset_checksum(&[0; 10]);
    assert!(encode_in_place(&mut buf, 10, 1, &long, 0, body).is_err());
}

/// The payload checksum covers every byte whatever the split: a record
/// encoded in place with its checksum split anywhere reads back and scans
/// valid, and a changed byte on either side of the split is caught.
#[test]
fn a_split_checksum_covers_both_sides_of_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = writer(dir.path());
    let len = 10_000;
    let payload = payload(3, len);
    let mut offsets = Vec::new();
    for split in [0, 1, 300, len - 1, len] {
        let mut buf = AlignedBuf::zeroed(PAYLOAD_ROOM + len);
        buf.as_mut_slice()[PAYLOAD_ROOM..PAYLOAD_ROOM + len].copy_from_slice(&payload);
        let body = crate::store::layout::dataset_checksum(&payload[split..]);
        encode_in_place(&mut buf, len, 1, &uids(3), split, body).unwrap();
        let head = decode_head(buf.as_slice()).unwrap();
        assert_eq!(head.payload_split, split as u64);
        assert_eq!(
            head.payload_checksum,
            payload_checksum(&payload, split as u64)
        );
        for changed in [0, split.saturating_sub(1), split.min(len - 1), len - 1] {
            let mut damaged = payload.clone();
            damaged[changed] ^= 1;
            assert_ne!(
                payload_checksum(&damaged, split as u64),
                head.payload_checksum,
                "split {split}, byte {changed}"
            );
        }
        offsets.push(segment.append(&buf).unwrap());
    }
    let scanned = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    assert_eq!(scanned.stopped, Some(RecordError::NoRecord));
    assert_eq!(
        scanned
            .records
            .iter()
            .map(|record| record.offset)
            .collect::<Vec<_>>(),
        offsets
    );
    for offset in offsets {
        let (_, bytes) = read_record(&reader(dir.path()), offset, SIZE).unwrap();
        assert_eq!(bytes, payload);
    }
}

/// `create_zeroed` leaves no unwritten extent (`create` does: the reason
/// for it), reads as zeros, scans as an empty segment, and records written
/// into it scan back with zeros after them (docs/design/segments.md,
/// "Written blocks").
#[test]
fn a_zeroed_segment_has_its_blocks_written_and_reads_as_a_fresh_one() {
    // On ext4 (the crate's own directory): tmpfs has no unwritten extents.
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let fallocated = SegmentWriter::create(&dir.path().join("1.seg"), SIZE).unwrap();
    assert!(has_unwritten_extents(fallocated.path()).unwrap());
    let mut zeroed =
        SegmentWriter::create_zeroed(&dir.path().join("0.seg"), SIZE, &|| false).unwrap();
    assert!(!has_unwritten_extents(zeroed.path()).unwrap());
    assert_eq!(std::fs::metadata(zeroed.path()).unwrap().len(), SIZE);
    let empty = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    assert_eq!(empty.records, Vec::new());
    assert_eq!(empty.stopped, Some(RecordError::NoRecord));
    let first = append(&mut zeroed, 3, 1, 40_000);
    let second = append(&mut zeroed, 3, 2, 5);
    zeroed.sync().unwrap();
    let found = scan(&reader(dir.path()), 0, SIZE, 0).unwrap();
    let offsets: Vec<u64> = found.records.iter().map(|record| record.offset).collect();
    assert_eq!(offsets, vec![first, second]);
    assert_eq!(found.stopped, Some(RecordError::NoRecord));
    let mut tail = vec![1u8; (SIZE - found.end) as usize];
    read_full(&reader(dir.path()), &mut tail, found.end).unwrap();
    assert!(tail.iter().all(|&byte| byte == 0));
}

/// An abandoned zero fill removes its file.
#[test]
fn an_abandoned_zero_fill_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.seg");
    let error = SegmentWriter::create_zeroed(&path, SIZE, &|| true).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::Interrupted);
    assert!(!path.exists());
}
