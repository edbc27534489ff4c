//! Record locations (schema 6): the place of an instance stored as a record
//! in a segment follows its entry through every write that makes, moves or
//! drops an entry, and each segment's live bytes and indexed end follow.

use sluice_index::{
    DuplicatePolicy, FileId, Index, Location, RecordPlace, SegmentState, StoreOutcome,
    StoreRequest, Triplet, WriteOp, WriteOutcome,
};

use crate::common::{instance, open};

const RECORD: u64 = 8192;

fn place(segment: u64, n: u64) -> RecordPlace {
    RecordPlace {
        segment,
        offset: n * RECORD,
        length: RECORD,
    }
}

/// A store of `sop` (file id `file_id`) as the record `place`.
fn store_record(sop: &str, file_id: u128, seed: u8, place: RecordPlace) -> StoreRequest {
    let mut request = StoreRequest::new(instance("1.2.3", "1.2.3.4", sop, file_id, seed));
    request.location = Location::Record(place);
    request
}

fn run(index: &Index, ops: Vec<WriteOp>) -> Vec<WriteOutcome> {
    index
        .writer()
        .execute(ops)
        .expect("batch")
        .into_iter()
        .map(|item| item.expect("valid"))
        .collect()
}

fn location(index: &Index, file_id: u128) -> Location {
    index
        .read()
        .expect("read")
        .location(FileId(file_id))
        .expect("location")
}

fn segment(index: &Index, id: u64) -> SegmentState {
    let read = index.read().expect("read");
    let report = read.check_consistency(20).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    read.segment(id).expect("segment").expect("known")
}

/// A segment indexed to the end of its `last`th record (counting from 1),
/// with `records` live.
fn live(last: u64, records: u64) -> SegmentState {
    SegmentState {
        sealed: false,
        indexed_end: last * RECORD,
        indexed_last: (last - 1) * RECORD,
        live_bytes: records * RECORD,
        live_records: records,
    }
}

#[test]
fn a_stored_record_is_placed_and_counted_and_a_file_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    // Committed out of offset order: the indexed end is the furthest.
    run(
        &index,
        vec![
            WriteOp::Store(store_record("1.2.3.4.2", 2, 2, place(7, 1))),
            WriteOp::Store(store_record("1.2.3.4.1", 1, 1, place(7, 0))),
            WriteOp::Store(StoreRequest::new(instance(
                "1.2.3",
                "1.2.3.4",
                "1.2.3.4.3",
                3,
                3,
            ))),
        ],
    );
    assert_eq!(location(&index, 1), Location::Record(place(7, 0)));
    assert_eq!(location(&index, 2), Location::Record(place(7, 1)));
    assert_eq!(location(&index, 3), Location::File);
    assert_eq!(segment(&index, 7), live(2, 2));
    assert_eq!(
        index.read().expect("read").segments().expect("segments"),
        vec![(7, live(2, 2))]
    );

    run(
        &index,
        vec![WriteOp::SealSegment(7), WriteOp::SealSegment(8)],
    );
    let sealed = segment(&index, 7);
    assert!(sealed.sealed);
    assert_eq!(sealed.live_records, 2);
    assert_eq!(
        segment(&index, 8),
        SegmentState {
            sealed: true,
            ..SegmentState::default()
        }
    );
}

#[test]
fn removal_replacement_and_rejection_leave_dead_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    run(
        &index,
        vec![
            WriteOp::Store(store_record("1.2.3.4.1", 1, 1, place(1, 0))),
            WriteOp::Store(store_record("1.2.3.4.2", 2, 2, place(1, 1))),
        ],
    );
    // A replacing duplicate: the old record is dead, the new one live.
    let mut replacing = store_record("1.2.3.4.1", 11, 5, place(1, 2));
    replacing.duplicate_policy = DuplicatePolicy::Replace;
    // A rejected duplicate: its record is never placed.
    let mut rejected = store_record("1.2.3.4.2", 12, 6, place(1, 3));
    rejected.duplicate_policy = DuplicatePolicy::Reject;
    run(
        &index,
        vec![WriteOp::Store(replacing), WriteOp::Store(rejected)],
    );
    assert_eq!(location(&index, 1), Location::File);
    assert_eq!(location(&index, 11), Location::Record(place(1, 2)));
    assert_eq!(location(&index, 12), Location::File);
    assert_eq!(segment(&index, 1), live(3, 2));

    let removed = run(
        &index,
        vec![WriteOp::Remove(Triplet::new(
            "1.2.3",
            "1.2.3.4",
            "1.2.3.4.2",
        ))],
    );
    assert!(matches!(&removed[0], WriteOutcome::Removed(Some(_))));
    assert_eq!(location(&index, 2), Location::File);
    assert_eq!(segment(&index, 1), live(3, 1));
}

#[test]
fn one_transaction_s_records_in_two_segments_are_counted_in_each() {
    // The writer keeps each segment's state for the transaction and writes
    // it once, at the end: every write of the transaction must show in it.
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    run(
        &index,
        vec![
            WriteOp::Store(store_record("1.2.3.4.1", 1, 1, place(5, 0))),
            WriteOp::Store(store_record("1.2.3.4.2", 2, 2, place(6, 0))),
            WriteOp::Store(store_record("1.2.3.4.3", 3, 3, place(5, 2))),
            WriteOp::Remove(Triplet::new("1.2.3", "1.2.3.4", "1.2.3.4.1")),
            WriteOp::Store(store_record("1.2.3.4.4", 4, 4, place(5, 1))),
            WriteOp::SealSegment(6),
        ],
    );
    assert_eq!(segment(&index, 5), live(3, 2));
    assert_eq!(
        segment(&index, 6),
        SegmentState {
            sealed: true,
            ..live(1, 1)
        }
    );
    // The next transaction starts from what the last one wrote.
    run(
        &index,
        vec![WriteOp::Store(store_record("1.2.3.4.5", 5, 5, place(5, 3)))],
    );
    assert_eq!(segment(&index, 5), live(4, 3));
    index.close();
}

#[test]
fn a_quarantined_record_keeps_its_place_through_release_and_loses_it_at_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    run(
        &index,
        vec![
            WriteOp::Store(store_record("1.2.3.4.1", 1, 1, place(3, 0))),
            WriteOp::Store(store_record("1.2.3.4.1", 2, 2, place(3, 1))),
            WriteOp::Store(store_record("1.2.3.4.1", 3, 3, place(3, 2))),
        ],
    );
    assert_eq!(location(&index, 2), Location::Record(place(3, 1)));
    assert_eq!(segment(&index, 3), live(3, 3));
    let entries = index
        .read()
        .expect("read")
        .quarantine_entries(None, 10)
        .expect("quarantine")
        .items;
    let ids: Vec<(u64, FileId)> = entries
        .iter()
        .map(|entry| (entry.id, entry.instance.record.file_id))
        .collect();
    assert_eq!(
        ids.iter().map(|(_, file)| *file).collect::<Vec<_>>(),
        [FileId(2), FileId(3)]
    );

    // Released: file 2 replaces file 1 as the stored instance, its place kept.
    let released = run(&index, vec![WriteOp::ReleaseQuarantine(ids[0].0)]);
    assert!(matches!(&released[0], WriteOutcome::Released(Some(_))));
    assert_eq!(location(&index, 2), Location::Record(place(3, 1)));
    assert_eq!(location(&index, 1), Location::File);
    assert_eq!(segment(&index, 3), live(3, 2));

    // Purged: file 3's record is dead.
    run(&index, vec![WriteOp::PurgeQuarantine(ids[1].0)]);
    assert_eq!(location(&index, 3), Location::File);
    assert_eq!(segment(&index, 3), live(3, 1));
    let outcome = run(
        &index,
        vec![WriteOp::Store(store_record("1.2.3.4.9", 9, 9, place(3, 3)))],
    );
    assert_eq!(outcome[0], WriteOutcome::Store(StoreOutcome::Stored));
    assert_eq!(segment(&index, 3), live(4, 2));
}

#[test]
fn a_demoted_record_keeps_its_place_when_held_and_is_dead_when_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let held = store_record("1.2.3.4.1", 1, 1, place(7, 0));
    let dropped = store_record("1.2.3.4.2", 2, 2, place(7, 1));
    let (held_instance, dropped_instance) = (held.instance.clone(), dropped.instance.clone());
    run(&index, vec![WriteOp::Store(held), WriteOp::Store(dropped)]);
    assert_eq!(segment(&index, 7), live(2, 2));
    let outcomes = run(
        &index,
        vec![
            WriteOp::Demote {
                instance: held_instance,
                hold: Some(sluice_index::QuarantineReason::Duplicate),
            },
            WriteOp::Demote {
                instance: dropped_instance,
                hold: None,
            },
        ],
    );
    assert!(
        matches!(
            outcomes[..],
            [
                WriteOutcome::Demoted {
                    removed: true,
                    quarantine_id: Some(_)
                },
                WriteOutcome::Demoted {
                    removed: true,
                    quarantine_id: None
                }
            ]
        ),
        "{outcomes:?}"
    );
    // Held in quarantine: the same bytes, still live; not kept: dead.
    assert_eq!(location(&index, 1), Location::Record(place(7, 0)));
    assert_eq!(location(&index, 2), Location::File);
    assert_eq!(segment(&index, 7), live(2, 1));
}

/// Schema 8: a sealed segment is recorded as uploaded (its object), then
/// evicted; a segment not sealed cannot be uploaded, one not uploaded
/// cannot be evicted; a second upload record keeps the eviction.
#[test]
fn a_sealed_segment_is_recorded_uploaded_then_evicted() {
    use sluice_index::{InvalidInput, SegmentObject};
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    run(
        &index,
        vec![WriteOp::Store(store_record("1.2.3.4.1", 1, 1, place(3, 0)))],
    );
    let object = SegmentObject {
        key: "sluice/node-1/segments/0000000000000003.seg".into(),
        size_bytes: 1 << 20,
        evicted: false,
    };
    let uploaded = WriteOp::SegmentUploaded {
        segment: 3,
        object: object.clone(),
    };
    let refused = index
        .writer()
        .execute(vec![uploaded.clone(), WriteOp::SegmentEvicted(3)])
        .expect("batch");
    assert_eq!(
        refused,
        vec![
            Err(InvalidInput::SegmentNotSealed { segment: 3 }),
            Err(InvalidInput::SegmentNotUploaded { segment: 3 }),
        ]
    );
    assert_eq!(index.read().unwrap().segment_object(3).unwrap(), None);
    let evicted = SegmentObject {
        evicted: true,
        ..object.clone()
    };
    assert_eq!(
        run(
            &index,
            vec![
                WriteOp::SealSegment(3),
                uploaded.clone(),
                WriteOp::SegmentEvicted(3),
                uploaded,
            ]
        ),
        vec![
            WriteOutcome::SegmentSealed,
            WriteOutcome::SegmentObject(object),
            WriteOutcome::SegmentObject(evicted.clone()),
            WriteOutcome::SegmentObject(evicted.clone()),
        ]
    );
    index.close();
    let index = open(dir.path());
    let read = index.read().expect("read");
    assert_eq!(read.segment_object(3).unwrap(), Some(evicted.clone()));
    assert_eq!(read.segment_objects().unwrap(), vec![(3, evicted)]);
    // The record's place is untouched by its segment's eviction.
    assert_eq!(location(&index, 1), Location::Record(place(3, 0)));
}

#[test]
fn a_relocation_moves_the_place_and_counts_and_refuses_a_changed_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    run(
        &index,
        vec![WriteOp::Store(StoreRequest::new(instance(
            "1.2.3",
            "1.2.3.4",
            "1.2.3.4.1",
            1,
            1,
        )))],
    );
    // File to record: the place is recorded and counted live.
    let to = Location::Record(place(9, 0));
    let moved = run(
        &index,
        vec![WriteOp::Relocate {
            file_id: FileId(1),
            from: Location::File,
            to,
        }],
    );
    assert_eq!(moved, vec![WriteOutcome::Relocated(to)]);
    assert_eq!(location(&index, 1), to);
    assert_eq!(segment(&index, 9), live(1, 1));
    // Repeated (the caller's view is stale): refused, nothing changes.
    let again = index
        .writer()
        .execute(vec![WriteOp::Relocate {
            file_id: FileId(1),
            from: Location::File,
            to: Location::Record(place(9, 1)),
        }])
        .expect("batch");
    assert!(matches!(
        again[0],
        Err(sluice_index::InvalidInput::LocationChanged { file_id: 1 })
    ));
    assert_eq!(location(&index, 1), to);
    // A file id no entry names: refused.
    let unknown = index
        .writer()
        .execute(vec![WriteOp::Relocate {
            file_id: FileId(77),
            from: Location::File,
            to,
        }])
        .expect("batch");
    assert!(unknown[0].is_err());
    // Record back to file: the place goes, the record is dead.
    run(
        &index,
        vec![WriteOp::Relocate {
            file_id: FileId(1),
            from: to,
            to: Location::File,
        }],
    );
    assert_eq!(location(&index, 1), Location::File);
    let state = segment(&index, 9);
    assert_eq!((state.live_records, state.live_bytes), (0, 0));
    assert_eq!(state.indexed_end, RECORD);
}
