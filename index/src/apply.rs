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

use std::collections::HashMap;

use heed::{PutFlags, RwTxn};

use crate::error::{EnvLimits, IndexError, InvalidInput};
use crate::keys::{
    check_uid, file_id_key, in_doubt_value, prefix_of, quarantine_key, read_u64, secondary_key,
    series_key, triplet_key, IN_DOUBT_INSTANCE, IN_DOUBT_QUARANTINE,
};
use crate::ops::{
    ConflictPolicy, Disposition, DuplicatePolicy, ItemResult, Released, StoreOutcome, StoreRequest,
    WriteOp, WriteOutcome,
};
use crate::records::{
    decode, encode_into, normalize_text, CommitmentRecord, FileId, InstanceRecord, NewInstance,
    QuarantineEntry, QuarantineReason, SeriesRecord, StoredInstance, StudyRecord, Triplet,
    AE_TITLE_BYTES_MAX, COMMITMENT_PAYLOAD_BYTES_MAX,
};
use crate::tables::{
    Table, Tables, FILE_ROLE_INSTANCE, FILE_ROLE_QUARANTINE, META_NEXT_QUARANTINE_ID,
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
    current: Option<SeriesRecord>,
    dirty: bool,
}

/// The state of one write transaction.
pub(crate) struct Apply<'t, 'e> {
    txn: &'t mut RwTxn<'e>,
    tables: Tables,
    limits: EnvLimits,
    studies: HashMap<String, CachedStudy>,
    series: HashMap<Vec<u8>, CachedSeries>,
    next_quarantine_id: Option<u64>,
    next_quarantine_id_dirty: bool,
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
    pub(crate) fn new(txn: &'t mut RwTxn<'e>, tables: Tables, limits: EnvLimits) -> Self {
        Apply {
            txn,
            tables,
            limits,
            studies: HashMap::new(),
            series: HashMap::new(),
            next_quarantine_id: None,
            next_quarantine_id_dirty: false,
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
            WriteOp::ReleaseQuarantine(id) => Ok(Ok(WriteOutcome::Released(self.release(*id)?))),
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
                match self.get_stored(sop)? {
                    Some(stored) if stored.record.file_id == file_id => {
                        let triplet = Triplet::new(
                            stored.study_instance_uid,
                            stored.series_instance_uid,
                            sop.to_owned(),
                        );
                        self.remove_triplet(&triplet)?.is_some()
                    }
                    _ => false,
                }
            }
            Some((&IN_DOUBT_QUARANTINE, id)) => {
                let id = read_u64(id).ok_or_else(|| corrupt("bad quarantine id"))?;
                let names_file = match self
                    .tables
                    .quarantine
                    .get(self.txn, &quarantine_key(id))
                    .map_err(self.lmdb("get quarantine"))?
                {
                    None => false,
                    Some(bytes) => {
                        decode::<QuarantineEntry>("quarantine", bytes)?
                            .instance
                            .record
                            .file_id
                            == file_id
                    }
                };
                names_file && self.take_quarantine_entry(id)?.is_some()
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

    /// A file no entry references any more: its file id and, if it was
    /// flagged, its `flagged` row go.
    fn forget_file(&mut self, file_id: FileId) -> Result<(), IndexError> {
        let key = file_id_key(file_id);
        self.delete(self.tables.file_ids, &key, "delete file id")?;
        self.delete(self.tables.flagged, &key, "delete flagged")?;
        Ok(())
    }

    /// What is stored under a SOP Instance UID.
    fn get_stored(&self, sop: &str) -> Result<Option<StoredInstance>, IndexError> {
        match self
            .tables
            .instances
            .get(self.txn, sop.as_bytes())
            .map_err(self.lmdb("get instance"))?
        {
            None => Ok(None),
            Some(bytes) => decode::<StoredInstance>("instances", bytes).map(Some),
        }
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

    fn store(&mut self, request: &StoreRequest) -> Result<ItemResult, IndexError> {
        let instance = &request.instance;
        if let Err(invalid) = validate(instance) {
            return Ok(Err(invalid));
        }
        let record = normalized_record(&instance.record);
        let file_id = record.file_id;
        if !self.claim_file_id(file_id, FILE_ROLE_INSTANCE)? {
            return Ok(Err(InvalidInput::FileIdInUse { file_id: file_id.0 }));
        }
        let triplet = &instance.triplet;
        let stored = StoredInstance {
            study_instance_uid: triplet.study_instance_uid.clone(),
            series_instance_uid: triplet.series_instance_uid.clone(),
            record,
        };
        let encoded = encode_into("instances", &stored, std::mem::take(&mut self.buffer))?;
        // One descent decides: absent (and now inserted), or what holds the SOP.
        let existing = self
            .tables
            .instances
            .get_or_put(self.txn, triplet.sop_instance_uid.as_bytes(), &encoded)
            .map_err(self.lmdb("put instance"))?
            .map(<[u8]>::to_vec);
        let Some(existing) = existing else {
            self.buffer = encoded;
            self.add_to_series_and_study(instance, true)?;
            return Ok(Ok(WriteOutcome::Store(StoreOutcome::Stored)));
        };
        let existing = decode::<StoredInstance>("instances", &existing)?;
        let StoredInstance { record, .. } = stored;
        if existing.study_instance_uid == triplet.study_instance_uid
            && existing.series_instance_uid == triplet.series_instance_uid
        {
            let previous = existing.record;
            let identical = previous.checksum == record.checksum
                && previous.dataset_size_bytes() == record.dataset_size_bytes();
            let reason = if identical {
                QuarantineReason::DuplicateIdentical
            } else {
                QuarantineReason::Duplicate
            };
            let disposition = match (request.duplicate_policy, identical) {
                (DuplicatePolicy::Reject, _) => {
                    self.delete(
                        self.tables.file_ids,
                        &file_id_key(file_id),
                        "release file id",
                    )?;
                    Disposition::Rejected
                }
                (DuplicatePolicy::DropIfIdentical, true) => {
                    self.delete(
                        self.tables.file_ids,
                        &file_id_key(file_id),
                        "release file id",
                    )?;
                    Disposition::Dropped
                }
                (DuplicatePolicy::Replace, _) => {
                    self.put(
                        self.tables.instances,
                        triplet.sop_instance_uid.as_bytes(),
                        &encoded,
                        "put instance",
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
            self.buffer = encoded;
            let outcome = if identical {
                StoreOutcome::DuplicateIdentical(disposition)
            } else {
                StoreOutcome::Duplicate(disposition)
            };
            return Ok(Ok(WriteOutcome::Store(outcome)));
        }
        self.buffer = encoded;
        let stored_triplet = Triplet::new(
            existing.study_instance_uid.clone(),
            existing.series_instance_uid.clone(),
            triplet.sop_instance_uid.clone(),
        );
        let disposition = match request.conflict_policy {
            ConflictPolicy::Reject => {
                self.delete(
                    self.tables.file_ids,
                    &file_id_key(file_id),
                    "release file id",
                )?;
                Disposition::Rejected
            }
            ConflictPolicy::Replace => {
                let previous =
                    self.remove_triplet(&stored_triplet)?
                        .ok_or_else(|| IndexError::Corrupt {
                            table: "instances",
                            detail: format!(
                                "{} vanished during a replace",
                                stored_triplet.sop_instance_uid
                            ),
                        })?;
                self.insert_new(&normalized_instance(instance))?;
                Disposition::Replaced { previous }
            }
            ConflictPolicy::Quarantine => Disposition::Quarantined {
                quarantine_id: self.quarantine(
                    normalized_instance(instance),
                    QuarantineReason::SopInstanceConflict {
                        stored: stored_triplet.clone(),
                    },
                )?,
            },
        };
        Ok(Ok(WriteOutcome::Store(StoreOutcome::SopInstanceConflict {
            stored: stored_triplet,
            disposition,
        })))
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
                Some(bytes) => Some(decode::<SeriesRecord>("series", bytes)?),
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

    /// Writes a new instance (already normalised) and counts it.
    fn insert_new(&mut self, instance: &NewInstance) -> Result<(), IndexError> {
        let triplet = &instance.triplet;
        let stored = StoredInstance {
            study_instance_uid: triplet.study_instance_uid.clone(),
            series_instance_uid: triplet.series_instance_uid.clone(),
            record: instance.record.clone(),
        };
        self.put_record(
            self.tables.instances,
            "instances",
            triplet.sop_instance_uid.as_bytes(),
            &stored,
        )?;
        self.put(
            self.tables.file_ids,
            &file_id_key(instance.record.file_id),
            &[FILE_ROLE_INSTANCE],
            "put file id",
        )?;
        self.add_to_series_and_study(instance, false)
    }

    /// Adds the listing entry and counts a new instance in its series and
    /// study. Attributes are normalised only when they are used: for a new
    /// series or study, or to fill an empty attribute.
    fn add_to_series_and_study(
        &mut self,
        instance: &NewInstance,
        raw: bool,
    ) -> Result<(), IndexError> {
        let triplet = &instance.triplet;
        let (study, series, sop) = (
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
            &triplet.sop_instance_uid,
        );
        let series_key = series_key(study, series);
        let mut listing_key = Vec::with_capacity(series_key.len() + 1 + sop.len());
        listing_key.extend_from_slice(&series_key);
        listing_key.push(crate::keys::SEPARATOR);
        listing_key.extend_from_slice(sop.as_bytes());
        self.put(
            self.tables.series_instances,
            &listing_key,
            &[],
            "put series listing",
        )?;

        let normalize_series = |attributes: &crate::records::SeriesAttributes| {
            if raw {
                attributes.normalized()
            } else {
                attributes.clone()
            }
        };
        let series_entry = self.series_entry(&series_key)?;
        series_entry.dirty = true;
        let new_series = series_entry.current.is_none();
        let series_record = series_entry.current.get_or_insert_with(|| SeriesRecord {
            attributes: normalize_series(&instance.series),
            number_of_instances: 0,
        });
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
        if let Some(record) = series_entry.current.as_mut() {
            if record.attributes.has_empty() {
                series_entry.dirty |= record
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
    fn remove_triplet(&mut self, triplet: &Triplet) -> Result<Option<InstanceRecord>, IndexError> {
        let (study, series, sop) = (
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
            &triplet.sop_instance_uid,
        );
        let Some(stored) = self.get_stored(sop)? else {
            return Ok(None);
        };
        if stored.study_instance_uid != *study || stored.series_instance_uid != *series {
            return Ok(None);
        }
        let record = stored.record;
        self.delete(self.tables.instances, sop.as_bytes(), "delete instance")?;
        self.delete(
            self.tables.series_instances,
            &triplet_key(study, series, sop),
            "delete series listing",
        )?;
        self.forget_file(record.file_id)?;

        let series_key = series_key(study, series);
        let series_entry = self.series_entry(&series_key)?;
        series_entry.dirty = true;
        let mut series_gone = false;
        if let Some(series_record) = series_entry.current.as_mut() {
            series_record.number_of_instances = series_record.number_of_instances.saturating_sub(1);
            if series_record.number_of_instances == 0 {
                series_entry.current = None;
                series_gone = true;
            }
        }
        let modalities = if series_gone {
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
            let record =
                crate::records::access::<crate::records::ArchivedSeriesRecord>("series", bytes)?;
            let modality = record.attributes.modality.as_str();
            if !modality.is_empty() && !modalities.iter().any(|known| known == modality) {
                modalities.push(modality.to_owned());
            }
        }
        modalities.sort();
        Ok(modalities)
    }

    fn next_quarantine_id(&mut self) -> Result<u64, IndexError> {
        let id = match self.next_quarantine_id {
            Some(id) => id,
            None => match self
                .tables
                .meta
                .get(self.txn, META_NEXT_QUARANTINE_ID)
                .map_err(self.lmdb("get meta"))?
            {
                None => 1,
                Some(bytes) => read_u64(bytes).ok_or_else(|| IndexError::Corrupt {
                    table: "meta",
                    detail: "next_quarantine_id is not 8 bytes".into(),
                })?,
            },
        };
        self.next_quarantine_id = Some(id.saturating_add(1));
        self.next_quarantine_id_dirty = true;
        Ok(id)
    }

    fn quarantine(
        &mut self,
        instance: NewInstance,
        reason: QuarantineReason,
    ) -> Result<u64, IndexError> {
        let id = self.next_quarantine_id()?;
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

    fn take_quarantine_entry(&mut self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
        let key = quarantine_key(id);
        let entry = match self
            .tables
            .quarantine
            .get(self.txn, &key)
            .map_err(self.lmdb("get quarantine"))?
        {
            None => return Ok(None),
            Some(bytes) => decode::<QuarantineEntry>("quarantine", bytes)?,
        };
        self.delete(self.tables.quarantine, &key, "delete quarantine")?;
        self.delete(
            self.tables.file_ids,
            &file_id_key(entry.instance.record.file_id),
            "delete file id",
        )?;
        Ok(Some(entry))
    }

    fn release(&mut self, id: u64) -> Result<Option<Released>, IndexError> {
        let Some(entry) = self.take_quarantine_entry(id)? else {
            return Ok(None);
        };
        let instance = entry.instance;
        let triplet = &instance.triplet;
        let replaced = match self.get_stored(&triplet.sop_instance_uid)? {
            None => {
                self.insert_new(&instance)?;
                None
            }
            Some(existing)
                if existing.study_instance_uid == triplet.study_instance_uid
                    && existing.series_instance_uid == triplet.series_instance_uid =>
            {
                let stored = StoredInstance {
                    study_instance_uid: existing.study_instance_uid,
                    series_instance_uid: existing.series_instance_uid,
                    record: instance.record.clone(),
                };
                self.put_record(
                    self.tables.instances,
                    "instances",
                    triplet.sop_instance_uid.as_bytes(),
                    &stored,
                )?;
                self.forget_file(existing.record.file_id)?;
                self.put(
                    self.tables.file_ids,
                    &file_id_key(instance.record.file_id),
                    &[FILE_ROLE_INSTANCE],
                    "put file id",
                )?;
                self.fill_series_and_study(&instance)?;
                Some(existing.record)
            }
            Some(existing) => {
                let other = Triplet::new(
                    existing.study_instance_uid,
                    existing.series_instance_uid,
                    triplet.sop_instance_uid.clone(),
                );
                let previous = self.remove_triplet(&other)?;
                self.insert_new(&instance)?;
                previous
            }
        };
        Ok(Some(Released { instance, replaced }))
    }

    fn purge(&mut self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
        let entry = self.take_quarantine_entry(id)?;
        if let Some(entry) = &entry {
            self.forget_file(entry.instance.record.file_id)?;
        }
        Ok(entry)
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
        let dirty: Vec<(Vec<u8>, Option<SeriesRecord>)> = self
            .series
            .iter_mut()
            .filter(|(_, cached)| cached.dirty)
            .map(|(key, cached)| {
                cached.dirty = false;
                (key.clone(), cached.current.clone())
            })
            .collect();
        for (key, record) in dirty {
            match record {
                Some(record) => self.put_record(self.tables.series, "series", &key, &record)?,
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
        if self.next_quarantine_id_dirty {
            if let Some(id) = self.next_quarantine_id {
                self.put(
                    self.tables.meta,
                    META_NEXT_QUARANTINE_ID,
                    &id.to_be_bytes(),
                    "put meta",
                )?;
            }
            self.next_quarantine_id_dirty = false;
        }
        Ok(())
    }
}
