//! Quarantine entries: adding, releasing and purging them.

use super::*;

impl<'t, 'e> Apply<'t, 'e> {
    pub(super) fn quarantine(
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

    /// Removes a stored instance that lost in the cluster, holding it in
    /// quarantine or not ([`WriteOp::Demote`]).
    pub(super) fn demote(
        &mut self,
        instance: &NewInstance,
        hold: Option<QuarantineReason>,
    ) -> Result<ItemResult, IndexError> {
        let file_id = instance.record.file_id;
        let triplet = match self.find_sop(&instance.triplet.sop_instance_uid)? {
            Some((_, triplet, stored)) if stored.file_id == file_id => triplet,
            _ => {
                return Ok(Ok(WriteOutcome::Demoted {
                    removed: false,
                    quarantine_id: None,
                }))
            }
        };
        // Removing the entry forgets its record's place; a quarantine entry
        // made below names the same bytes.
        let record = self.record_of(file_id)?;
        let removed = self.remove_triplet(&triplet)?;
        assert!(removed.is_some(), "the stored entry just found is gone");
        let key = file_id_key(file_id);
        let in_doubt = self
            .tables
            .in_doubt
            .get(self.txn, &key)
            .map_err(self.lmdb("get in doubt"))?
            .is_some();
        let quarantine_id = match hold {
            Some(reason) => {
                let id = self.quarantine(instance.clone(), reason)?;
                self.replace_record(file_id, record)?;
                if in_doubt {
                    let value = in_doubt_value(IN_DOUBT_QUARANTINE, &quarantine_key(id));
                    self.put(self.tables.in_doubt, &key, &value, "mark in doubt")?;
                }
                Some(id)
            }
            None => {
                if in_doubt {
                    self.delete(self.tables.in_doubt, &key, "clear in doubt")?;
                }
                None
            }
        };
        Ok(Ok(WriteOutcome::Demoted {
            removed: true,
            quarantine_id,
        }))
    }

    pub(super) fn quarantine_entry(&self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
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
    pub(super) fn drop_quarantine_entry(
        &mut self,
        entry: &QuarantineEntry,
    ) -> Result<(), IndexError> {
        self.delete(
            self.tables.quarantine,
            &quarantine_key(entry.id),
            "delete quarantine",
        )?;
        self.release_file_id(entry.instance.record.file_id)
    }

    pub(super) fn release(&mut self, id: u64) -> Result<ItemResult, IndexError> {
        let Some(entry) = self.quarantine_entry(id)? else {
            return Ok(Ok(WriteOutcome::Released(None)));
        };
        let own = match self.own_series_if_room(&entry.instance.triplet)? {
            Ok(own) => own,
            Err(invalid) => return Ok(Err(invalid)),
        };
        // Dropping the entry forgets its record's place; the instance entry
        // made below names the same bytes.
        let record = self.record_of(entry.instance.record.file_id)?;
        self.drop_quarantine_entry(&entry)?;
        let instance = entry.instance;
        let triplet = &instance.triplet;
        let replaced = match self.find_sop(&triplet.sop_instance_uid)? {
            None => {
                self.insert_new(&instance, &instance.record, false)?;
                None
            }
            Some((series_id, _, previous)) if own.id == Some(series_id) => {
                let stored =
                    StoredRecord::compact(&instance.record, self.series_defaults(&own.key)?);
                self.put_record(
                    self.tables.instances,
                    "instances",
                    &instance_key(series_id, &triplet.sop_instance_uid),
                    &stored,
                )?;
                self.forget_file(previous.file_id)?;
                self.fill_series_and_study(&instance)?;
                Some(previous)
            }
            Some((_, other, _)) => {
                let previous = self.remove_triplet(&other)?;
                self.insert_new(&instance, &instance.record, false)?;
                previous
            }
        };
        // The entry's file id, released with it, is an instance's now.
        self.put(
            self.tables.file_ids,
            &file_id_key(instance.record.file_id),
            &[FILE_ROLE_INSTANCE],
            "put file id",
        )?;
        self.replace_record(instance.record.file_id, record)?;
        Ok(Ok(WriteOutcome::Released(Some(Released {
            instance,
            replaced,
        }))))
    }

    pub(super) fn purge(&mut self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
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
}
