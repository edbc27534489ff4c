//! The simulation's index: a model of the LMDB catalogue that applies the
//! engine's real write operations (`WriteOp::Store` with its duplicate
//! policy, `RemoveInDoubt`, `ClearInDoubt`) and answers with the real
//! result types, one transaction per batch, with `MDB_NOMETASYNC`'s
//! durability: a commit makes the previous commit durable (its flush of
//! data pages covers the earlier meta page), and its own state becomes
//! durable only with the next commit or the syncer's flush; a power cut
//! keeps the durable state, or the last committed one if its meta page
//! happened to reach the disk.
//!
//! What it leaves out of the real index: studies, series and the
//! secondary indexes (a SOP Instance UID always comes with the same study
//! and series here, so there is no UID conflict), commitment records.

use std::collections::{BTreeMap, BTreeSet};

use sluice_index::{
    BatchResult, Checksum, Disposition, DuplicatePolicy, FileId, InvalidInput, ItemResult,
    StoreOutcome, WriteOp, WriteOutcome,
};

use super::Rng;

/// A stored instance or a quarantine entry: its SOP Instance UID, file and
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) sop: String,
    pub(super) file_id: FileId,
    pub(super) checksum: Checksum,
    pub(super) size: u64,
}

/// What an in-doubt mark names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Doubt {
    Instance(String),
    Quarantine(u64),
}

/// One state of the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct State {
    pub(super) instances: BTreeMap<String, Entry>,
    pub(super) quarantine: BTreeMap<u64, Entry>,
    pub(super) in_doubt: BTreeMap<FileId, Doubt>,
    pub(super) file_ids: BTreeSet<FileId>,
    next_quarantine_id: u64,
}

impl State {
    /// Every entry (stored and quarantined) with where its file should be.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&Entry, bool)> {
        self.instances
            .values()
            .map(|entry| (entry, false))
            .chain(self.quarantine.values().map(|entry| (entry, true)))
    }

    pub(super) fn apply(&mut self, op: &WriteOp) -> ItemResult {
        match op {
            WriteOp::Store(request) => {
                let record = &request.instance.record;
                let sop = request.instance.triplet.sop_instance_uid.clone();
                let file_id = record.file_id;
                if !self.file_ids.insert(file_id) {
                    return Err(InvalidInput::FileIdInUse { file_id: file_id.0 });
                }
                let entry = Entry {
                    sop: sop.clone(),
                    file_id,
                    checksum: record.checksum,
                    size: record.file_size_bytes,
                };
                let outcome = match self.instances.get(&sop) {
                    None => {
                        self.instances.insert(sop.clone(), entry);
                        StoreOutcome::Stored
                    }
                    Some(existing) => {
                        let identical =
                            existing.checksum == entry.checksum && existing.size == entry.size;
                        let disposition = match (request.duplicate_policy, identical) {
                            (DuplicatePolicy::Reject, _) => {
                                self.file_ids.remove(&file_id);
                                Disposition::Rejected
                            }
                            // Not against an entry in doubt (`sluice-index`'s
                            // rule): its instance may still fail.
                            (DuplicatePolicy::DropIfIdentical, true)
                                if !self.in_doubt.contains_key(&existing.file_id) =>
                            {
                                self.file_ids.remove(&file_id);
                                Disposition::Dropped
                            }
                            _ => {
                                self.next_quarantine_id += 1;
                                let id = self.next_quarantine_id;
                                self.quarantine.insert(id, entry);
                                Disposition::Quarantined { quarantine_id: id }
                            }
                        };
                        if identical {
                            StoreOutcome::DuplicateIdentical(disposition)
                        } else {
                            StoreOutcome::Duplicate(disposition)
                        }
                    }
                };
                if request.in_doubt {
                    match outcome.disposition() {
                        None => {
                            self.in_doubt.insert(file_id, Doubt::Instance(sop));
                        }
                        Some(Disposition::Quarantined { quarantine_id }) => {
                            self.in_doubt
                                .insert(file_id, Doubt::Quarantine(*quarantine_id));
                        }
                        _ => {}
                    }
                }
                Ok(WriteOutcome::Store(outcome))
            }
            WriteOp::RemoveInDoubt(file_id) => {
                let removed = match self.in_doubt.remove(file_id) {
                    Some(Doubt::Instance(sop)) => self.remove_instance_of(&sop, *file_id),
                    Some(Doubt::Quarantine(id)) => self.remove_quarantine_of(id, *file_id),
                    None => false,
                };
                Ok(WriteOutcome::InDoubtRemoved { removed })
            }
            WriteOp::ClearInDoubt(file_ids) => {
                let cleared = file_ids
                    .iter()
                    .filter(|file_id| self.in_doubt.remove(file_id).is_some())
                    .count() as u64;
                Ok(WriteOutcome::InDoubtCleared { cleared })
            }
            other => panic!("the simulation does not submit {other:?}"),
        }
    }

    /// Removes the stored instance `sop` if it names `file_id`.
    pub(super) fn remove_instance_of(&mut self, sop: &str, file_id: FileId) -> bool {
        if self
            .instances
            .get(sop)
            .is_some_and(|entry| entry.file_id == file_id)
        {
            self.instances.remove(sop);
            self.file_ids.remove(&file_id);
            true
        } else {
            false
        }
    }

    /// Removes quarantine entry `id` if it names `file_id`.
    pub(super) fn remove_quarantine_of(&mut self, id: u64, file_id: FileId) -> bool {
        if self
            .quarantine
            .get(&id)
            .is_some_and(|entry| entry.file_id == file_id)
        {
            self.quarantine.remove(&id);
            self.file_ids.remove(&file_id);
            true
        } else {
            false
        }
    }
}

/// The index with its committed and durable states.
#[derive(Debug, Clone, Default)]
pub(super) struct ModelIndex {
    pub(super) committed: State,
    durable: State,
}

impl ModelIndex {
    /// One transaction of several batches (the writer coalesces the
    /// batches queued): each batch's result, all failed with `failed`.
    pub(super) fn commit_many(
        &mut self,
        batches: &[&[WriteOp]],
        failed: Option<sluice_index::IndexError>,
    ) -> Vec<BatchResult> {
        if let Some(error) = failed {
            return batches.iter().map(|_| Err(error.clone())).collect();
        }
        let mut next = self.committed.clone();
        let results = batches
            .iter()
            .map(|ops| Ok(ops.iter().map(|op| next.apply(op)).collect()))
            .collect();
        self.durable = std::mem::replace(&mut self.committed, next);
        results
    }

    /// The syncer's flush: the last commit is durable.
    pub(super) fn flush(&mut self) {
        self.durable = self.committed.clone();
    }

    /// Whether the last commit is not yet durable.
    pub(super) fn unflushed(&self) -> bool {
        self.durable != self.committed
    }

    /// What a power cut leaves: the durable state, or the last committed
    /// one if its meta page reached the disk.
    pub(super) fn power_cut(&self, rng: &mut Rng) -> State {
        if rng.chance(1, 2) {
            self.committed.clone()
        } else {
            self.durable.clone()
        }
    }
}
