//! Applying write operations inside one LMDB write transaction.
//!
//! Only the writer thread builds an [`Apply`]. It reads and writes through the
//! open transaction, so every decision (is the triplet stored? does the SOP
//! Instance UID live elsewhere?) sees the effects of the operations before it,
//! including those of other batches coalesced into the same transaction.
//!
//! Study and series records are cached for the transaction and written once at
//! [`Apply::flush`]: a batch of a thousand instances of one series then
//! rewrites its study and series records once, not a thousand times. Anything
//! that scans the `series` table flushes the series cache first.
//!
//! An instance is stored under its series' id (`instances`); where a
//! SOP Instance UID is stored is asked of the SOP index (`sop_index`), whose
//! candidates are verified here against the transaction's own view of
//! `instances`. The candidates this transaction adds are kept in an
//! overlay (the SOP index is only written at commit) and handed to the
//! writer by [`Apply::take_sop_changes`].

use std::collections::HashMap;

use heed::{PutFlags, RwTxn};

use crate::error::{EnvLimits, IndexError, InvalidInput};
use crate::keys::{
    check_uid, file_id_key, in_doubt_value, instance_key, prefix_of, quarantine_key, read_u64,
    secondary_key, series_id_key, series_key, IN_DOUBT_INSTANCE, IN_DOUBT_QUARANTINE,
    SERIES_ID_MAX,
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
}

impl IndexedValues {
    fn of(record: Option<&StudyRecord>) -> IndexedValues {
        match record {
            None => IndexedValues::default(),
            Some(record) => IndexedValues {
                patient_id: record.attributes.patient_id.clone(),
                study_date: record.attributes.study_date.clone(),
                accession_number: record.attributes.accession_number.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct CachedStudy {
    current: Option<StudyRecord>,
    indexed: IndexedValues,
    dirty: bool,
}

#[derive(Debug)]
struct CachedSeries {
    /// The series as stored, or as this transaction left it (`None`: it
    /// holds no instance).
    current: Option<StoredSeries>,
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

/// The `series` key of a triplet and its series' id (`None`: no such series).
type OwnSeries = (Vec<u8>, Option<u64>);

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

/// The record as stored (its AE title normalised).
fn normalized_record(record: &InstanceRecord) -> InstanceRecord {
    let mut record = record.clone();
    let title = &record.calling_ae_title;
    let clean = title.len() <= AE_TITLE_BYTES_MAX
        && !title.contains('\0')
        && title.trim_matches(' ') == title;
    if !clean {
        record.calling_ae_title =
            crate::keys::truncate_to_char_boundary(&normalize_text(title), AE_TITLE_BYTES_MAX)
                .to_owned();
    }
    record
}

/// The whole instance as stored and as quarantine entries keep it.
fn normalized_instance(instance: &NewInstance) -> NewInstance {
    NewInstance {
        triplet: instance.triplet.clone(),
        record: normalized_record(&instance.record),
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
            WriteOp::ReleaseQuarantine(id) => self.release(*id),
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

    /// Records the new file in `in_doubt` when the store made an entry name
    /// it (stored, or held in quarantine), with that entry.
    fn mark_in_doubt(
        &mut self,
        request: &StoreRequest,
        result: &ItemResult,
    ) -> Result<(), IndexError> {
        let value = match result {
            Ok(WriteOutcome::Store(outcome)) => match outcome.disposition() {
                None | Some(Disposition::Replaced { .. }) => in_doubt_value(
                    IN_DOUBT_INSTANCE,
                    request.instance.triplet.sop_instance_uid.as_bytes(),
                ),
                Some(Disposition::Quarantined { quarantine_id }) => {
                    in_doubt_value(IN_DOUBT_QUARANTINE, &quarantine_key(*quarantine_id))
                }
                Some(_) => return Ok(()),
            },
            _ => return Ok(()),
        };
        let key = file_id_key(request.instance.record.file_id);
        self.put(self.tables.in_doubt, &key, &value, "mark in doubt")
    }

    /// The candidates of a SOP Instance UID: the series ids it may be
    /// stored under, as this transaction sees them.
    fn candidates_of(&mut self, sop: &str) -> Result<(SopHash, Vec<u64>), IndexError> {
        let hash = self.sop_index.hash(sop);
        if let Some(cached) = self.candidates.get(&hash) {
            return Ok((hash, cached.series_ids.clone()));
        }
        let series_ids = match self.sop_index.candidates(hash)? {
            Some(series_ids) => series_ids,
            None => scan_candidates(&*self.txn, self.tables.instances, sop, self.limits)?,
        };
        self.candidates.insert(
            hash,
            CachedCandidates {
                series_ids: series_ids.clone(),
                changed: false,
            },
        );
        Ok((hash, series_ids))
    }

    /// Records that `sop` is stored under `series_id` (a no-op if that is
    /// already a candidate). The caller checked the bound beforehand.
    fn add_candidate(&mut self, sop: &str, series_id: u64) -> Result<(), IndexError> {
        let (hash, _) = self.candidates_of(sop)?;
        let cached = self
            .candidates
            .get_mut(&hash)
            .ok_or_else(|| IndexError::Corrupt {
                table: "sop_index",
                detail: "candidate cache".into(),
            })?;
        if !cached.series_ids.contains(&series_id) {
            assert!(
                cached.series_ids.len() < CANDIDATES_MAX,
                "the candidate bound is checked before any write"
            );
            cached.series_ids.push(series_id);
            cached.changed = true;
            self.additions.push((hash, series_id));
        }
        Ok(())
    }

    /// The series key and id (`None`: no such series yet) a triplet would
    /// be stored under, or the refusal if storing it there would need a SOP
    /// index candidate past the bound. Checked before anything is written.
    fn own_series_if_room(
        &mut self,
        triplet: &Triplet,
    ) -> Result<Result<OwnSeries, InvalidInput>, IndexError> {
        let key = series_key(&triplet.study_instance_uid, &triplet.series_instance_uid);
        let own = self.series_id_of(&key)?;
        let (_, candidates) = self.candidates_of(&triplet.sop_instance_uid)?;
        if candidates.len() >= CANDIDATES_MAX && !own.is_some_and(|id| candidates.contains(&id)) {
            return Ok(Err(InvalidInput::SopInstanceUidOverused {
                limit: CANDIDATES_MAX,
            }));
        }
        Ok(Ok((key, own)))
    }

    /// The SOP index changes of this transaction (call after the last
    /// operation).
    pub(crate) fn take_sop_changes(&mut self) -> SopChanges {
        let lists = self
            .candidates
            .drain()
            .filter(|(_, cached)| cached.changed)
            .map(|(hash, cached)| (hash, cached.series_ids))
            .collect();
        SopChanges {
            lists,
            additions: std::mem::take(&mut self.additions),
        }
    }

    /// Whether anything is stored under `series_id ++ sop`.
    fn is_stored(&self, series_id: u64, sop: &str) -> Result<bool, IndexError> {
        Ok(self
            .tables
            .instances
            .get(self.txn, &instance_key(series_id, sop))
            .map_err(self.lmdb("get instance"))?
            .is_some())
    }

    /// Records what lenient checks found in the new file when the store made
    /// an entry name it (stored, or held in quarantine).
    fn mark_flagged(
        &mut self,
        request: &StoreRequest,
        result: &ItemResult,
        flagged: &[u8],
    ) -> Result<(), IndexError> {
        let named = match result {
            Ok(WriteOutcome::Store(outcome)) => matches!(
                outcome.disposition(),
                None | Some(Disposition::Replaced { .. } | Disposition::Quarantined { .. })
            ),
            _ => false,
        };
        if !named {
            return Ok(());
        }
        let key = file_id_key(request.instance.record.file_id);
        let value = flagged
            .get(..flagged.len().min(crate::records::FLAGGED_PAYLOAD_BYTES_MAX))
            .unwrap_or_default();
        self.put(self.tables.flagged, &key, value, "mark flagged")
    }

    /// A file no entry references any more: its file id and, if it was
    /// flagged, its `flagged` row go.
    fn forget_file(&mut self, file_id: FileId) -> Result<(), IndexError> {
        self.release_file_id(file_id)?;
        self.delete(self.tables.flagged, &file_id_key(file_id), "delete flagged")?;
        Ok(())
    }

    /// Removes the entry the in-doubt mark of `file_id` names, if it still
    /// names that file, and the mark; whether an entry was removed.
    fn remove_in_doubt(&mut self, file_id: FileId) -> Result<bool, IndexError> {
        let corrupt = |detail: &str| IndexError::Corrupt {
            table: "in_doubt",
            detail: detail.to_owned(),
        };
        let key = file_id_key(file_id);
        let Some(value) = self
            .tables
            .in_doubt
            .get(self.txn, &key)
            .map_err(self.lmdb("get in doubt"))?
            .map(<[u8]>::to_vec)
        else {
            return Ok(false);
        };
        let removed = match value.split_first() {
            Some((&IN_DOUBT_INSTANCE, sop)) => {
                let sop = std::str::from_utf8(sop).map_err(|_| corrupt("SOP UID not UTF-8"))?;
                match self.find_sop(sop)? {
                    Some((_, triplet, record)) if record.file_id == file_id => {
                        self.remove_triplet(&triplet)?.is_some()
                    }
                    _ => false,
                }
            }
            Some((&IN_DOUBT_QUARANTINE, id)) => {
                let id = read_u64(id).ok_or_else(|| corrupt("bad quarantine id"))?;
                match self.quarantine_entry(id)? {
                    Some(entry) if entry.instance.record.file_id == file_id => {
                        self.drop_quarantine_entry(&entry)?;
                        true
                    }
                    _ => false,
                }
            }
            _ => return Err(corrupt("unknown entry tag")),
        };
        self.delete(self.tables.in_doubt, &key, "remove in doubt")?;
        if removed {
            // A failed instance is not flagged either (a quarantine entry
            // taken keeps its row for a release; here it goes).
            self.delete(self.tables.flagged, &key, "remove flagged")?;
        }
        Ok(removed)
    }

    /// The record stored under `series_id ++ sop`, if any.
    fn stored_record(&self, series_id: u64, sop: &str) -> Result<Option<StoredRecord>, IndexError> {
        match self
            .tables
            .instances
            .get(self.txn, &instance_key(series_id, sop))
            .map_err(self.lmdb("get instance"))?
        {
            None => Ok(None),
            Some(bytes) => decode::<StoredRecord>("instances", bytes).map(Some),
        }
    }

    /// The stored series' id (`None`: no such series).
    fn series_id_of(&mut self, key: &[u8]) -> Result<Option<u64>, IndexError> {
        Ok(self
            .series_entry(key)?
            .current
            .as_ref()
            .map(|series| series.id))
    }

    /// The record defaults of a series that exists.
    fn series_defaults(&self, key: &[u8]) -> Result<&RecordDefaults, IndexError> {
        self.series
            .get(key)
            .and_then(|cached| cached.current.as_ref())
            .map(|series| &series.defaults)
            .ok_or_else(|| IndexError::Corrupt {
                table: "series",
                detail: "defaults of a series that is not cached".into(),
            })
    }

    /// The study and series a series id names.
    fn identity(&self, series_id: u64) -> Result<SeriesIdentity, IndexError> {
        let bytes = self
            .tables
            .series_ids
            .get(self.txn, &series_id_key(series_id))
            .map_err(self.lmdb("get series id"))?
            .ok_or_else(|| IndexError::Corrupt {
                table: "series_ids",
                detail: format!("series id {series_id} holds instances but names no series"),
            })?;
        decode::<SeriesIdentity>("series_ids", bytes)
    }

    /// Where a SOP Instance UID is stored: its series id, the series, and
    /// its record (the candidates verified against `instances`).
    fn find_sop(
        &mut self,
        sop: &str,
    ) -> Result<Option<(u64, Triplet, InstanceRecord)>, IndexError> {
        let (_, candidates) = self.candidates_of(sop)?;
        for series_id in candidates {
            if let Some(record) = self.stored_record(series_id, sop)? {
                let identity = self.identity(series_id)?;
                let triplet = Triplet::new(
                    identity.study_instance_uid,
                    identity.series_instance_uid,
                    sop,
                );
                return Ok(Some((
                    series_id,
                    triplet,
                    record.expand(&identity.defaults),
                )));
            }
        }
        Ok(None)
    }

    /// Records `file_id` with `role` unless it is already referenced (one
    /// B-tree descent checks and inserts); false if it was.
    fn claim_file_id(&mut self, file_id: FileId, role: u8) -> Result<bool, IndexError> {
        let key = file_id_key(file_id);
        match self
            .tables
            .file_ids
            .put_with_flags(self.txn, PutFlags::NO_OVERWRITE, &key, &[role])
        {
            Ok(()) => Ok(true),
            Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => Ok(false),
            Err(error) => Err(IndexError::from_heed("claim file id", error, self.limits)),
        }
    }

    fn release_file_id(&mut self, file_id: FileId) -> Result<(), IndexError> {
        self.delete(
            self.tables.file_ids,
            &file_id_key(file_id),
            "release file id",
        )
        .map(|_| ())
    }

    fn store(&mut self, request: &StoreRequest) -> Result<ItemResult, IndexError> {
        let instance = &request.instance;
        if let Err(invalid) = validate(instance) {
            return Ok(Err(invalid));
        }
        let record = normalized_record(&instance.record);
        let triplet = &instance.triplet;
        let sop = &triplet.sop_instance_uid;
        let (own_key, own) = match self.own_series_if_room(triplet)? {
            Ok(own) => own,
            Err(invalid) => return Ok(Err(invalid)),
        };
        let file_id = record.file_id;
        if !self.claim_file_id(file_id, FILE_ROLE_INSTANCE)? {
            return Ok(Err(InvalidInput::FileIdInUse { file_id: file_id.0 }));
        }
        // In a series that exists, one descent writes the instance, or finds
        // the triplet stored: a duplicate.
        let inserted = match own {
            Some(own_id) => {
                let stored = StoredRecord::compact(&record, self.series_defaults(&own_key)?);
                let encoded = encode_into("instances", &stored, std::mem::take(&mut self.buffer))?;
                let key = instance_key(own_id, sop);
                let existing = self
                    .tables
                    .instances
                    .get_or_put(self.txn, &key, &encoded)
                    .map_err(self.lmdb("put instance"))?
                    .map(<[u8]>::to_vec);
                self.buffer = encoded;
                if let Some(existing) = existing {
                    let defaults = self.series_defaults(&own_key)?.clone();
                    let previous =
                        decode::<StoredRecord>("instances", &existing)?.expand(&defaults);
                    return self
                        .duplicate(request, record, own_id, &defaults, previous)
                        .map(Ok);
                }
                Some(key)
            }
            None => None,
        };
        // The SOP Instance UID stored under another series: a conflict (the
        // instance just written, if any, is taken back).
        let (_, candidates) = self.candidates_of(sop)?;
        for candidate in candidates {
            if own == Some(candidate) {
                continue;
            }
            if self.is_stored(candidate, sop)? {
                if let Some(key) = &inserted {
                    self.delete(self.tables.instances, key, "take back instance")?;
                }
                let identity = self.identity(candidate)?;
                let stored = Triplet::new(
                    identity.study_instance_uid,
                    identity.series_instance_uid,
                    sop.as_str(),
                );
                return self.conflict(request, stored).map(Ok);
            }
        }
        match own {
            Some(own_id) => {
                self.add_candidate(sop, own_id)?;
                self.count_in_series_and_study(instance, true)?;
            }
            None => self.insert_new(instance, &record, true)?,
        }
        Ok(Ok(WriteOutcome::Store(StoreOutcome::Stored)))
    }

    /// The store of a triplet already stored (`previous`), by policy.
    fn duplicate(
        &mut self,
        request: &StoreRequest,
        record: InstanceRecord,
        series_id: u64,
        defaults: &RecordDefaults,
        previous: InstanceRecord,
    ) -> Result<WriteOutcome, IndexError> {
        let instance = &request.instance;
        let identical = previous.checksum == record.checksum
            && previous.dataset_size_bytes() == record.dataset_size_bytes();
        let reason = if identical {
            QuarantineReason::DuplicateIdentical
        } else {
            QuarantineReason::Duplicate
        };
        // An entry in doubt is not a promise yet: its instance may still
        // fail and have it removed, so a newcomer identical to it is not
        // dropped (it would then be answered success with nothing holding
        // it) but held in quarantine, as under `Quarantine`.
        let holder_in_doubt = identical
            && request.duplicate_policy == DuplicatePolicy::DropIfIdentical
            && self
                .tables
                .in_doubt
                .get(self.txn, &file_id_key(previous.file_id))
                .map_err(self.lmdb("get in doubt"))?
                .is_some();
        let disposition = match (request.duplicate_policy, identical) {
            (DuplicatePolicy::Reject, _) => {
                self.release_file_id(record.file_id)?;
                Disposition::Rejected
            }
            (DuplicatePolicy::DropIfIdentical, true) if !holder_in_doubt => {
                self.release_file_id(record.file_id)?;
                Disposition::Dropped
            }
            (DuplicatePolicy::Replace, _) => {
                let key = instance_key(series_id, &instance.triplet.sop_instance_uid);
                self.put_record(
                    self.tables.instances,
                    "instances",
                    &key,
                    &StoredRecord::compact(&record, defaults),
                )?;
                self.forget_file(previous.file_id)?;
                self.fill_series_and_study(instance)?;
                Disposition::Replaced { previous }
            }
            (DuplicatePolicy::Quarantine | DuplicatePolicy::DropIfIdentical, _) => {
                Disposition::Quarantined {
                    quarantine_id: self.quarantine(normalized_instance(instance), reason)?,
                }
            }
        };
        Ok(WriteOutcome::Store(if identical {
            StoreOutcome::DuplicateIdentical(disposition)
        } else {
            StoreOutcome::Duplicate(disposition)
        }))
    }

    /// The store of a SOP Instance UID held by another triplet (`stored`), by policy.
    fn conflict(
        &mut self,
        request: &StoreRequest,
        stored: Triplet,
    ) -> Result<WriteOutcome, IndexError> {
        let instance = &request.instance;
        let disposition = match request.conflict_policy {
            ConflictPolicy::Reject => {
                self.release_file_id(instance.record.file_id)?;
                Disposition::Rejected
            }
            ConflictPolicy::Replace => {
                let previous =
                    self.remove_triplet(&stored)?
                        .ok_or_else(|| IndexError::Corrupt {
                            table: "instances",
                            detail: format!(
                                "{} vanished during a replace",
                                stored.sop_instance_uid
                            ),
                        })?;
                let normalized = normalized_instance(instance);
                self.insert_new(&normalized, &normalized.record, false)?;
                Disposition::Replaced { previous }
            }
            ConflictPolicy::Quarantine => Disposition::Quarantined {
                quarantine_id: self.quarantine(
                    normalized_instance(instance),
                    QuarantineReason::SopInstanceConflict {
                        stored: stored.clone(),
                    },
                )?,
            },
        };
        Ok(WriteOutcome::Store(StoreOutcome::SopInstanceConflict {
            stored,
            disposition,
        }))
    }

    fn study_entry(&mut self, study: &str) -> Result<&mut CachedStudy, IndexError> {
        if !self.studies.contains_key(study) {
            let current = match self
                .tables
                .studies
                .get(self.txn, study.as_bytes())
                .map_err(self.lmdb("get study"))?
            {
                None => None,
                Some(bytes) => Some(decode::<StudyRecord>("studies", bytes)?),
            };
            let indexed = IndexedValues::of(current.as_ref());
            self.studies.insert(
                study.to_owned(),
                CachedStudy {
                    current,
                    indexed,
                    dirty: false,
                },
            );
        }
        self.studies
            .get_mut(study)
            .ok_or_else(|| IndexError::Corrupt {
                table: "studies",
                detail: "study cache".into(),
            })
    }

    fn series_entry(&mut self, key: &[u8]) -> Result<&mut CachedSeries, IndexError> {
        if !self.series.contains_key(key) {
            let current = match self
                .tables
                .series
                .get(self.txn, key)
                .map_err(self.lmdb("get series"))?
            {
                None => None,
                Some(bytes) => Some(decode::<StoredSeries>("series", bytes)?),
            };
            self.series.insert(
                key.to_owned(),
                CachedSeries {
                    current,
                    dirty: false,
                },
            );
        }
        self.series.get_mut(key).ok_or_else(|| IndexError::Corrupt {
            table: "series",
            detail: "series cache".into(),
        })
    }

    /// The next value of a `meta` counter (ids start at 1).
    fn next_of(&mut self, which: fn(&mut Self) -> &mut Counter) -> Result<u64, IndexError> {
        let key = which(self).key;
        let id = match which(self).next {
            Some(id) => id,
            None => match self
                .tables
                .meta
                .get(self.txn, key)
                .map_err(self.lmdb("get meta"))?
            {
                None => 1,
                Some(bytes) => read_u64(bytes).ok_or_else(|| IndexError::Corrupt {
                    table: "meta",
                    detail: format!("{} is not 8 bytes", String::from_utf8_lossy(key)),
                })?,
            },
        };
        let counter = which(self);
        counter.next = Some(id.saturating_add(1));
        counter.dirty = true;
        Ok(id)
    }

    /// Writes a new instance (`record` normalised; the instance's attributes
    /// normalised unless `raw`), under its series (created, with a new id,
    /// if it has no instance), and counts it.
    fn insert_new(
        &mut self,
        instance: &NewInstance,
        record: &InstanceRecord,
        raw: bool,
    ) -> Result<(), IndexError> {
        let triplet = &instance.triplet;
        let key = series_key(&triplet.study_instance_uid, &triplet.series_instance_uid);
        let series_id = match self.series_id_of(&key)? {
            Some(existing) => existing,
            None => {
                let series_id = self.next_of(|apply| &mut apply.next_series_id)?;
                // 2^56 series: never reached; asserted because instance keys
                // rely on it (`keys::SERIES_ID_MAX`).
                assert!(series_id <= SERIES_ID_MAX, "series ids exhausted");
                let defaults = RecordDefaults::of(record);
                let attributes = if raw {
                    instance.series.normalized()
                } else {
                    instance.series.clone()
                };
                // Written at once (not at flush): a later store of this
                // transaction may meet the id as a candidate.
                self.put_record(
                    self.tables.series_ids,
                    "series_ids",
                    &series_id_key(series_id),
                    &SeriesIdentity {
                        study_instance_uid: triplet.study_instance_uid.clone(),
                        series_instance_uid: triplet.series_instance_uid.clone(),
                        defaults: defaults.clone(),
                    },
                )?;
                let entry = self.series_entry(&key)?;
                entry.current = Some(StoredSeries {
                    id: series_id,
                    defaults,
                    record: SeriesRecord {
                        attributes,
                        number_of_instances: 0,
                    },
                });
                entry.dirty = true;
                series_id
            }
        };
        let stored = StoredRecord::compact(record, self.series_defaults(&key)?);
        self.put_record(
            self.tables.instances,
            "instances",
            &instance_key(series_id, &triplet.sop_instance_uid),
            &stored,
        )?;
        self.put(
            self.tables.file_ids,
            &file_id_key(record.file_id),
            &[FILE_ROLE_INSTANCE],
            "put file id",
        )?;
        self.add_candidate(&triplet.sop_instance_uid, series_id)?;
        self.count_in_series_and_study(instance, raw)
    }

    /// Counts a new instance in its series (which exists) and study.
    /// Attributes are normalised only when they are used: for a new study,
    /// or to fill an empty attribute.
    fn count_in_series_and_study(
        &mut self,
        instance: &NewInstance,
        raw: bool,
    ) -> Result<(), IndexError> {
        let triplet = &instance.triplet;
        let study = &triplet.study_instance_uid;
        let key = series_key(study, &triplet.series_instance_uid);
        let normalize_series = |attributes: &crate::records::SeriesAttributes| {
            if raw {
                attributes.normalized()
            } else {
                attributes.clone()
            }
        };
        let series_entry = self.series_entry(&key)?;
        series_entry.dirty = true;
        let series_record = &mut series_entry
            .current
            .as_mut()
            .ok_or_else(|| IndexError::Corrupt {
                table: "series",
                detail: "an instance counted in a series that does not exist".into(),
            })?
            .record;
        let new_series = series_record.number_of_instances == 0;
        series_record.number_of_instances = series_record.number_of_instances.saturating_add(1);
        if !new_series && series_record.attributes.has_empty() {
            series_record
                .attributes
                .fill_empty_from(&normalize_series(&instance.series));
        }
        let modality = series_record.attributes.modality.clone();

        let normalize_study = |attributes: &crate::records::StudyAttributes| {
            if raw {
                attributes.normalized()
            } else {
                attributes.clone()
            }
        };
        let study_entry = self.study_entry(study)?;
        study_entry.dirty = true;
        let new_study = study_entry.current.is_none();
        let study_record = study_entry.current.get_or_insert_with(|| StudyRecord {
            attributes: normalize_study(&instance.study),
            modalities_in_study: Vec::new(),
            number_of_series: 0,
            number_of_instances: 0,
        });
        study_record.number_of_instances = study_record.number_of_instances.saturating_add(1);
        if new_series {
            study_record.number_of_series = study_record.number_of_series.saturating_add(1);
        }
        if !new_study && study_record.attributes.has_empty() {
            study_record
                .attributes
                .fill_empty_from(&normalize_study(&instance.study));
        }
        if !modality.is_empty() {
            if let Err(position) = study_record.modalities_in_study.binary_search(&modality) {
                study_record.modalities_in_study.insert(position, modality);
            }
        }
        Ok(())
    }

    /// Fills empty series and study attributes from a replacing instance.
    fn fill_series_and_study(&mut self, instance: &NewInstance) -> Result<(), IndexError> {
        let triplet = &instance.triplet;
        let series_entry = self.series_entry(&series_key(
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
        ))?;
        if let Some(series) = series_entry.current.as_mut() {
            if series.record.attributes.has_empty() {
                series_entry.dirty |= series
                    .record
                    .attributes
                    .fill_empty_from(&instance.series.normalized());
            }
        }
        let study_entry = self.study_entry(&triplet.study_instance_uid)?;
        if let Some(record) = study_entry.current.as_mut() {
            if record.attributes.has_empty() {
                study_entry.dirty |= record
                    .attributes
                    .fill_empty_from(&instance.study.normalized());
            }
        }
        Ok(())
    }

    /// Removes a stored instance and uncounts it; `None` if it is not stored.
    /// Its SOP index candidate stays (candidates are never removed: a
    /// reader verifies them).
    fn remove_triplet(&mut self, triplet: &Triplet) -> Result<Option<InstanceRecord>, IndexError> {
        let (study, series, sop) = (
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
            &triplet.sop_instance_uid,
        );
        let series_key = series_key(study, series);
        let Some(series_id) = self.series_id_of(&series_key)? else {
            return Ok(None);
        };
        let Some(stored) = self.stored_record(series_id, sop)? else {
            return Ok(None);
        };
        let record = stored.expand(self.series_defaults(&series_key)?);
        self.delete(
            self.tables.instances,
            &instance_key(series_id, sop),
            "delete instance",
        )?;
        self.forget_file(record.file_id)?;

        let series_entry = self.series_entry(&series_key)?;
        series_entry.dirty = true;
        let mut series_gone = false;
        if let Some(stored_series) = series_entry.current.as_mut() {
            let count = &mut stored_series.record.number_of_instances;
            *count = count.saturating_sub(1);
            if *count == 0 {
                series_entry.current = None;
                series_gone = true;
            }
        }
        let modalities = if series_gone {
            // The id is never used again; instances it named are gone.
            self.delete(
                self.tables.series_ids,
                &series_id_key(series_id),
                "delete series id",
            )?;
            Some(self.modalities_of_study(study)?)
        } else {
            None
        };
        let study_entry = self.study_entry(study)?;
        study_entry.dirty = true;
        if let Some(study_record) = study_entry.current.as_mut() {
            study_record.number_of_instances = study_record.number_of_instances.saturating_sub(1);
            if let Some(modalities) = modalities {
                study_record.number_of_series = study_record.number_of_series.saturating_sub(1);
                study_record.modalities_in_study = modalities;
            }
            if study_record.number_of_instances == 0 {
                study_entry.current = None;
            }
        }
        Ok(Some(record))
    }

    /// The distinct modalities of a study's series, sorted, as of now.
    fn modalities_of_study(&mut self, study: &str) -> Result<Vec<String>, IndexError> {
        self.flush_series()?;
        let prefix = prefix_of(study.as_bytes());
        let mut modalities: Vec<String> = Vec::new();
        let iter = self
            .tables
            .series
            .prefix_iter(self.txn, &prefix)
            .map_err(self.lmdb("scan series"))?;
        for entry in iter {
            let (_, bytes) = entry.map_err(self.lmdb("scan series"))?;
            let series =
                crate::records::access::<crate::records::ArchivedStoredSeries>("series", bytes)?;
            let modality = series.record.attributes.modality.as_str();
            if !modality.is_empty() && !modalities.iter().any(|known| known == modality) {
                modalities.push(modality.to_owned());
            }
        }
        modalities.sort();
        Ok(modalities)
    }

    fn quarantine(
        &mut self,
        instance: NewInstance,
        reason: QuarantineReason,
    ) -> Result<u64, IndexError> {
        let id = self.next_of(|apply| &mut apply.next_quarantine_id)?;
        let file_id = instance.record.file_id;
        let entry = QuarantineEntry {
            id,
            instance,
            reason,
        };
        self.put_record(
            self.tables.quarantine,
            "quarantine",
            &quarantine_key(id),
            &entry,
        )?;
        self.put(
            self.tables.file_ids,
            &file_id_key(file_id),
            &[FILE_ROLE_QUARANTINE],
            "put file id",
        )?;
        Ok(id)
    }

    fn quarantine_entry(&self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
        match self
            .tables
            .quarantine
            .get(self.txn, &quarantine_key(id))
            .map_err(self.lmdb("get quarantine"))?
        {
            None => Ok(None),
            Some(bytes) => decode::<QuarantineEntry>("quarantine", bytes).map(Some),
        }
    }

    /// Deletes a quarantine entry (and its file id).
    fn drop_quarantine_entry(&mut self, entry: &QuarantineEntry) -> Result<(), IndexError> {
        self.delete(
            self.tables.quarantine,
            &quarantine_key(entry.id),
            "delete quarantine",
        )?;
        self.release_file_id(entry.instance.record.file_id)
    }

    fn release(&mut self, id: u64) -> Result<ItemResult, IndexError> {
        let Some(entry) = self.quarantine_entry(id)? else {
            return Ok(Ok(WriteOutcome::Released(None)));
        };
        let (own_key, own) = match self.own_series_if_room(&entry.instance.triplet)? {
            Ok(own) => own,
            Err(invalid) => return Ok(Err(invalid)),
        };
        self.drop_quarantine_entry(&entry)?;
        let instance = entry.instance;
        let triplet = &instance.triplet;
        let replaced = match self.find_sop(&triplet.sop_instance_uid)? {
            None => {
                self.insert_new(&instance, &instance.record, false)?;
                None
            }
            Some((series_id, _, previous)) if own == Some(series_id) => {
                let stored =
                    StoredRecord::compact(&instance.record, self.series_defaults(&own_key)?);
                self.put_record(
                    self.tables.instances,
                    "instances",
                    &instance_key(series_id, &triplet.sop_instance_uid),
                    &stored,
                )?;
                self.forget_file(previous.file_id)?;
                self.put(
                    self.tables.file_ids,
                    &file_id_key(instance.record.file_id),
                    &[FILE_ROLE_INSTANCE],
                    "put file id",
                )?;
                self.fill_series_and_study(&instance)?;
                Some(previous)
            }
            Some((_, other, _)) => {
                let previous = self.remove_triplet(&other)?;
                self.insert_new(&instance, &instance.record, false)?;
                previous
            }
        };
        Ok(Ok(WriteOutcome::Released(Some(Released {
            instance,
            replaced,
        }))))
    }

    fn purge(&mut self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
        let Some(entry) = self.quarantine_entry(id)? else {
            return Ok(None);
        };
        self.drop_quarantine_entry(&entry)?;
        self.delete(
            self.tables.flagged,
            &file_id_key(entry.instance.record.file_id),
            "delete flagged",
        )?;
        Ok(Some(entry))
    }

    fn put_commitment(
        &mut self,
        transaction_uid: &str,
        record: &CommitmentRecord,
    ) -> Result<ItemResult, IndexError> {
        if let Err(invalid) = check_uid("TransactionUID", transaction_uid) {
            return Ok(Err(invalid));
        }
        if record.payload.len() > COMMITMENT_PAYLOAD_BYTES_MAX {
            return Ok(Err(InvalidInput::TooLong {
                field: "commitment payload",
                length_bytes: record.payload.len(),
                limit_bytes: COMMITMENT_PAYLOAD_BYTES_MAX,
            }));
        }
        let mut record = record.clone();
        record.requester_ae_title = crate::keys::truncate_to_char_boundary(
            &normalize_text(&record.requester_ae_title),
            AE_TITLE_BYTES_MAX,
        )
        .to_owned();
        let replaced = self
            .tables
            .commitments
            .get(self.txn, transaction_uid.as_bytes())
            .map_err(self.lmdb("get commitment"))?
            .is_some();
        self.put_record(
            self.tables.commitments,
            "commitments",
            transaction_uid.as_bytes(),
            &record,
        )?;
        Ok(Ok(WriteOutcome::CommitmentPut { replaced }))
    }

    fn flush_series(&mut self) -> Result<(), IndexError> {
        let dirty: Vec<(Vec<u8>, Option<StoredSeries>)> = self
            .series
            .iter_mut()
            .filter(|(_, cached)| cached.dirty)
            .map(|(key, cached)| {
                cached.dirty = false;
                (key.clone(), cached.current.clone())
            })
            .collect();
        for (key, series) in dirty {
            match series {
                Some(series) => self.put_record(self.tables.series, "series", &key, &series)?,
                None => {
                    self.delete(self.tables.series, &key, "delete series")?;
                }
            }
        }
        Ok(())
    }

    /// Writes every cached change; call before commit.
    pub(crate) fn flush(&mut self) -> Result<(), IndexError> {
        self.flush_series()?;
        let studies = std::mem::take(&mut self.studies);
        for (study, cached) in studies {
            if !cached.dirty {
                continue;
            }
            let new_indexed = IndexedValues::of(cached.current.as_ref());
            let secondary = [
                (
                    self.tables.study_by_patient_id,
                    &cached.indexed.patient_id,
                    &new_indexed.patient_id,
                ),
                (
                    self.tables.study_by_date,
                    &cached.indexed.study_date,
                    &new_indexed.study_date,
                ),
                (
                    self.tables.study_by_accession,
                    &cached.indexed.accession_number,
                    &new_indexed.accession_number,
                ),
            ];
            for (table, old, new) in secondary {
                if old != new && !old.is_empty() {
                    self.delete(table, &secondary_key(old, &study), "delete secondary key")?;
                }
                if old != new && !new.is_empty() {
                    self.put(table, &secondary_key(new, &study), &[], "put secondary key")?;
                }
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
