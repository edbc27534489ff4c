//! Storing an instance: the duplicate decision (same triplet, or the SOP
//! Instance UID under another triplet), the insert, the removal of a
//! triplet.

use super::*;

impl<'t, 'e> Apply<'t, 'e> {
    pub(super) fn store(&mut self, request: &StoreRequest) -> Result<ItemResult, IndexError> {
        let instance = &request.instance;
        if let Err(invalid) = validate(instance) {
            return Ok(Err(invalid));
        }
        let record = normalized_record(&instance.record);
        let triplet = &instance.triplet;
        let sop = &triplet.sop_instance_uid;
        let own = match self.own_series_if_room(triplet)? {
            Ok(own) => own,
            Err(invalid) => return Ok(Err(invalid)),
        };
        let file_id = record.file_id;
        if !self.claim_file_id(file_id, FILE_ROLE_INSTANCE)? {
            return Ok(Err(InvalidInput::FileIdInUse { file_id: file_id.0 }));
        }
        // In a series that exists, one descent writes the instance, or finds
        // the triplet stored: a duplicate.
        let inserted = match own.id {
            Some(own_id) => {
                let stored = StoredRecord::compact(&record, self.series_defaults(&own.key)?);
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
                    let defaults = self.series_defaults(&own.key)?.clone();
                    let previous =
                        decode::<StoredRecord>("instances", &existing)?.expand(&defaults);
                    return self
                        .duplicate(request, &record, own_id, &defaults, previous)
                        .map(Ok);
                }
                Some(key)
            }
            None => None,
        };
        // The SOP Instance UID stored under another series: a conflict (the
        // instance just written, if any, is taken back).
        for candidate in self.other_candidates(own.sop_hash, sop, own.id)? {
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
        match own.id {
            Some(own_id) => {
                self.add_candidate_at(own.sop_hash, sop, own_id)?;
                self.count_in_series_and_study(instance, &own.key, true)?;
            }
            None => self.insert_new(instance, &record, true)?,
        }
        Ok(Ok(WriteOutcome::Store(StoreOutcome::Stored)))
    }

    /// The store of a triplet already stored (`previous`), by policy.
    pub(super) fn duplicate(
        &mut self,
        request: &StoreRequest,
        record: &InstanceRecord,
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
                    &StoredRecord::compact(record, defaults),
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
    pub(super) fn conflict(
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

    /// Writes a new instance (`record` normalised; the instance's attributes
    /// normalised unless `raw`), under its series (created, with a new id,
    /// if it has no instance), and counts it. Its file id is the caller's
    /// to record as an instance's (a store claimed it already).
    pub(super) fn insert_new(
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
        self.add_candidate(&triplet.sop_instance_uid, series_id)?;
        self.count_in_series_and_study(instance, &key, raw)
    }

    /// Removes a stored instance and uncounts it; `None` if it is not stored.
    /// Its SOP index candidate stays (candidates are never removed: a
    /// reader verifies them).
    pub(super) fn remove_triplet(
        &mut self,
        triplet: &Triplet,
    ) -> Result<Option<InstanceRecord>, IndexError> {
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
        let mut study_gone = false;
        if let Some(study_record) = study_entry.current.as_mut() {
            study_record.number_of_instances = study_record.number_of_instances.saturating_sub(1);
            if let Some(modalities) = modalities {
                study_record.number_of_series = study_record.number_of_series.saturating_sub(1);
                study_record.modalities_in_study = modalities;
            }
            study_gone = study_record.number_of_instances == 0;
        }
        if study_gone {
            study_entry.attributes_change();
            study_entry.current = None;
        }
        Ok(Some(record))
    }
}
