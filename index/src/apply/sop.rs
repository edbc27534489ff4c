//! Where a SOP Instance UID is stored: the SOP index's candidates,
//! verified against this transaction's `instances`, and the overlay of
//! those this transaction adds.

use super::*;

impl<'t, 'e> Apply<'t, 'e> {
    /// The candidates of the SOP Instance UID `sop`, whose hash is `hash`,
    /// as this transaction sees them (read at their first use in it).
    fn candidates_at(
        &mut self,
        hash: SopHash,
        sop: &str,
    ) -> Result<&mut CachedCandidates, IndexError> {
        if !self.candidates.contains_key(&hash) {
            let series_ids = match self.sop_index.candidates(hash)? {
                Some(series_ids) => series_ids,
                None => scan_candidates(&*self.txn, self.tables.instances, sop, self.limits)?,
            };
            self.candidates.insert(
                hash,
                CachedCandidates {
                    series_ids,
                    changed: false,
                },
            );
        }
        self.candidates
            .get_mut(&hash)
            .ok_or_else(|| IndexError::Corrupt {
                table: "sop_index",
                detail: "candidate cache".into(),
            })
    }

    /// The candidates of a SOP Instance UID: the series ids it may be
    /// stored under, as this transaction sees them.
    pub(super) fn candidates_of(&mut self, sop: &str) -> Result<Vec<u64>, IndexError> {
        let hash = self.sop_index.hash(sop);
        Ok(self.candidates_at(hash, sop)?.series_ids.clone())
    }

    /// The candidates of `sop` (hashed to `hash`) other than `own`.
    pub(super) fn other_candidates(
        &mut self,
        hash: SopHash,
        sop: &str,
        own: Option<u64>,
    ) -> Result<Vec<u64>, IndexError> {
        let cached = self.candidates_at(hash, sop)?;
        if cached.series_ids.iter().all(|id| Some(*id) == own) {
            // Nearly every store: no copy of the list.
            return Ok(Vec::new());
        }
        Ok(cached
            .series_ids
            .iter()
            .copied()
            .filter(|id| Some(*id) != own)
            .collect())
    }

    /// Records that `sop` is stored under `series_id` (a no-op if that is
    /// already a candidate). The caller checked the bound beforehand.
    pub(super) fn add_candidate(&mut self, sop: &str, series_id: u64) -> Result<(), IndexError> {
        self.add_candidate_at(self.sop_index.hash(sop), sop, series_id)
    }

    /// [`Apply::add_candidate`] of a SOP Instance UID already hashed.
    pub(super) fn add_candidate_at(
        &mut self,
        hash: SopHash,
        sop: &str,
        series_id: u64,
    ) -> Result<(), IndexError> {
        let cached = self.candidates_at(hash, sop)?;
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
    /// be stored under, with its SOP Instance UID's hash, or the refusal if
    /// storing it there would need a SOP index candidate past the bound.
    /// Checked before anything is written.
    pub(super) fn own_series_if_room(
        &mut self,
        triplet: &Triplet,
    ) -> Result<Result<OwnSeries, InvalidInput>, IndexError> {
        let key = series_key(&triplet.study_instance_uid, &triplet.series_instance_uid);
        let id = self.series_id_of(&key)?;
        let sop = &triplet.sop_instance_uid;
        let sop_hash = self.sop_index.hash(sop);
        let candidates = &self.candidates_at(sop_hash, sop)?.series_ids;
        if candidates.len() >= CANDIDATES_MAX && !id.is_some_and(|id| candidates.contains(&id)) {
            return Ok(Err(InvalidInput::SopInstanceUidOverused {
                limit: CANDIDATES_MAX,
            }));
        }
        Ok(Ok(OwnSeries { key, id, sop_hash }))
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
    pub(super) fn is_stored(&self, series_id: u64, sop: &str) -> Result<bool, IndexError> {
        Ok(self
            .tables
            .instances
            .get(self.txn, &instance_key(series_id, sop))
            .map_err(self.lmdb("get instance"))?
            .is_some())
    }

    /// The record stored under `series_id ++ sop`, if any.
    pub(super) fn stored_record(
        &self,
        series_id: u64,
        sop: &str,
    ) -> Result<Option<StoredRecord>, IndexError> {
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

    /// Where a SOP Instance UID is stored: its series id, the series, and
    /// its record (the candidates verified against `instances`).
    pub(super) fn find_sop(
        &mut self,
        sop: &str,
    ) -> Result<Option<(u64, Triplet, InstanceRecord)>, IndexError> {
        for series_id in self.candidates_of(sop)? {
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
}
