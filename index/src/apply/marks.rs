//! Marks on stored files: in-doubt and flagged entries, the file ids
//! claimed and released, and commitment records.

use super::*;

impl<'t, 'e> Apply<'t, 'e> {
    /// Records the new file in `in_doubt` when the store made an entry name
    /// it (stored, or held in quarantine), with that entry.
    pub(super) fn mark_in_doubt(
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
    pub(super) fn mark_flagged(
        &mut self,
        request: &StoreRequest,
        result: &ItemResult,
        flagged: &[u8],
    ) -> Result<(), IndexError> {
        if !super::location::names_new_file(result) {
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
    pub(super) fn forget_file(&mut self, file_id: FileId) -> Result<(), IndexError> {
        self.release_file_id(file_id)?;
        self.delete(self.tables.flagged, &file_id_key(file_id), "delete flagged")?;
        Ok(())
    }

    /// Removes the entry the in-doubt mark of `file_id` names, if it still
    /// names that file, and the mark; whether an entry was removed.
    pub(super) fn remove_in_doubt(&mut self, file_id: FileId) -> Result<bool, IndexError> {
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

    /// Records `file_id` with `role` unless it is already referenced (one
    /// B-tree descent checks and inserts); false if it was.
    pub(super) fn claim_file_id(&mut self, file_id: FileId, role: u8) -> Result<bool, IndexError> {
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

    /// No entry references `file_id` any more: its `file_ids` row goes, and
    /// its record's place if its bytes are one.
    pub(super) fn release_file_id(&mut self, file_id: FileId) -> Result<(), IndexError> {
        self.forget_record(file_id)?;
        self.delete(
            self.tables.file_ids,
            &file_id_key(file_id),
            "release file id",
        )
        .map(|_| ())
    }

    pub(super) fn put_commitment(
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
}
