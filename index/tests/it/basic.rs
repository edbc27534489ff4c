//! Behaviour of the index, one feature at a time.

use sluice_index::{
    Batch, CommitmentRecord, CommitmentState, ConflictPolicy, Disposition, DuplicatePolicy, FileId,
    FileRole, InDoubtEntry, IndexError, InvalidInput, QuarantineReason, SopPresence, StoreOutcome,
    StoreRequest, StudyQuery, SubmitError, Triplet, WriteOp, WriteOutcome,
};

use crate::common::{instance, open, store, TEST_DIRECTORY};

fn outcome(result: &sluice_index::ItemResult) -> &StoreOutcome {
    match result {
        Ok(WriteOutcome::Store(outcome)) => outcome,
        other => panic!("expected a store outcome, got {other:?}"),
    }
}

#[test]
fn stores_and_finds_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let results = index
        .writer()
        .execute(vec![
            store("1.1", "1.1.1", "1.1.1.1", 1, 1),
            store("1.1", "1.1.1", "1.1.1.2", 2, 2),
            store("1.1", "1.1.2", "1.1.2.1", 3, 3),
        ])
        .expect("batch");
    assert!(results
        .iter()
        .all(|result| *outcome(result) == StoreOutcome::Stored));

    let read = index.read().expect("read");
    let record = read
        .instance("1.1", "1.1.1", "1.1.1.2")
        .expect("lookup")
        .expect("present");
    assert_eq!(record.file_id, FileId(2));
    assert!(read.contains("1.1", "1.1.1", "1.1.1.1").expect("contains"));
    assert!(!read.contains("1.1", "1.1.1", "9.9").expect("contains"));
    let by_sop = read
        .instance_by_sop("1.1.2.1")
        .expect("by sop")
        .expect("present");
    assert_eq!(by_sop.triplet, Triplet::new("1.1", "1.1.2", "1.1.2.1"));
    assert_eq!(by_sop.record.file_id, FileId(3));
    assert_eq!(
        read.sop_presence("1.1.2.1", "1.2.840.10008.5.1.4.1.1.2")
            .expect("presence"),
        SopPresence::Stored
    );
    assert_eq!(
        read.sop_presence("1.1.2.1", "1.2.840.10008.5.1.4.1.1.4")
            .expect("presence"),
        SopPresence::ClassMismatch {
            stored_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into()
        }
    );
    assert_eq!(
        read.sop_presence("7.7", "1.2").expect("presence"),
        SopPresence::Absent
    );
    assert_eq!(
        read.sop_presence("", "1.2").expect("presence"),
        SopPresence::Absent
    );

    let study = read.study("1.1").expect("study").expect("present");
    assert_eq!((study.number_of_series, study.number_of_instances), (2, 3));
    let expected_modalities = {
        let mut modalities = vec![
            crate::common::series_attributes("1.1.1").modality,
            crate::common::series_attributes("1.1.2").modality,
        ];
        modalities.sort();
        modalities.dedup();
        modalities
    };
    assert_eq!(study.modalities_in_study, expected_modalities);
    let series = read.series_of_study("1.1", 10).expect("series");
    assert_eq!(series.items.len(), 2);
    assert_eq!(series.items[0].series_instance_uid, "1.1.1");
    assert_eq!(series.items[0].record.number_of_instances, 2);
    let limited = read.series_of_study("1.1", 1).expect("series");
    assert!(limited.truncated && limited.items.len() == 1);
    let instances = read.instances_of_study("1.1", None, 10).expect("instances");
    assert_eq!(instances.items.len(), 3);
    // No limit at all (what the operator commands' walks ask for), and a
    // limit reached at the end of the first series with more to come.
    let unlimited = read
        .instances_of_study("1.1", None, usize::MAX)
        .expect("instances");
    assert!(!unlimited.truncated && unlimited.items.len() == 3);
    let limited = read.instances_of_study("1.1", None, 2).expect("instances");
    assert!(limited.truncated && limited.items.len() == 2);
    let of_series = read
        .instances_of_study("1.1", Some("1.1.1"), 10)
        .expect("instances");
    assert_eq!(
        of_series
            .items
            .iter()
            .map(|entry| entry.record.file_id.0)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        read.file_role(FileId(1)).expect("role"),
        Some(FileRole::Instance)
    );
    assert_eq!(read.file_role(FileId(99)).expect("role"), None);
    assert!(read.check_consistency(10).expect("check").is_consistent());
    drop(read);

    let stats = index.stats().expect("stats");
    assert_eq!(stats.table("instances").map(|table| table.entries), Some(3));
    assert_eq!(
        stats.table("series_ids").map(|table| table.entries),
        Some(2)
    );
    assert!(stats
        .table(sluice_index::SOP_INDEX_TABLE_NAME)
        .is_some_and(|table| table.entries > 0));
    assert!(stats.file_size_bytes > 0 && stats.used_bytes > 0);

    // Everything survives a reopen.
    index.close();
    let index = open(dir.path());
    let read = index.read().expect("read");
    assert_eq!(
        read.instance("1.1", "1.1.1", "1.1.1.1")
            .expect("lookup")
            .map(|record| record.file_id),
        Some(FileId(1))
    );
}

#[test]
fn duplicate_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    writer
        .execute(vec![store("2.1", "2.1.1", "2.1.1.1", 10, 1)])
        .expect("first");
    let with_policy = |file_id, checksum, policy| {
        let mut request = StoreRequest::new(instance("2.1", "2.1.1", "2.1.1.1", file_id, checksum));
        request.duplicate_policy = policy;
        WriteOp::Store(request)
    };
    let results = writer
        .execute(vec![
            with_policy(11, 2, DuplicatePolicy::Quarantine),
            with_policy(12, 1, DuplicatePolicy::Quarantine),
            with_policy(13, 2, DuplicatePolicy::Reject),
            with_policy(14, 1, DuplicatePolicy::DropIfIdentical),
            with_policy(15, 2, DuplicatePolicy::DropIfIdentical),
        ])
        .expect("duplicates");
    assert_eq!(
        *outcome(&results[0]),
        StoreOutcome::Duplicate(Disposition::Quarantined { quarantine_id: 1 })
    );
    assert_eq!(
        *outcome(&results[1]),
        StoreOutcome::DuplicateIdentical(Disposition::Quarantined { quarantine_id: 2 })
    );
    assert_eq!(
        *outcome(&results[2]),
        StoreOutcome::Duplicate(Disposition::Rejected)
    );
    assert_eq!(
        *outcome(&results[3]),
        StoreOutcome::DuplicateIdentical(Disposition::Dropped)
    );
    assert_eq!(
        *outcome(&results[4]),
        StoreOutcome::Duplicate(Disposition::Quarantined { quarantine_id: 3 })
    );
    {
        let read = index.read().expect("read");
        assert_eq!(
            read.instance("2.1", "2.1.1", "2.1.1.1")
                .expect("get")
                .map(|r| r.file_id),
            Some(FileId(10))
        );
        let quarantine = read.quarantine_entries(None, 10).expect("quarantine");
        assert_eq!(
            quarantine
                .items
                .iter()
                .map(|entry| entry.id)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            quarantine.items[1].reason,
            QuarantineReason::DuplicateIdentical
        );
        assert_eq!(
            quarantine.items[0].instance.record.calling_ae_title,
            "MODALITY1"
        );
        assert_eq!(
            read.file_role(FileId(11)).expect("role"),
            Some(FileRole::Quarantine)
        );
        assert_eq!(
            read.file_role(FileId(13)).expect("role"),
            None,
            "rejected files are unreferenced"
        );
        assert_eq!(
            read.study("2.1")
                .expect("study")
                .map(|s| s.number_of_instances),
            Some(1)
        );
    }
    let results = writer
        .execute(vec![with_policy(16, 3, DuplicatePolicy::Replace)])
        .expect("replace");
    match outcome(&results[0]) {
        StoreOutcome::Duplicate(Disposition::Replaced { previous }) => {
            assert_eq!(previous.file_id, FileId(10))
        }
        other => panic!("expected a replacement, got {other:?}"),
    }
    let read = index.read().expect("read");
    assert_eq!(
        read.instance("2.1", "2.1.1", "2.1.1.1")
            .expect("get")
            .map(|r| r.file_id),
        Some(FileId(16))
    );
    assert_eq!(read.file_role(FileId(10)).expect("role"), None);
    assert_eq!(
        read.study("2.1")
            .expect("study")
            .map(|s| s.number_of_instances),
        Some(1)
    );
    assert!(read.check_consistency(10).expect("check").is_consistent());
}

#[test]
fn sop_instance_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    writer
        .execute(vec![store("3.1", "3.1.1", "9.1", 1, 1)])
        .expect("first");
    let conflicting = |file_id, policy| {
        let mut request = StoreRequest::new(instance("3.2", "3.2.1", "9.1", file_id, 1));
        request.conflict_policy = policy;
        WriteOp::Store(request)
    };
    let stored = Triplet::new("3.1", "3.1.1", "9.1");
    let results = writer
        .execute(vec![
            conflicting(2, ConflictPolicy::Quarantine),
            conflicting(3, ConflictPolicy::Reject),
        ])
        .expect("conflicts");
    assert_eq!(
        *outcome(&results[0]),
        StoreOutcome::SopInstanceConflict {
            stored: stored.clone(),
            disposition: Disposition::Quarantined { quarantine_id: 1 }
        }
    );
    assert_eq!(
        *outcome(&results[1]),
        StoreOutcome::SopInstanceConflict {
            stored: stored.clone(),
            disposition: Disposition::Rejected
        }
    );
    {
        let read = index.read().expect("read");
        let entry = read.quarantine_entry(1).expect("entry").expect("present");
        assert_eq!(
            entry.reason,
            QuarantineReason::SopInstanceConflict {
                stored: stored.clone()
            }
        );
        assert!(
            read.study("3.2").expect("study").is_none(),
            "a quarantined instance creates no study"
        );
    }
    let results = writer
        .execute(vec![conflicting(4, ConflictPolicy::Replace)])
        .expect("replace");
    match outcome(&results[0]) {
        StoreOutcome::SopInstanceConflict {
            disposition: Disposition::Replaced { previous },
            ..
        } => {
            assert_eq!(previous.file_id, FileId(1))
        }
        other => panic!("expected a replacement, got {other:?}"),
    }
    let read = index.read().expect("read");
    assert!(
        read.study("3.1").expect("study").is_none(),
        "the old study lost its only instance"
    );
    assert_eq!(
        read.triplet_of_sop("9.1").expect("sop"),
        Some(Triplet::new("3.2", "3.2.1", "9.1"))
    );
    assert!(read.check_consistency(10).expect("check").is_consistent());
}

#[test]
fn quarantine_release_and_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    writer
        .execute(vec![
            store("4.1", "4.1.1", "4.1.1.1", 1, 1),
            store("4.1", "4.1.1", "4.1.1.1", 2, 2),
            store("4.1", "4.1.1", "4.1.1.1", 3, 3),
            store("4.9", "4.9.1", "4.1.1.1", 4, 4),
        ])
        .expect("store");
    {
        let read = index.read().expect("read");
        let page = read.quarantine_entries(None, 2).expect("page");
        assert!(page.truncated);
        assert_eq!(
            page.items.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let rest = read.quarantine_entries(Some(2), 10).expect("rest");
        assert_eq!(rest.items.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3]);
        assert!(!rest.truncated);
    }
    let results = writer
        .execute(vec![
            WriteOp::ReleaseQuarantine(1),
            WriteOp::PurgeQuarantine(2),
            WriteOp::ReleaseQuarantine(77),
        ])
        .expect("release");
    match &results[0] {
        Ok(WriteOutcome::Released(Some(released))) => {
            assert_eq!(released.instance.record.file_id, FileId(2));
            assert_eq!(
                released.replaced.as_ref().map(|r| r.file_id),
                Some(FileId(1))
            );
        }
        other => panic!("expected a release, got {other:?}"),
    }
    match &results[1] {
        Ok(WriteOutcome::Purged(Some(entry))) => {
            assert_eq!(entry.instance.record.file_id, FileId(3))
        }
        other => panic!("expected a purge, got {other:?}"),
    }
    assert_eq!(results[2], Ok(WriteOutcome::Released(None)));
    {
        let read = index.read().expect("read");
        assert_eq!(
            read.instance("4.1", "4.1.1", "4.1.1.1")
                .expect("get")
                .map(|r| r.file_id),
            Some(FileId(2))
        );
        assert_eq!(read.file_role(FileId(3)).expect("role"), None);
        assert_eq!(
            read.quarantine_entries(None, 10).expect("list").items.len(),
            1
        );
    }
    // Releasing the conflict moves the SOP Instance UID to the other study.
    let results = writer
        .execute(vec![WriteOp::ReleaseQuarantine(3)])
        .expect("release conflict");
    match &results[0] {
        Ok(WriteOutcome::Released(Some(released))) => {
            assert_eq!(
                released.replaced.as_ref().map(|r| r.file_id),
                Some(FileId(2))
            )
        }
        other => panic!("expected a release, got {other:?}"),
    }
    let read = index.read().expect("read");
    assert_eq!(
        read.triplet_of_sop("4.1.1.1").expect("sop"),
        Some(Triplet::new("4.9", "4.9.1", "4.1.1.1"))
    );
    assert!(read.study("4.1").expect("study").is_none());
    assert!(read
        .quarantine_entries(None, 10)
        .expect("list")
        .items
        .is_empty());
    assert!(read.check_consistency(10).expect("check").is_consistent());
}

#[test]
fn removal_keeps_counts_and_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    // Two series with different modalities (see common::series_attributes).
    let (series_a, series_b) = ("5.1.1", "5.1.3");
    assert_ne!(
        crate::common::series_attributes(series_a).modality,
        crate::common::series_attributes(series_b).modality
    );
    writer
        .execute(vec![
            store("5.1", series_a, "5.1.1.1", 1, 1),
            store("5.1", series_a, "5.1.1.2", 2, 1),
            store("5.1", series_b, "5.1.3.1", 3, 1),
        ])
        .expect("store");
    let remove = |sop: &str, series: &str| WriteOp::Remove(Triplet::new("5.1", series, sop));
    let results = writer
        .execute(vec![remove("5.1.3.1", series_b), remove("nope", series_b)])
        .expect("remove");
    assert_eq!(
        results[0].as_ref().ok().and_then(|o| match o {
            WriteOutcome::Removed(r) => r.as_ref().map(|r| r.file_id),
            _ => None,
        }),
        Some(FileId(3))
    );
    assert_eq!(results[1], Ok(WriteOutcome::Removed(None)));
    let patient_id = crate::common::study_attributes("5.1").patient_id;
    {
        let read = index.read().expect("read");
        let study = read.study("5.1").expect("study").expect("present");
        assert_eq!((study.number_of_series, study.number_of_instances), (1, 2));
        assert_eq!(
            study.modalities_in_study,
            vec![crate::common::series_attributes(series_a).modality]
        );
        assert!(read.check_consistency(10).expect("check").is_consistent());
        let query = StudyQuery {
            patient_id: Some(patient_id.clone()),
            ..Default::default()
        };
        assert_eq!(
            read.query_studies(&query, 10).expect("query").items.len(),
            1
        );
    }
    writer
        .execute(vec![
            remove("5.1.1.1", series_a),
            remove("5.1.1.2", series_a),
        ])
        .expect("remove all");
    let read = index.read().expect("read");
    assert!(read.study("5.1").expect("study").is_none());
    let query = StudyQuery {
        patient_id: Some(patient_id),
        ..Default::default()
    };
    assert!(
        read.query_studies(&query, 10)
            .expect("query")
            .items
            .is_empty(),
        "index entries go with the study"
    );
    let report = read.check_consistency(10).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(
        index
            .stats()
            .expect("stats")
            .table("study_by_patient_id")
            .map(|t| t.entries),
        Some(0)
    );
}

#[test]
fn commitments_are_kept_updated_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    let record = |state, payload: &[u8]| CommitmentRecord {
        state,
        requester_ae_title: "REQUESTER".into(),
        created_at_unix_ns: 1,
        deadline_unix_ns: 2,
        delivery_attempts: 0,
        next_attempt_at_unix_ns: 0,
        payload: payload.to_vec(),
    };
    let put = |uid: &str, record: CommitmentRecord| WriteOp::PutCommitment {
        transaction_uid: uid.into(),
        record,
    };
    let results = writer
        .execute(vec![
            put("1.5.1", record(CommitmentState::Pending, b"refs-1")),
            put("1.5.2", record(CommitmentState::Pending, b"refs-2")),
            put("1.5.1", record(CommitmentState::ReportReady, b"report-1")),
            put("", record(CommitmentState::Pending, b"")),
        ])
        .expect("put");
    assert_eq!(
        results[0],
        Ok(WriteOutcome::CommitmentPut { replaced: false })
    );
    assert_eq!(
        results[2],
        Ok(WriteOutcome::CommitmentPut { replaced: true })
    );
    assert!(matches!(
        results[3],
        Err(InvalidInput::Uid {
            field: "TransactionUID",
            ..
        })
    ));
    {
        let read = index.read().expect("read");
        let stored = read.commitment("1.5.1").expect("get").expect("present");
        assert_eq!(
            (stored.state, stored.payload.as_slice()),
            (CommitmentState::ReportReady, &b"report-1"[..])
        );
        let page = read.commitments(None, 1).expect("page");
        assert!(page.truncated);
        let rest = read
            .commitments(Some(&page.items[0].transaction_uid), 10)
            .expect("rest");
        assert_eq!(
            rest.items
                .iter()
                .map(|e| e.transaction_uid.as_str())
                .collect::<Vec<_>>(),
            vec!["1.5.2"]
        );
    }
    let results = writer
        .execute(vec![
            WriteOp::RemoveCommitment {
                transaction_uid: "1.5.1".into(),
            },
            WriteOp::RemoveCommitment {
                transaction_uid: "1.5.1".into(),
            },
        ])
        .expect("remove");
    assert_eq!(
        results[0],
        Ok(WriteOutcome::CommitmentRemoved { existed: true })
    );
    assert_eq!(
        results[1],
        Ok(WriteOutcome::CommitmentRemoved { existed: false })
    );
    assert!(index
        .read()
        .expect("read")
        .commitment("1.5.1")
        .expect("get")
        .is_none());
}

#[test]
fn study_queries_use_every_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let ops = (0..30u128)
        .map(|n| {
            store(
                &format!("6.{n}"),
                &format!("6.{n}.1"),
                &format!("6.{n}.1.1"),
                n + 1,
                1,
            )
        })
        .collect();
    index.writer().execute(ops).expect("store");
    let read = index.read().expect("read");
    let all: Vec<(String, sluice_index::StudyAttributes)> = (0..30)
        .map(|n| format!("6.{n}"))
        .map(|uid| {
            let a = crate::common::study_attributes(&uid);
            (uid, a)
        })
        .collect();
    let run = |query: StudyQuery| {
        let mut uids: Vec<String> = read
            .query_studies(&query, 100)
            .expect("query")
            .items
            .into_iter()
            .map(|m| m.study_instance_uid)
            .collect();
        uids.sort();
        uids
    };
    let expect = |filter: &dyn Fn(&sluice_index::StudyAttributes) -> bool| {
        let mut uids: Vec<String> = all
            .iter()
            .filter(|(_, a)| filter(a))
            .map(|(uid, _)| uid.clone())
            .collect();
        uids.sort();
        uids
    };
    let target = &all[4].1;
    assert_eq!(
        run(StudyQuery {
            patient_id: Some(target.patient_id.clone()),
            ..Default::default()
        }),
        expect(&|a| a.patient_id == target.patient_id)
    );
    assert_eq!(
        run(StudyQuery {
            patient_id: Some("PID*".into()),
            ..Default::default()
        })
        .len(),
        30
    );
    assert_eq!(
        run(StudyQuery {
            accession_number: Some(target.accession_number.clone()),
            ..Default::default()
        }),
        expect(&|a| a.accession_number == target.accession_number)
    );
    assert_eq!(
        run(StudyQuery {
            study_date: Some("20240102-20240104".into()),
            ..Default::default()
        }),
        expect(&|a| ("20240102".."20240105").contains(&a.study_date.as_str()))
    );
    assert_eq!(
        run(StudyQuery {
            study_date: Some("-20240103".into()),
            ..Default::default()
        }),
        expect(&|a| a.study_date.as_str() <= "20240103")
    );
    assert_eq!(
        run(StudyQuery {
            patient_name: Some("name1*".into()),
            ..Default::default()
        }),
        expect(&|a| a.patient_name.starts_with("Name1"))
    );
    assert_eq!(
        run(StudyQuery {
            study_instance_uid: Some("6.3\\6.7\\6.99".into()),
            ..Default::default()
        }),
        vec!["6.3".to_string(), "6.7".to_string()]
    );
    assert_eq!(
        run(StudyQuery {
            patient_sex: Some("F".into()),
            study_time: Some("-14".into()),
            ..Default::default()
        }),
        expect(&|a| a.patient_sex == "F" && a.study_time.as_str() <= "149999")
    );
    assert_eq!(run(StudyQuery::default()).len(), 30);
    let limited = read
        .query_studies(&StudyQuery::default(), 5)
        .expect("query");
    assert!(limited.truncated && limited.items.len() == 5);
    let error = read.query_studies(
        &StudyQuery {
            study_date: Some("2024x".into()),
            ..Default::default()
        },
        5,
    );
    assert!(matches!(error, Err(IndexError::InvalidQuery(ref q)) if q.key == "StudyDate"));
}

#[test]
fn invalid_items_are_refused_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let mut bad_offsets = instance("7.1", "7.1.1", "7.1.1.9", 9, 1);
    bad_offsets.record.dataset_offset_bytes = bad_offsets.record.file_size_bytes + 1;
    let results = index
        .writer()
        .execute(vec![
            store("", "7.1.1", "7.1.1.1", 1, 1),
            store("7.1", "7.1.1", "7.1\0.1", 2, 1),
            store(
                "7.1",
                "7.1.1",
                &"1".repeat(sluice_index::UID_BYTES_MAX + 1),
                3,
                1,
            ),
            store("7.1", "7.1.1", "7.1.1.4", 4, 1),
            store("7.1", "7.1.1", "7.1.1.5", 4, 1),
            WriteOp::Store(StoreRequest::new(bad_offsets)),
        ])
        .expect("batch");
    assert!(matches!(
        results[0],
        Err(InvalidInput::Uid {
            field: "StudyInstanceUID",
            ..
        })
    ));
    assert!(matches!(
        results[1],
        Err(InvalidInput::Uid {
            field: "SOPInstanceUID",
            ..
        })
    ));
    assert!(matches!(results[2], Err(InvalidInput::Uid { .. })));
    assert_eq!(results[3], Ok(WriteOutcome::Store(StoreOutcome::Stored)));
    assert_eq!(results[4], Err(InvalidInput::FileIdInUse { file_id: 4 }));
    assert!(matches!(results[5], Err(InvalidInput::BadOffsets { .. })));
    let read = index.read().expect("read");
    assert_eq!(
        read.study("7.1")
            .expect("study")
            .map(|s| s.number_of_instances),
        Some(1)
    );
    assert!(read.instance("", "x", "y").expect("lookup").is_none());
}

#[test]
fn writer_handles_answer_every_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = sluice_index::IndexOptions {
        batch_ops_max: 2,
        ..crate::common::options()
    };
    let index = sluice_index::Index::open(dir.path(), options).expect("open");
    let writer = index.writer();
    let (sender, receiver) = crossbeam_channel::unbounded();
    let batch = Batch::with_callback(
        vec![store("8.1", "8.1.1", "8.1.1.1", 1, 1)],
        move |result| {
            let _ = sender.send(result);
        },
    );
    writer.try_submit(batch).expect("submit");
    let result = receiver.recv().expect("callback ran").expect("batch ok");
    assert_eq!(result, vec![Ok(WriteOutcome::Store(StoreOutcome::Stored))]);

    // A callback that panics does not stop the writer.
    writer
        .try_submit(Batch::with_callback(
            vec![store("8.1", "8.1.1", "8.1.1.2", 9, 1)],
            |_| panic!("a careless callback"),
        ))
        .expect("submit");
    let results = writer
        .execute(vec![store("8.1", "8.1.1", "8.1.1.3", 10, 1)])
        .expect("writer still runs");
    assert_eq!(results, vec![Ok(WriteOutcome::Store(StoreOutcome::Stored))]);

    let too_large = vec![
        store("8.1", "8.1.1", "a", 2, 1),
        store("8.1", "8.1.1", "b", 3, 1),
        store("8.1", "8.1.1", "c", 4, 1),
    ];
    assert!(matches!(
        writer.execute(too_large.clone()),
        Err(IndexError::InvalidBatch { ops: 3, limit: 2 })
    ));
    let (batch, receiver) = Batch::with_channel(too_large);
    match writer.try_submit(batch) {
        Err(SubmitError::TooLarge { batch, .. }) => drop(batch),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        matches!(receiver.recv(), Ok(Err(IndexError::WriterUnavailable))),
        "a dropped batch still answers"
    );

    index.close();
    let (batch, receiver) = Batch::with_channel(vec![store("8.1", "8.1.1", "d", 5, 1)]);
    assert!(matches!(writer.submit(batch), Err(SubmitError::Closed(_))));
    assert!(matches!(
        receiver.recv(),
        Ok(Err(IndexError::WriterUnavailable))
    ));
    assert!(matches!(
        writer.execute(vec![]),
        Err(IndexError::WriterUnavailable)
    ));
}

/// Rewrites the schema version of a freshly created index to `version`, then
/// checks that opening it is refused with both versions in the message.
fn assert_schema_version_refused(version: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    open(dir.path()).close();
    crate::common::set_schema_version(dir.path(), version);
    let error =
        sluice_index::Index::open(dir.path(), crate::common::options()).expect_err("must refuse");
    match &error {
        IndexError::SchemaVersionMismatch {
            found, expected, ..
        } => {
            assert_eq!(*found, version);
            assert_eq!(*expected, sluice_index::SCHEMA_VERSION)
        }
        other => panic!("expected a schema mismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!("schema version {version}"))
            && message.contains(&format!("schema version {}", sluice_index::SCHEMA_VERSION)),
        "{message}"
    );
}

#[test]
fn unknown_schema_version_refuses_to_open() {
    assert_schema_version_refused(99);
}

/// Version 1 recorded a 32-byte checksum; read as version 2 its records would
/// be misread or fail validation, so such an index is refused at open.
#[test]
fn schema_version_1_refuses_to_open() {
    assert_ne!(sluice_index::SCHEMA_VERSION, 1);
    assert_schema_version_refused(1);
}

#[test]
fn a_foreign_environment_is_not_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let env = sluice_io::lmdb::open_lmdb_env(dir.path(), 256 << 20, 16, 32, TEST_DIRECTORY)
            .expect("raw open");
        let wtxn = env.write_txn().expect("txn");
        let _: heed::Database<heed::types::Bytes, heed::types::Bytes> = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .create_database(wtxn, Some("something-else"))
                    .map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .expect("db")
            .unwrap_commit();
    }
    let error =
        sluice_index::Index::open(dir.path(), crate::common::options()).expect_err("must refuse");
    assert!(matches!(error, IndexError::NotAnIndex { .. }), "{error:?}");
}

fn store_in_doubt(study: &str, series: &str, sop: &str, file_id: u128, seed: u8) -> WriteOp {
    let mut request = StoreRequest::new(instance(study, series, sop, file_id, seed));
    request.in_doubt = true;
    WriteOp::Store(request)
}

fn in_doubt_ids(index: &sluice_index::Index) -> Vec<(u128, &'static str)> {
    let read = index.read().expect("read");
    read.in_doubt()
        .expect("in doubt")
        .into_iter()
        .map(|doubt| {
            let kind = match doubt.entry {
                InDoubtEntry::Instance(entry) => {
                    assert_eq!(entry.record.file_id, doubt.file_id);
                    "instance"
                }
                InDoubtEntry::Quarantine(entry) => {
                    assert_eq!(entry.instance.record.file_id, doubt.file_id);
                    "quarantine"
                }
                _ => "unreferenced",
            };
            (doubt.file_id.0, kind)
        })
        .collect()
}

/// A store marked in doubt records its file with the entry that names it
/// (instance or quarantine entry), in the same transaction; a refused or
/// dropped newcomer, which no entry names, is not recorded; clearing forgets
/// exactly the ids given; an entry removed since leaves an unreferenced mark.
#[test]
fn in_doubt_files_are_recorded_with_their_entry_until_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    let mut dropped = StoreRequest::new(instance("7.1", "7.1.1", "7.1.1.2", 13, 3));
    dropped.in_doubt = true;
    dropped.duplicate_policy = DuplicatePolicy::DropIfIdentical;
    writer
        .execute(vec![
            store_in_doubt("7.1", "7.1.1", "7.1.1.1", 11, 1),
            store_in_doubt("7.1", "7.1.1", "7.1.1.1", 12, 2),
            store("7.1", "7.1.1", "7.1.1.2", 14, 3),
            WriteOp::Store(dropped),
        ])
        .expect("store");
    assert_eq!(
        in_doubt_ids(&index),
        vec![(11, "instance"), (12, "quarantine")]
    );
    let results = writer
        .execute(vec![WriteOp::ClearInDoubt(vec![
            FileId(12),
            FileId(14),
            FileId(99),
        ])])
        .expect("clear");
    assert_eq!(results[0], Ok(WriteOutcome::InDoubtCleared { cleared: 1 }));
    assert_eq!(in_doubt_ids(&index), vec![(11, "instance")]);
    writer
        .execute(vec![WriteOp::Remove(Triplet::new(
            "7.1", "7.1.1", "7.1.1.1",
        ))])
        .expect("remove");
    assert_eq!(in_doubt_ids(&index), vec![(11, "unreferenced")]);
    let read = index.read().expect("read");
    assert!(read.check_consistency(10).expect("check").is_consistent());
}

/// Under `DropIfIdentical` a newcomer identical to an entry in doubt is
/// quarantined, not dropped: the entry's instance may still fail and have it
/// removed (`RemoveInDoubt`), and the newcomer, answered success, must then
/// still be held. Once the mark is cleared the next one is dropped.
#[test]
fn an_identical_duplicate_of_an_entry_in_doubt_is_not_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    let drop_if_identical = |file_id| {
        let mut request = StoreRequest::new(instance("8.1", "8.1.1", "8.1.1.1", file_id, 1));
        request.in_doubt = true;
        request.duplicate_policy = DuplicatePolicy::DropIfIdentical;
        WriteOp::Store(request)
    };
    let results = writer
        .execute(vec![
            store_in_doubt("8.1", "8.1.1", "8.1.1.1", 21, 1),
            drop_if_identical(22),
        ])
        .expect("store");
    assert_eq!(
        *outcome(&results[1]),
        StoreOutcome::DuplicateIdentical(Disposition::Quarantined { quarantine_id: 1 })
    );
    // The holder fails: its entry goes, the newcomer is still held.
    writer
        .execute(vec![WriteOp::RemoveInDoubt(FileId(21))])
        .expect("undo");
    assert_eq!(in_doubt_ids(&index), vec![(22, "quarantine")]);
    // A durable holder (mark cleared): an identical newcomer is dropped.
    writer
        .execute(vec![
            store_in_doubt("8.1", "8.1.1", "8.1.1.1", 23, 1),
            WriteOp::ClearInDoubt(vec![FileId(23)]),
        ])
        .expect("store");
    let results = writer.execute(vec![drop_if_identical(24)]).expect("store");
    assert_eq!(
        *outcome(&results[0]),
        StoreOutcome::DuplicateIdentical(Disposition::Dropped)
    );
    let read = index.read().expect("read");
    assert!(read.check_consistency(10).expect("check").is_consistent());
}

/// `RemoveInDoubt` removes the entry the file's mark names (stored
/// instance or quarantine entry) and the mark, once: repeated, it finds
/// nothing; and it never removes an entry that names another file.
#[test]
fn remove_in_doubt_removes_the_entry_of_that_file_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    writer
        .execute(vec![
            store_in_doubt("9.1", "9.1.1", "9.1.1.1", 31, 1),
            store_in_doubt("9.1", "9.1.1", "9.1.1.1", 32, 2),
            store_in_doubt("9.1", "9.1.1", "9.1.1.2", 33, 3),
        ])
        .expect("store");
    assert_eq!(
        in_doubt_ids(&index),
        vec![(31, "instance"), (32, "quarantine"), (33, "instance")]
    );
    let removed = |file_id| match writer
        .execute(vec![WriteOp::RemoveInDoubt(FileId(file_id))])
        .expect("remove")[0]
    {
        Ok(WriteOutcome::InDoubtRemoved { removed }) => removed,
        ref other => panic!("{other:?}"),
    };
    assert!(removed(32), "the quarantine entry");
    assert!(!removed(32), "repeated: nothing left");
    assert!(removed(31), "the stored instance");
    assert!(!index
        .read()
        .expect("read")
        .contains("9.1", "9.1.1", "9.1.1.1")
        .expect("contains"));
    // The triplet stored again under another file: a stale mark of file 33
    // after its instance was replaced must not remove file 34's entry.
    writer
        .execute(vec![
            WriteOp::Remove(Triplet::new("9.1", "9.1.1", "9.1.1.2")),
            store("9.1", "9.1.1", "9.1.1.2", 34, 4),
        ])
        .expect("replace");
    assert!(!removed(33));
    assert!(index
        .read()
        .expect("read")
        .contains("9.1", "9.1.1", "9.1.1.2")
        .expect("contains"));
    assert!(in_doubt_ids(&index).is_empty());
    let read = index.read().expect("read");
    assert!(read.check_consistency(10).expect("check").is_consistent());
}

fn store_flagged(study: &str, series: &str, sop: &str, file_id: u128, seed: u8) -> WriteOp {
    let mut request = StoreRequest::new(instance(study, series, sop, file_id, seed));
    request.flagged = Some(format!("flagged {file_id}").into_bytes());
    WriteOp::Store(request)
}

fn flagged(index: &sluice_index::Index) -> Vec<(u128, FileRole, String)> {
    let read = index.read().expect("read");
    read.flagged(None, 100)
        .expect("flagged")
        .items
        .into_iter()
        .map(|item| {
            (
                item.file_id.0,
                item.role,
                String::from_utf8(item.payload).expect("text"),
            )
        })
        .collect()
}

/// A flagged store records its payload with the file when an entry names
/// it (stored or quarantined), in the same transaction; a dropped newcomer
/// is not recorded; a file no entry references any more is not listed; the
/// listing pages by file id.
#[test]
fn flagged_files_are_recorded_with_their_store_and_listed_while_referenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    let mut dropped = StoreRequest::new(instance("9.1", "9.1.1", "9.1.1.1", 33, 1));
    dropped.flagged = Some(b"never".to_vec());
    dropped.duplicate_policy = DuplicatePolicy::DropIfIdentical;
    writer
        .execute(vec![
            store_flagged("9.1", "9.1.1", "9.1.1.1", 31, 1),
            store_flagged("9.1", "9.1.1", "9.1.1.1", 32, 2),
            WriteOp::Store(dropped),
            store("9.1", "9.1.1", "9.1.1.2", 34, 3),
            store_flagged("9.1", "9.1.1", "9.1.1.3", 35, 4),
        ])
        .expect("store");
    assert_eq!(
        flagged(&index),
        vec![
            (31, FileRole::Instance, "flagged 31".to_owned()),
            (32, FileRole::Quarantine, "flagged 32".to_owned()),
            (35, FileRole::Instance, "flagged 35".to_owned()),
        ]
    );
    let page = index
        .read()
        .expect("read")
        .flagged(Some(FileId(31)), 1)
        .expect("page");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].file_id, FileId(32));
    assert!(page.truncated);
    writer
        .execute(vec![WriteOp::Remove(Triplet::new(
            "9.1", "9.1.1", "9.1.1.3",
        ))])
        .expect("remove");
    assert_eq!(flagged(&index).len(), 2);
    // A file no entry references loses its row with its last reference.
    let rows = |index: &sluice_index::Index| {
        index
            .stats()
            .expect("stats")
            .table("flagged")
            .expect("flagged table")
            .entries
    };
    assert_eq!(rows(&index), 2);
    let quarantined = index
        .read()
        .expect("read")
        .quarantine_entries(None, 10)
        .expect("quarantine")
        .items[0]
        .id;
    writer
        .execute(vec![WriteOp::PurgeQuarantine(quarantined)])
        .expect("purge");
    assert_eq!(rows(&index), 1);
    assert_eq!(
        flagged(&index),
        vec![(31, FileRole::Instance, "flagged 31".to_owned())]
    );
}

#[test]
fn demote_moves_a_stored_instance_into_quarantine_or_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    let kept = instance("7.1", "7.1.1", "7.1.1.1", 71, 1);
    let dropped = instance("7.1", "7.1.1", "7.1.1.2", 72, 1);
    let mut in_doubt = StoreRequest::new(kept.clone());
    in_doubt.in_doubt = true;
    writer
        .execute(vec![
            WriteOp::Store(in_doubt),
            WriteOp::Store(StoreRequest::new(dropped.clone())),
        ])
        .expect("store");
    // A file the SOP Instance UID no longer names: nothing done.
    let mut stale = kept.clone();
    stale.record.file_id = FileId(99);
    let results = writer
        .execute(vec![
            WriteOp::Demote {
                instance: stale,
                hold: Some(QuarantineReason::Duplicate),
            },
            WriteOp::Demote {
                instance: kept.clone(),
                hold: Some(QuarantineReason::Duplicate),
            },
            WriteOp::Demote {
                instance: dropped.clone(),
                hold: None,
            },
        ])
        .expect("demote");
    assert_eq!(
        results[0],
        Ok(WriteOutcome::Demoted {
            removed: false,
            quarantine_id: None
        })
    );
    let Ok(WriteOutcome::Demoted {
        removed: true,
        quarantine_id: Some(id),
    }) = results[1]
    else {
        panic!("expected a demotion into quarantine, got {:?}", results[1]);
    };
    assert_eq!(
        results[2],
        Ok(WriteOutcome::Demoted {
            removed: true,
            quarantine_id: None
        })
    );
    let read = index.read().expect("read");
    assert!(read.instance_by_sop("7.1.1.1").expect("get").is_none());
    assert!(read.instance_by_sop("7.1.1.2").expect("get").is_none());
    assert!(
        read.study("7.1").expect("study").is_none(),
        "the study emptied"
    );
    let entry = read.quarantine_entry(id).expect("get").expect("held");
    assert_eq!(entry.instance, kept);
    assert_eq!(entry.reason, QuarantineReason::Duplicate);
    // The in-doubt mark follows the entry into quarantine.
    let marks = read.in_doubt().expect("in doubt");
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].file_id, FileId(71));
    assert!(
        matches!(&marks[0].entry, InDoubtEntry::Quarantine(held) if held.id == id),
        "{marks:?}"
    );
    assert_eq!(
        read.file_role(FileId(71)).expect("role"),
        Some(FileRole::Quarantine)
    );
    assert_eq!(read.file_role(FileId(72)).expect("role"), None);
}

#[test]
fn empty_study_attributes_are_filled_by_later_instances_and_their_keys_follow() {
    // The writer normalises an instance's attributes only where they fill
    // an empty one, and touches a study's secondary keys only when its
    // attributes changed: a study stored without a patient ID, name or
    // accession number gets them (normalised) from a later instance, in the
    // same transaction or the next, its keys with them, and the first
    // values stay.
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let writer = index.writer();
    let with = |sop: &str, file_id: u128, study: sluice_index::StudyAttributes| {
        let mut instance = instance("7.1", "7.1.1", sop, file_id, file_id as u8);
        instance.study = study;
        WriteOp::Store(StoreRequest::new(instance))
    };
    let bare = sluice_index::StudyAttributes {
        study_date: "20240105".into(),
        ..Default::default()
    };
    let query = |read: &sluice_index::ReadTxn<'_>, query: StudyQuery| {
        read.query_studies(&query, 10).expect("query").items.len()
    };
    let by_id = |id: &str| StudyQuery {
        patient_id: Some(id.into()),
        ..Default::default()
    };
    writer
        .execute(vec![
            with("7.1.1.1", 1, bare.clone()),
            with("7.1.1.2", 2, bare.clone()),
        ])
        .expect("bare");
    {
        let read = index.read().expect("read");
        assert!(read.check_consistency(10).expect("check").is_consistent());
        let study = read.study("7.1").expect("study").expect("present");
        assert_eq!(study.attributes, bare);
        assert_eq!(study.number_of_instances, 2);
    }
    let filling = sluice_index::StudyAttributes {
        patient_id: " P7 ".into(),
        patient_name: "Doe^Jane^^".into(),
        study_date: "20991231".into(),
        ..Default::default()
    };
    let later = sluice_index::StudyAttributes {
        patient_id: "OTHER".into(),
        accession_number: "A7".into(),
        ..Default::default()
    };
    writer
        .execute(vec![
            with("7.1.1.3", 3, bare.clone()),
            with("7.1.1.4", 4, filling),
            with("7.1.1.5", 5, later),
        ])
        .expect("filling");
    let read = index.read().expect("read");
    let report = read.check_consistency(10).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    let study = read.study("7.1").expect("study").expect("present");
    assert_eq!(
        study.attributes,
        sluice_index::StudyAttributes {
            patient_id: "P7".into(),
            patient_name: "Doe^Jane".into(),
            study_date: "20240105".into(),
            accession_number: "A7".into(),
            ..Default::default()
        }
    );
    assert_eq!(study.number_of_instances, 5);
    assert_eq!(query(&read, by_id("P7")), 1);
    assert_eq!(query(&read, by_id("OTHER")), 0);
    let by_name = StudyQuery {
        patient_name: Some("Doe^Jane".into()),
        ..Default::default()
    };
    assert_eq!(query(&read, by_name), 1);
    let by_accession = StudyQuery {
        accession_number: Some("A7".into()),
        ..Default::default()
    };
    assert_eq!(query(&read, by_accession), 1);
    drop(read);
    // The study goes: so do its keys.
    let removals = (1..=5)
        .map(|n| WriteOp::Remove(Triplet::new("7.1", "7.1.1", format!("7.1.1.{n}"))))
        .collect();
    writer.execute(removals).expect("remove");
    let read = index.read().expect("read");
    assert!(read.study("7.1").expect("study").is_none());
    assert_eq!(query(&read, by_id("P7")), 0);
    let report = read.check_consistency(10).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
}
