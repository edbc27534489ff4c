//! Property test: random sequences of writes give the same answers as a
//! simple in-memory model (`BTreeMap`s), and the tables stay consistent.
//!
//! The model restates the duplicate, conflict, quarantine, release and purge
//! rules in the plainest form; the index must agree on every item's outcome and
//! on every lookup, listing and query afterwards. Instances with an even
//! file id are stored as records in segments (schema 6): each referenced one
//! keeps its place, every other reads as a file, and each segment counts
//! exactly the referenced records in it live.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use sluice_index::{
    Batch, CommitmentRecord, CommitmentState, ConflictPolicy, Disposition, DuplicatePolicy, FileId,
    InstanceRecord, InvalidInput, ItemResult, Location, NewInstance, QuarantineEntry,
    QuarantineReason, RecordPlace, Released, SopPresence, StoreOutcome, StoreRequest, StudyQuery,
    Triplet, WriteOp, WriteOutcome,
};

use crate::common::{instance, open, series_attributes, study_attributes};

#[derive(Debug, Clone)]
enum Op {
    Store {
        study: u8,
        series: u8,
        sop: u8,
        checksum: u8,
        duplicate: u8,
        conflict: u8,
        reuse_file: bool,
    },
    Remove {
        study: u8,
        series: u8,
        sop: u8,
    },
    Release(u8),
    Purge(u8),
    PutCommitment(u8, u8),
    RemoveCommitment(u8),
}

const STUDIES: u8 = 3;
const SERIES: u8 = 2;
const SOPS: u8 = 8;

fn uids(study: u8, series: u8, sop: u8) -> (String, String, String) {
    let study_uid = format!("1.1.{study}");
    let series_uid = format!("{study_uid}.{series}");
    (study_uid, series_uid, format!("9.{sop}"))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STUDIES, 0..SERIES, 0..SOPS, 0..2u8, 0..4u8, 0..3u8, proptest::bool::weighted(0.1)).prop_map(
            |(study, series, sop, checksum, duplicate, conflict, reuse_file)| Op::Store {
                study, series, sop, checksum, duplicate, conflict, reuse_file
            }
        ),
        1 => (0..STUDIES, 0..SERIES, 0..SOPS).prop_map(|(study, series, sop)| Op::Remove { study, series, sop }),
        1 => any::<u8>().prop_map(Op::Release),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => (0..4u8, any::<u8>()).prop_map(|(key, payload)| Op::PutCommitment(key, payload)),
        1 => (0..4u8).prop_map(Op::RemoveCommitment),
    ]
}

#[derive(Debug)]
struct Model {
    instances: BTreeMap<(String, String, String), InstanceRecord>,
    sops: BTreeMap<String, (String, String)>,
    quarantine: BTreeMap<u64, QuarantineEntry>,
    next_quarantine_id: u64,
    commitments: BTreeMap<String, CommitmentRecord>,
    files: BTreeSet<u128>,
    next_file_id: u128,
}

/// Where the bytes of `file_id` are: a record for even ids (in one of three
/// segments, one place per id), a file for odd ones.
fn location_of(file_id: u128) -> Location {
    if file_id % 2 == 1 {
        return Location::File;
    }
    Location::Record(RecordPlace {
        segment: (file_id % 3) as u64,
        offset: file_id as u64 * 4096,
        length: 4096 * (1 + (file_id % 4) as u64),
    })
}

fn key_of(triplet: &Triplet) -> (String, String, String) {
    (
        triplet.study_instance_uid.clone(),
        triplet.series_instance_uid.clone(),
        triplet.sop_instance_uid.clone(),
    )
}

impl Model {
    fn new() -> Self {
        Model {
            instances: BTreeMap::new(),
            sops: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            next_quarantine_id: 1,
            commitments: BTreeMap::new(),
            files: BTreeSet::new(),
            next_file_id: 1,
        }
    }

    fn insert(&mut self, instance: &NewInstance) {
        let key = key_of(&instance.triplet);
        self.sops
            .insert(key.2.clone(), (key.0.clone(), key.1.clone()));
        self.files.insert(instance.record.file_id.0);
        self.instances.insert(key, instance.record.clone());
    }

    fn remove(&mut self, key: &(String, String, String)) -> Option<InstanceRecord> {
        let record = self.instances.remove(key)?;
        if self.sops.get(&key.2) == Some(&(key.0.clone(), key.1.clone())) {
            self.sops.remove(&key.2);
        }
        self.files.remove(&record.file_id.0);
        Some(record)
    }

    fn replace(
        &mut self,
        key: &(String, String, String),
        instance: &NewInstance,
    ) -> InstanceRecord {
        let previous = self
            .instances
            .insert(key.clone(), instance.record.clone())
            .expect("replace a stored record");
        self.files.remove(&previous.file_id.0);
        self.files.insert(instance.record.file_id.0);
        previous
    }

    fn quarantine(&mut self, instance: &NewInstance, reason: QuarantineReason) -> u64 {
        let id = self.next_quarantine_id;
        self.next_quarantine_id += 1;
        self.files.insert(instance.record.file_id.0);
        self.quarantine.insert(
            id,
            QuarantineEntry {
                id,
                instance: instance.clone(),
                reason,
            },
        );
        id
    }

    fn store(&mut self, request: &StoreRequest) -> ItemResult {
        let instance = &request.instance;
        if self.files.contains(&instance.record.file_id.0) {
            return Err(InvalidInput::FileIdInUse {
                file_id: instance.record.file_id.0,
            });
        }
        let key = key_of(&instance.triplet);
        if let Some(existing) = self.instances.get(&key).cloned() {
            let identical = existing.checksum == instance.record.checksum
                && existing.dataset_size_bytes() == instance.record.dataset_size_bytes();
            let reason = if identical {
                QuarantineReason::DuplicateIdentical
            } else {
                QuarantineReason::Duplicate
            };
            let disposition = match (request.duplicate_policy, identical) {
                (DuplicatePolicy::Reject, _) => Disposition::Rejected,
                (DuplicatePolicy::DropIfIdentical, true) => Disposition::Dropped,
                (DuplicatePolicy::Replace, _) => Disposition::Replaced {
                    previous: self.replace(&key, instance),
                },
                _ => Disposition::Quarantined {
                    quarantine_id: self.quarantine(instance, reason),
                },
            };
            let outcome = if identical {
                StoreOutcome::DuplicateIdentical(disposition)
            } else {
                StoreOutcome::Duplicate(disposition)
            };
            return Ok(WriteOutcome::Store(outcome));
        }
        if let Some((study, series)) = self.sops.get(&key.2).cloned() {
            let stored = Triplet::new(study.clone(), series.clone(), key.2.clone());
            let disposition = match request.conflict_policy {
                ConflictPolicy::Reject => Disposition::Rejected,
                ConflictPolicy::Replace => {
                    let previous = self
                        .remove(&(study, series, key.2.clone()))
                        .expect("sop owner is stored");
                    self.insert(instance);
                    Disposition::Replaced { previous }
                }
                _ => Disposition::Quarantined {
                    quarantine_id: self.quarantine(
                        instance,
                        QuarantineReason::SopInstanceConflict {
                            stored: stored.clone(),
                        },
                    ),
                },
            };
            return Ok(WriteOutcome::Store(StoreOutcome::SopInstanceConflict {
                stored,
                disposition,
            }));
        }
        self.insert(instance);
        Ok(WriteOutcome::Store(StoreOutcome::Stored))
    }

    fn release(&mut self, id: u64) -> ItemResult {
        let Some(entry) = self.quarantine.remove(&id) else {
            return Ok(WriteOutcome::Released(None));
        };
        self.files.remove(&entry.instance.record.file_id.0);
        let key = key_of(&entry.instance.triplet);
        let replaced = if self.instances.contains_key(&key) {
            Some(self.replace(&key, &entry.instance))
        } else if let Some((study, series)) = self.sops.get(&key.2).cloned() {
            let previous = self.remove(&(study, series, key.2.clone()));
            self.insert(&entry.instance);
            previous
        } else {
            self.insert(&entry.instance);
            None
        };
        Ok(WriteOutcome::Released(Some(Released {
            instance: entry.instance,
            replaced,
        })))
    }

    /// Turns a generated op into a concrete write and its expected result.
    fn apply(&mut self, op: &Op) -> (WriteOp, ItemResult) {
        match *op {
            Op::Store {
                study,
                series,
                sop,
                checksum,
                duplicate,
                conflict,
                reuse_file,
            } => {
                let file_id = match (reuse_file, self.files.iter().next()) {
                    (true, Some(&used)) => used,
                    _ => {
                        self.next_file_id += 1;
                        self.next_file_id
                    }
                };
                let (study, series, sop) = uids(study, series, sop);
                let mut request =
                    StoreRequest::new(instance(&study, &series, &sop, file_id, checksum));
                request.location = location_of(file_id);
                request.duplicate_policy = [
                    DuplicatePolicy::Quarantine,
                    DuplicatePolicy::Reject,
                    DuplicatePolicy::Replace,
                    DuplicatePolicy::DropIfIdentical,
                ][usize::from(duplicate)];
                request.conflict_policy = [
                    ConflictPolicy::Quarantine,
                    ConflictPolicy::Reject,
                    ConflictPolicy::Replace,
                ][usize::from(conflict)];
                let expected = self.store(&request);
                (WriteOp::Store(request), expected)
            }
            Op::Remove { study, series, sop } => {
                let key = uids(study, series, sop);
                let expected = Ok(WriteOutcome::Removed(self.remove(&key)));
                (WriteOp::Remove(Triplet::new(key.0, key.1, key.2)), expected)
            }
            Op::Release(pick) => {
                let id = 1 + u64::from(pick) % self.next_quarantine_id;
                let expected = self.release(id);
                (WriteOp::ReleaseQuarantine(id), expected)
            }
            Op::Purge(pick) => {
                let id = 1 + u64::from(pick) % self.next_quarantine_id;
                let entry = self.quarantine.remove(&id);
                if let Some(entry) = &entry {
                    self.files.remove(&entry.instance.record.file_id.0);
                }
                (
                    WriteOp::PurgeQuarantine(id),
                    Ok(WriteOutcome::Purged(entry)),
                )
            }
            Op::PutCommitment(key, payload) => {
                let uid = format!("1.5.{key}");
                let record = CommitmentRecord {
                    state: if payload % 2 == 0 {
                        CommitmentState::Pending
                    } else {
                        CommitmentState::ReportReady
                    },
                    requester_ae_title: "REQUESTER".into(),
                    created_at_unix_ns: u64::from(payload),
                    deadline_unix_ns: 0,
                    delivery_attempts: u32::from(payload % 3),
                    next_attempt_at_unix_ns: 0,
                    payload: vec![payload; usize::from(payload % 5)],
                };
                let replaced = self
                    .commitments
                    .insert(uid.clone(), record.clone())
                    .is_some();
                (
                    WriteOp::PutCommitment {
                        transaction_uid: uid,
                        record,
                    },
                    Ok(WriteOutcome::CommitmentPut { replaced }),
                )
            }
            Op::RemoveCommitment(key) => {
                let uid = format!("1.5.{key}");
                let existed = self.commitments.remove(&uid).is_some();
                (
                    WriteOp::RemoveCommitment {
                        transaction_uid: uid,
                    },
                    Ok(WriteOutcome::CommitmentRemoved { existed }),
                )
            }
        }
    }
}

fn check_case(ops: &[Op], batch_sizes: &[usize]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let mut model = Model::new();
    let (writes, expected): (Vec<WriteOp>, Vec<ItemResult>) =
        ops.iter().map(|op| model.apply(op)).unzip();

    // Queue every batch before waiting, so the writer coalesces some of them.
    let writer = index.writer();
    let mut receivers = Vec::new();
    let mut writes = writes.into_iter().peekable();
    let mut sizes = batch_sizes.iter().cycle();
    while writes.peek().is_some() {
        let size = *sizes.next().unwrap_or(&1);
        let batch_ops: Vec<WriteOp> = writes.by_ref().take(size).collect();
        let (batch, receiver) = Batch::with_channel(batch_ops);
        writer.submit(batch).expect("submit");
        receivers.push(receiver);
    }
    let mut actual = Vec::new();
    for receiver in receivers {
        actual.extend(receiver.recv().expect("answer").expect("batch committed"));
    }
    prop_assert_eq!(actual.len(), expected.len());
    for (position, (actual, expected)) in actual.iter().zip(&expected).enumerate() {
        prop_assert_eq!(
            actual,
            expected,
            "operation {} ({:?})",
            position,
            ops[position]
        );
    }

    let read = index.read().expect("read");
    for study in 0..STUDIES {
        for series in 0..SERIES {
            for sop in 0..SOPS {
                let key = uids(study, series, sop);
                prop_assert_eq!(
                    read.instance(&key.0, &key.1, &key.2).expect("get"),
                    model.instances.get(&key).cloned()
                );
            }
        }
    }
    for sop in 0..SOPS {
        let sop = format!("9.{sop}");
        let expected = model
            .sops
            .get(&sop)
            .map(|(study, series)| Triplet::new(study.clone(), series.clone(), sop.clone()));
        prop_assert_eq!(read.triplet_of_sop(&sop).expect("sop"), expected.clone());
        let presence = read
            .sop_presence(&sop, "1.2.840.10008.5.1.4.1.1.2")
            .expect("presence");
        prop_assert_eq!(
            presence,
            if expected.is_some() {
                SopPresence::Stored
            } else {
                SopPresence::Absent
            }
        );
    }
    let quarantine = read.quarantine_entries(None, 10_000).expect("quarantine");
    prop_assert_eq!(
        quarantine.items,
        model.quarantine.values().cloned().collect::<Vec<_>>()
    );
    let commitments = read.commitments(None, 100).expect("commitments");
    let listed: Vec<(String, CommitmentRecord)> = commitments
        .items
        .into_iter()
        .map(|entry| (entry.transaction_uid, entry.record))
        .collect();
    prop_assert_eq!(
        listed,
        model.commitments.clone().into_iter().collect::<Vec<_>>()
    );

    // Study records and queries agree with what the model holds.
    let mut model_studies: BTreeMap<String, (u32, BTreeSet<String>)> = BTreeMap::new();
    for (study, series, _) in model.instances.keys() {
        let entry = model_studies.entry(study.clone()).or_default();
        entry.0 += 1;
        entry.1.insert(series.clone());
    }
    for study in 0..STUDIES {
        let uid = format!("1.1.{study}");
        let record = read.study(&uid).expect("study");
        match model_studies.get(&uid) {
            None => prop_assert!(record.is_none(), "study {} should be gone", uid),
            Some((instances, series)) => {
                let record = record.expect("study record");
                prop_assert_eq!(record.number_of_instances, *instances);
                prop_assert_eq!(record.number_of_series as usize, series.len());
                let modalities: BTreeSet<String> = series
                    .iter()
                    .map(|s| series_attributes(s).modality)
                    .collect();
                prop_assert_eq!(
                    record.modalities_in_study,
                    modalities.into_iter().collect::<Vec<_>>()
                );
            }
        }
        let patient_id = study_attributes(&uid).patient_id;
        let expected: Vec<String> = model_studies
            .keys()
            .filter(|other| study_attributes(other).patient_id == patient_id)
            .cloned()
            .collect();
        let query = StudyQuery {
            patient_id: Some(patient_id),
            ..Default::default()
        };
        let mut found: Vec<String> = read
            .query_studies(&query, 100)
            .expect("query")
            .items
            .into_iter()
            .map(|m| m.study_instance_uid)
            .collect();
        found.sort();
        prop_assert_eq!(found, expected);
    }
    let query = StudyQuery {
        modalities_in_study: Some("MR".into()),
        patient_name: Some("name*".into()),
        ..Default::default()
    };
    let found: BTreeSet<String> = read
        .query_studies(&query, 100)
        .expect("query")
        .items
        .into_iter()
        .map(|m| m.study_instance_uid)
        .collect();
    let expected: BTreeSet<String> = model_studies
        .iter()
        .filter(|(_, (_, series))| series.iter().any(|s| series_attributes(s).modality == "MR"))
        .map(|(study, _)| study.clone())
        .collect();
    prop_assert_eq!(found, expected);
    let mut live: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for file_id in 1..=model.next_file_id {
        let expected = if model.files.contains(&file_id) {
            location_of(file_id)
        } else {
            Location::File
        };
        prop_assert_eq!(read.location(FileId(file_id)).expect("location"), expected);
        if let Location::Record(place) = expected {
            let counted = live.entry(place.segment).or_default();
            counted.0 += place.length;
            counted.1 += 1;
        }
    }
    for (segment, state) in read.segments().expect("segments") {
        let (bytes, records) = live.remove(&segment).unwrap_or_default();
        prop_assert_eq!((state.live_bytes, state.live_records), (bytes, records));
    }
    prop_assert!(live.is_empty(), "segments without state: {:?}", live);
    let report = read.check_consistency(20).expect("check");
    prop_assert!(report.is_consistent(), "{:?}", report.problems);
    prop_assert_eq!(report.instances as usize, model.instances.len());
    Ok(())
}

#[test]
fn random_operation_sequences_match_the_model() {
    let config = Config {
        cases: 48,
        rng_seed: RngSeed::Fixed(0x5eed_1dec),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (
        proptest::collection::vec(op_strategy(), 1..80),
        proptest::collection::vec(1usize..8, 1..6),
    );
    runner
        .run(&strategy, |(ops, batch_sizes)| {
            check_case(&ops, &batch_sizes)
        })
        .expect("the index behaves like the model");
}
