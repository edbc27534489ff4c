//! Record locations (schema 6): the place of a record an entry names, and
//! the state of its segment (indexed end, live bytes), kept in the same
//! transaction as the entry (each segment's state read at its first use in
//! the transaction and written once, at flush).

use super::*;
use crate::location::{
    segment_key, Location, RecordPlace, SegmentObject, SegmentState, OBJECT_KEY_BYTES_MAX,
};

impl<'t, 'e> Apply<'t, 'e> {
    /// A segment's state as this transaction sees it: read once, kept in
    /// [`Apply::segments`] and written back at [`Apply::flush`] (a
    /// transaction of a hundred records in one segment reads and writes
    /// its state once, not a hundred times).
    fn segment_state(&mut self, segment: u64) -> Result<&mut CachedSegment, IndexError> {
        if !self.segments.contains_key(&segment) {
            let state = match self
                .tables
                .segments
                .get(self.txn, &segment_key(segment))
                .map_err(self.lmdb("get segment"))?
            {
                None => SegmentState::default(),
                Some(bytes) => SegmentState::decode(bytes)?,
            };
            self.segments.insert(
                segment,
                CachedSegment {
                    state,
                    dirty: false,
                },
            );
        }
        self.segments
            .get_mut(&segment)
            .ok_or_else(|| IndexError::Corrupt {
                table: "segments",
                detail: "segment cache".into(),
            })
    }

    /// Changes a segment's state (written at [`Apply::flush`]).
    fn change_segment(
        &mut self,
        segment: u64,
        change: impl FnOnce(&mut SegmentState),
    ) -> Result<(), IndexError> {
        let cached = self.segment_state(segment)?;
        change(&mut cached.state);
        cached.dirty = true;
        Ok(())
    }

    /// Writes the segment states this transaction changed.
    pub(super) fn flush_segments(&mut self) -> Result<(), IndexError> {
        let limits = self.limits;
        for (segment, cached) in self.segments.iter_mut() {
            if std::mem::take(&mut cached.dirty) {
                self.tables
                    .segments
                    .put(self.txn, &segment_key(*segment), &cached.state.encode())
                    .map_err(|error| IndexError::from_heed("put segment", error, limits))?;
            }
        }
        Ok(())
    }

    /// Records where the new instance's bytes are when the store made an
    /// entry name its file id, and counts the record live in its segment.
    pub(super) fn place_record(
        &mut self,
        request: &StoreRequest,
        result: &ItemResult,
    ) -> Result<(), IndexError> {
        let Location::Record(place) = request.location else {
            return Ok(());
        };
        if !names_new_file(result) {
            return Ok(());
        }
        self.name_record(request.instance.record.file_id, place)
    }

    /// Records that `file_id`'s bytes are the record at `place`, counted
    /// live in its segment (whose indexed end follows).
    fn name_record(&mut self, file_id: FileId, place: RecordPlace) -> Result<(), IndexError> {
        self.put(
            self.tables.locations,
            &file_id_key(file_id),
            &place.encode(),
            "put location",
        )?;
        self.change_segment(place.segment, |state| {
            if place.end() > state.indexed_end {
                state.indexed_end = place.end();
                state.indexed_last = place.offset;
            }
            state.live_bytes = state.live_bytes.saturating_add(place.length);
            state.live_records += 1;
        })
    }

    /// The record `file_id` names, if its bytes are one.
    pub(super) fn record_of(&self, file_id: FileId) -> Result<Option<RecordPlace>, IndexError> {
        self.tables
            .locations
            .get(self.txn, &file_id_key(file_id))
            .map_err(self.lmdb("get location"))?
            .map(RecordPlace::decode)
            .transpose()
    }

    /// Puts back the place of a record whose entry was dropped and made
    /// again in this transaction (a quarantined instance released).
    pub(super) fn replace_record(
        &mut self,
        file_id: FileId,
        place: Option<RecordPlace>,
    ) -> Result<(), IndexError> {
        let Some(place) = place else {
            return Ok(());
        };
        self.put(
            self.tables.locations,
            &file_id_key(file_id),
            &place.encode(),
            "put location",
        )?;
        self.change_segment(place.segment, |state| {
            state.live_bytes = state.live_bytes.saturating_add(place.length);
            state.live_records += 1;
        })
    }

    /// No entry names `file_id` any more: if its bytes are a record, the
    /// place goes and the record is dead in its segment.
    pub(super) fn forget_record(&mut self, file_id: FileId) -> Result<(), IndexError> {
        let Some(place) = self.record_of(file_id)? else {
            return Ok(());
        };
        self.delete(
            self.tables.locations,
            &file_id_key(file_id),
            "delete location",
        )?;
        self.change_segment(place.segment, |state| {
            debug_assert!(state.live_records > 0 && state.live_bytes >= place.length);
            state.live_bytes = state.live_bytes.saturating_sub(place.length);
            state.live_records = state.live_records.saturating_sub(1);
        })
    }

    /// Moves the location of the bytes `file_id` names from `from` to `to`
    /// ([`WriteOp::Relocate`]).
    pub(super) fn relocate(
        &mut self,
        file_id: FileId,
        from: Location,
        to: Location,
    ) -> Result<ItemResult, IndexError> {
        let referenced = self
            .tables
            .file_ids
            .get(self.txn, &file_id_key(file_id))
            .map_err(self.lmdb("get file id"))?
            .is_some();
        let current = match self.record_of(file_id)? {
            None => Location::File,
            Some(place) => Location::Record(place),
        };
        if !referenced || current != from {
            return Ok(Err(InvalidInput::LocationChanged { file_id: file_id.0 }));
        }
        if from == to {
            return Ok(Ok(WriteOutcome::Relocated(to)));
        }
        self.forget_record(file_id)?;
        if let Location::Record(place) = to {
            self.name_record(file_id, place)?;
        }
        Ok(Ok(WriteOutcome::Relocated(to)))
    }

    fn segment_object(&self, segment: u64) -> Result<Option<SegmentObject>, IndexError> {
        self.tables
            .segment_objects
            .get(self.txn, &segment_key(segment))
            .map_err(self.lmdb("get segment object"))?
            .map(SegmentObject::decode)
            .transpose()
    }

    /// Records a sealed segment's verified object (schema 8).
    pub(super) fn segment_uploaded(
        &mut self,
        segment: u64,
        object: &SegmentObject,
    ) -> Result<ItemResult, IndexError> {
        debug_assert!(!object.evicted, "an upload is recorded before its eviction");
        if object.key.is_empty() || object.key.len() > OBJECT_KEY_BYTES_MAX {
            return Ok(Err(InvalidInput::TooLong {
                field: "object key",
                length_bytes: object.key.len(),
                limit_bytes: OBJECT_KEY_BYTES_MAX,
            }));
        }
        if !self.segment_state(segment)?.state.sealed {
            return Ok(Err(InvalidInput::SegmentNotSealed { segment }));
        }
        let recorded = match self.segment_object(segment)? {
            // Uploaded again (a restart between the upload and its record):
            // an eviction already recorded stays.
            Some(existing) => SegmentObject {
                evicted: existing.evicted,
                ..object.clone()
            },
            None => SegmentObject {
                evicted: false,
                ..object.clone()
            },
        };
        self.put(
            self.tables.segment_objects,
            &segment_key(segment),
            &recorded.encode(),
            "put segment object",
        )?;
        Ok(Ok(WriteOutcome::SegmentObject(recorded)))
    }

    /// Records that an uploaded segment's local file is evicted.
    pub(super) fn segment_evicted(&mut self, segment: u64) -> Result<ItemResult, IndexError> {
        let Some(mut object) = self.segment_object(segment)? else {
            return Ok(Err(InvalidInput::SegmentNotUploaded { segment }));
        };
        object.evicted = true;
        self.put(
            self.tables.segment_objects,
            &segment_key(segment),
            &object.encode(),
            "put segment object",
        )?;
        Ok(Ok(WriteOutcome::SegmentObject(object)))
    }

    pub(super) fn seal_segment(&mut self, segment: u64) -> Result<(), IndexError> {
        self.change_segment(segment, |state| state.sealed = true)
    }
}

/// Whether the store made an entry name the new file (stored, replacing,
/// or held in quarantine).
pub(super) fn names_new_file(result: &ItemResult) -> bool {
    match result {
        Ok(WriteOutcome::Store(outcome)) => matches!(
            outcome.disposition(),
            None | Some(Disposition::Replaced { .. } | Disposition::Quarantined { .. })
        ),
        _ => false,
    }
}
