//! Applying write operations inside one LMDB write transaction.
//!
//! Only the writer thread builds an [`Apply`]. It reads and writes through the
//! open transaction, so every decision (is the triplet stored? does the SOP
//! Instance UID live elsewhere?) sees the effects of the operations before it,
//! including those of other batches coalesced into the same transaction.
//!
//! Study and series records, and the segments' states, are cached for the
//! transaction and written once at [`Apply::flush`]: a batch of a thousand
//! instances of one series then rewrites its study and series records once,
//! not a thousand times, and a segment's state once. Anything that scans the
//! `series` table flushes the series cache first.
//!
//! An instance is stored under its series' id (`instances`); where a
//! SOP Instance UID is stored is asked of the SOP index (`sop_index`), whose
//! candidates are verified here against the transaction's own view of
//! `instances`. The candidates this transaction adds are kept in an
//! overlay (the SOP index is only written at commit) and handed to the
//! writer by [`Apply::take_sop_changes`].

mod hierarchy;
mod location;
mod marks;
mod quarantine;
mod sop;
mod store;

use std::borrow::Cow;
use std::collections::HashMap;

use heed::{PutFlags, RwTxn};

use crate::error::{EnvLimits, IndexError, InvalidInput};
use crate::keys::{
    check_uid, file_id_key, in_doubt_value, instance_key, patient_name_values, prefix_of,
    quarantine_key, read_u64, secondary_key, series_id_key, series_key, IN_DOUBT_INSTANCE,
    IN_DOUBT_QUARANTINE, SERIES_ID_MAX,
};
use crate::ops::{
    ConflictPolicy, Disposition, DuplicatePolicy, ItemResult, Released, StoreOutcome, StoreRequest,
    WriteOp, WriteOutcome,
};
use crate::records::{
    decode, encode_into, normalize_text, CommitmentRecord, FileId, InstanceRecord, NewInstance,
    QuarantineEntry, QuarantineReason, RecordDefaults, SeriesIdentity, SeriesRecord, StoredRecord,
    StoredSeries, StudyRecord, Triplet, AE_TITLE_BYTES_MAX, COMMITMENT_PAYLOAD_BYTES_MAX,
};
use crate::sop_index::{scan_candidates, SopHash, SopIndex, CANDIDATES_MAX};
use crate::tables::{
    Table, Tables, FILE_ROLE_INSTANCE, FILE_ROLE_QUARANTINE, META_NEXT_QUARANTINE_ID,
    META_NEXT_SERIES_ID,
};

/// The study attributes that have secondary-index entries, as they are in LMDB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct IndexedValues {
    patient_id: String,
    study_date: String,
    accession_number: String,
    /// `keys::patient_name_values` of the Patient's Name.
    patient_names: Vec<String>,
}

impl IndexedValues {
    fn of(record: Option<&StudyRecord>) -> IndexedValues {
        match record {
            None => IndexedValues::default(),
            Some(record) => IndexedValues {
                patient_id: record.attributes.patient_id.clone(),
                study_date: record.attributes.study_date.clone(),
                accession_number: record.attributes.accession_number.clone(),
                patient_names: patient_name_values(&record.attributes.patient_name),
            },
        }
    }
}

#[derive(Debug)]
struct CachedStudy {
    current: Option<StudyRecord>,
    /// The secondary keys' values as LMDB holds them, taken before this
    /// transaction first changed the study's attributes (`None`: it did
    /// not, so its secondary keys stand as they are).
    indexed: Option<IndexedValues>,
    dirty: bool,
}

impl CachedStudy {
    /// Call before the study's attributes change (or the study is made or
    /// goes): keeps the values its secondary keys have in LMDB, for
    /// [`Apply::flush`] to move the keys that changed.
    fn attributes_change(&mut self) {
        if self.indexed.is_none() {
            self.indexed = Some(IndexedValues::of(self.current.as_ref()));
        }
    }
}

#[derive(Debug)]
struct CachedSeries {
    /// The series as stored, or as this transaction left it (`None`: it
    /// holds no instance).
    current: Option<StoredSeries>,
    dirty: bool,
}

/// A segment's state as this transaction sees it (written at flush if
/// `dirty`).
#[derive(Debug)]
struct CachedSegment {
    state: crate::location::SegmentState,
    dirty: bool,
}

/// A SOP hash's candidates as this transaction sees them.
#[derive(Debug)]
struct CachedCandidates {
    series_ids: Vec<u64>,
    changed: bool,
}

/// What a transaction adds to the SOP index: the complete candidate lists
/// it changed (written to the LSM tree just before the LMDB commit), and
/// the additions themselves (logged in `sop_pending` in the commit).
#[derive(Debug, Default)]
pub(crate) struct SopChanges {
    pub(crate) lists: HashMap<SopHash, Vec<u64>>,
    pub(crate) additions: Vec<(SopHash, u64)>,
}

/// The series a triplet is stored under.
struct OwnSeries {
    /// The `series` key.
    key: Vec<u8>,
    /// The series' id (`None`: no such series).
    id: Option<u64>,
    /// The hash of the triplet's SOP Instance UID.
    sop_hash: SopHash,
}

/// A counter kept in `meta`, read once per transaction, written at flush.
#[derive(Debug)]
struct Counter {
    key: &'static [u8],
    next: Option<u64>,
    dirty: bool,
}

impl Counter {
    fn new(key: &'static [u8]) -> Counter {
        Counter {
            key,
            next: None,
            dirty: false,
        }
    }
}

/// The state of one write transaction.
pub(crate) struct Apply<'t, 'e> {
    txn: &'t mut RwTxn<'e>,
    tables: Tables,
    limits: EnvLimits,
    sop_index: &'t SopIndex,
    studies: HashMap<String, CachedStudy>,
    series: HashMap<Vec<u8>, CachedSeries>,
    candidates: HashMap<SopHash, CachedCandidates>,
    additions: Vec<(SopHash, u64)>,
    /// The segments whose state this transaction read or changed.
    segments: HashMap<u64, CachedSegment>,
    next_quarantine_id: Counter,
    next_series_id: Counter,
    buffer: Vec<u8>,
}

/// Checks what must hold before an instance can be keyed and stored.
fn validate(instance: &NewInstance) -> Result<(), InvalidInput> {
    let triplet = &instance.triplet;
    check_uid("StudyInstanceUID", &triplet.study_instance_uid)?;
    check_uid("SeriesInstanceUID", &triplet.series_instance_uid)?;
    check_uid("SOPInstanceUID", &triplet.sop_instance_uid)?;
    check_uid("SOPClassUID", &instance.record.sop_class_uid)?;
    check_uid("TransferSyntaxUID", &instance.record.transfer_syntax_uid)?;
    let record = &instance.record;
    if record.dataset_offset_bytes > record.file_size_bytes {
        return Err(InvalidInput::BadOffsets {
            dataset_offset_bytes: record.dataset_offset_bytes,
            file_size_bytes: record.file_size_bytes,
        });
    }
    Ok(())
}

/// The record as stored (its AE title normalised; borrowed when it is
/// already, as nearly every one is).
fn normalized_record(record: &InstanceRecord) -> Cow<'_, InstanceRecord> {
    let title = &record.calling_ae_title;
    let clean = title.len() <= AE_TITLE_BYTES_MAX
        && !title.contains('\0')
        && title.trim_matches(' ') == title;
    if clean {
        return Cow::Borrowed(record);
    }
    let mut record = record.clone();
    record.calling_ae_title =
        crate::keys::truncate_to_char_boundary(&normalize_text(title), AE_TITLE_BYTES_MAX)
            .to_owned();
    Cow::Owned(record)
}

/// The whole instance as stored and as quarantine entries keep it.
fn normalized_instance(instance: &NewInstance) -> NewInstance {
    NewInstance {
        triplet: instance.triplet.clone(),
        record: normalized_record(&instance.record).into_owned(),
        study: instance.study.normalized(),
        series: instance.series.normalized(),
    }
}

impl<'t, 'e> Apply<'t, 'e> {
    pub(crate) fn new(
        txn: &'t mut RwTxn<'e>,
        tables: Tables,
        limits: EnvLimits,
        sop_index: &'t SopIndex,
    ) -> Self {
        Apply {
            txn,
            tables,
            limits,
            sop_index,
            studies: HashMap::new(),
            series: HashMap::new(),
            candidates: HashMap::new(),
            additions: Vec::new(),
            segments: HashMap::new(),
            next_quarantine_id: Counter::new(META_NEXT_QUARANTINE_ID),
            next_series_id: Counter::new(META_NEXT_SERIES_ID),
            buffer: Vec::with_capacity(1024),
        }
    }

    fn lmdb(&self, operation: &'static str) -> impl Fn(heed::Error) -> IndexError {
        let limits = self.limits;
        move |error| IndexError::from_heed(operation, error, limits)
    }

    fn put(
        &mut self,
        table: Table,
        key: &[u8],
        value: &[u8],
        operation: &'static str,
    ) -> Result<(), IndexError> {
        table
            .put(self.txn, key, value)
            .map_err(self.lmdb(operation))
    }

    fn put_record<T>(
        &mut self,
        table: Table,
        name: &'static str,
        key: &[u8],
        value: &T,
    ) -> Result<(), IndexError>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                Vec<u8>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        let buffer = encode_into(name, value, std::mem::take(&mut self.buffer))?;
        let result = table
            .put(self.txn, key, &buffer)
            .map_err(self.lmdb("put record"));
        self.buffer = buffer;
        result
    }

    fn delete(
        &mut self,
        table: Table,
        key: &[u8],
        operation: &'static str,
    ) -> Result<bool, IndexError> {
        table.delete(self.txn, key).map_err(self.lmdb(operation))
    }

    /// Applies one operation.
    pub(crate) fn apply(&mut self, op: &WriteOp) -> Result<ItemResult, IndexError> {
        match op {
            WriteOp::Store(request) => {
                let result = self.store(request)?;
                if request.in_doubt {
                    self.mark_in_doubt(request, &result)?;
                }
                if let Some(flagged) = &request.flagged {
                    self.mark_flagged(request, &result, flagged)?;
                }
                self.place_record(request, &result)?;
                Ok(result)
            }
            WriteOp::ClearInDoubt(file_ids) => {
                let mut cleared = 0;
                for file_id in file_ids {
                    if self.delete(
                        self.tables.in_doubt,
                        &file_id_key(*file_id),
                        "clear in doubt",
                    )? {
                        cleared += 1;
                    }
                }
                Ok(Ok(WriteOutcome::InDoubtCleared { cleared }))
            }
            WriteOp::RemoveInDoubt(file_id) => Ok(Ok(WriteOutcome::InDoubtRemoved {
                removed: self.remove_in_doubt(*file_id)?,
            })),
            WriteOp::Remove(triplet) => {
                let valid = check_uid("StudyInstanceUID", &triplet.study_instance_uid)
                    .and(check_uid("SeriesInstanceUID", &triplet.series_instance_uid))
                    .and(check_uid("SOPInstanceUID", &triplet.sop_instance_uid));
                if valid.is_err() {
                    // Such a triplet cannot be stored, so there is nothing to remove.
                    return Ok(Ok(WriteOutcome::Removed(None)));
                }
                Ok(Ok(WriteOutcome::Removed(self.remove_triplet(triplet)?)))
            }
            WriteOp::Demote { instance, hold } => self.demote(instance, hold.clone()),
            WriteOp::ReleaseQuarantine(id) => self.release(*id),
            WriteOp::Relocate { file_id, from, to } => self.relocate(*file_id, *from, *to),
            WriteOp::SealSegment(segment) => {
                self.seal_segment(*segment)?;
                Ok(Ok(WriteOutcome::SegmentSealed))
            }
            WriteOp::SegmentUploaded { segment, object } => self.segment_uploaded(*segment, object),
            WriteOp::SegmentEvicted(segment) => self.segment_evicted(*segment),
            WriteOp::PurgeQuarantine(id) => Ok(Ok(WriteOutcome::Purged(self.purge(*id)?))),
            WriteOp::PutCommitment {
                transaction_uid,
                record,
            } => self.put_commitment(transaction_uid, record),
            WriteOp::RemoveCommitment { transaction_uid } => {
                if check_uid("TransactionUID", transaction_uid).is_err() {
                    return Ok(Ok(WriteOutcome::CommitmentRemoved { existed: false }));
                }
                let existed = self.delete(
                    self.tables.commitments,
                    transaction_uid.as_bytes(),
                    "remove commitment",
                )?;
                Ok(Ok(WriteOutcome::CommitmentRemoved { existed }))
            }
        }
    }

    /// Moves a study's secondary keys from the values LMDB holds
    /// (`old`) to those of its record (`current`), where they differ.
    fn move_secondary_keys(
        &mut self,
        study: &str,
        old: &IndexedValues,
        current: Option<&StudyRecord>,
    ) -> Result<(), IndexError> {
        let new = IndexedValues::of(current);
        if *old == new {
            return Ok(());
        }
        let secondary = [
            (
                self.tables.study_by_patient_id,
                &old.patient_id,
                &new.patient_id,
            ),
            (self.tables.study_by_date, &old.study_date, &new.study_date),
            (
                self.tables.study_by_accession,
                &old.accession_number,
                &new.accession_number,
            ),
        ];
        for (table, old, new) in secondary {
            if old != new && !old.is_empty() {
                self.delete(table, &secondary_key(old, study), "delete secondary key")?;
            }
            if old != new && !new.is_empty() {
                self.put(table, &secondary_key(new, study), &[], "put secondary key")?;
            }
        }
        let (old_names, new_names) = (&old.patient_names, &new.patient_names);
        for old in old_names.iter().filter(|old| !new_names.contains(old)) {
            let key = secondary_key(old, study);
            self.delete(self.tables.study_by_patient_name, &key, "delete name key")?;
        }
        for new in new_names.iter().filter(|new| !old_names.contains(new)) {
            let key = secondary_key(new, study);
            self.put(self.tables.study_by_patient_name, &key, &[], "put name key")?;
        }
        Ok(())
    }

    /// Writes every cached change; call before commit.
    pub(crate) fn flush(&mut self) -> Result<(), IndexError> {
        self.flush_segments()?;
        self.flush_series()?;
        let studies = std::mem::take(&mut self.studies);
        for (study, cached) in studies {
            if !cached.dirty {
                continue;
            }
            if let Some(old_indexed) = &cached.indexed {
                self.move_secondary_keys(&study, old_indexed, cached.current.as_ref())?;
            }
            match &cached.current {
                Some(record) => {
                    self.put_record(self.tables.studies, "studies", study.as_bytes(), record)?
                }
                None => {
                    self.delete(self.tables.studies, study.as_bytes(), "delete study")?;
                }
            }
        }
        for counter in [&mut self.next_quarantine_id, &mut self.next_series_id] {
            if let (true, Some(next)) = (counter.dirty, counter.next) {
                let key = counter.key;
                counter.dirty = false;
                self.tables
                    .meta
                    .put(self.txn, key, &next.to_be_bytes())
                    .map_err(|error| IndexError::from_heed("put meta", error, self.limits))?;
            }
        }
        Ok(())
    }
}
