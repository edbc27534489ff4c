//! Readers: lookups, listings and study queries over one read transaction.
//!
//! A [`ReadTxn`] is a consistent snapshot; it may be used from any thread (the
//! environment does not tie readers to threads) and many can be open at once.
//! Lookups validate the stored value in place and copy out only what they
//! return; [`ReadTxn::sop_presence`] copies nothing.
//!
//! A lookup by triplet reads LMDB alone: the series' id from `series`, then
//! `series id ++ sop` in `instances`. A lookup by SOP Instance UID
//! alone asks the SOP index (the LSM tree) for the series ids the UID may be
//! stored under and believes only the one this transaction's snapshot
//! confirms in `instances` (`sop_index` explains why that is exact); in a
//! process that does not own the SOP index, it scans `instances` instead.

use std::ops::Bound;

use heed::{RoTxn, WithoutTls};

use crate::error::IndexError;

/// Studies looked at per page of [`ReadTxn::query_studies`].
const QUERY_STUDIES_PAGE_SCANNED: usize = 65_536;
use crate::find::FindBudget;
use crate::index::Shared;
use crate::keys::{
    check_uid, file_id_key, instance_key, prefix_of, quarantine_key, read_u64, series_id_key,
    series_key, split_instance_key, split_key, IN_DOUBT_INSTANCE, IN_DOUBT_QUARANTINE, SEPARATOR,
};
use crate::location::{segment_key, Location, RecordPlace, SegmentObject, SegmentState};
use crate::ops::{FileRole, SopPresence};
use crate::query::StudyQuery;
use crate::records::{
    access, decode, ArchivedRecordDefaults, ArchivedSeriesIdentity, ArchivedSeriesRecord,
    ArchivedStoredRecord, ArchivedStoredSeries, ArchivedStudyRecord, CommitmentRecord, FileId,
    InstanceRecord, QuarantineEntry, SeriesRecord, StudyRecord, Triplet,
};
use crate::sop_index::scan_candidates;

/// Copies an archived series record out.
fn deserialize_series(archived: &ArchivedSeriesRecord) -> Result<SeriesRecord, IndexError> {
    rkyv::deserialize::<SeriesRecord, rkyv::rancor::Error>(archived).map_err(|error| {
        IndexError::Corrupt {
            table: "series",
            detail: error.to_string(),
        }
    })
}
use crate::tables::{Table, FILE_ROLE_INSTANCE, FILE_ROLE_QUARANTINE};

/// Results of a bounded listing or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The results, in key order.
    pub items: Vec<T>,
    /// True if more results exist beyond the limit.
    pub truncated: bool,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            items: Vec::new(),
            truncated: false,
        }
    }
}

/// A study that matched a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyMatch {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Its record.
    pub record: StudyRecord,
}

/// A series of a study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesEntry {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Its record.
    pub record: SeriesRecord,
}

/// An instance of a study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEntry {
    /// Its identity.
    pub triplet: Triplet,
    /// Its record.
    pub record: InstanceRecord,
}

/// A file whose entry committed before the file (its data and its directory
/// entry) was known durable; see [`crate::StoreRequest::in_doubt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    /// The file.
    pub file_id: FileId,
    /// The entry that names it.
    pub entry: InDoubtEntry,
}

/// A file whose instance lenient checks flagged ([`ReadTxn::flagged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flagged {
    /// The file.
    pub file_id: FileId,
    /// Who references it now.
    pub role: FileRole,
    /// The engine's bytes recorded with it (`StoreRequest::flagged`).
    pub payload: Vec<u8>,
}

/// The entry naming an in-doubt file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InDoubtEntry {
    /// A stored instance (boxed, like the quarantine entry: both are
    /// large, and the list is short-lived).
    Instance(Box<InstanceEntry>),
    /// A quarantine entry.
    Quarantine(Box<QuarantineEntry>),
    /// No entry names the file any more (removed, purged or released since):
    /// the mark is stale and only needs clearing.
    Unreferenced,
}

/// A commitment record with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentEntry {
    /// Transaction UID.
    pub transaction_uid: String,
    /// The record.
    pub record: CommitmentRecord,
}

/// An instance found in `instances`, read in place, with the series
/// values its record leaves out.
struct Found<'t> {
    record: &'t ArchivedStoredRecord,
    defaults: &'t ArchivedRecordDefaults,
}

impl Found<'_> {
    fn record(&self) -> InstanceRecord {
        self.record.expand(self.defaults)
    }
}

/// A read transaction over the index.
pub struct ReadTxn<'a> {
    txn: RoTxn<'a, WithoutTls>,
    shared: &'a Shared,
}

impl std::fmt::Debug for ReadTxn<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ReadTxn").finish_non_exhaustive()
    }
}

impl<'a> ReadTxn<'a> {
    pub(crate) fn new(txn: RoTxn<'a, WithoutTls>, shared: &'a Shared) -> Self {
        ReadTxn { txn, shared }
    }

    fn lmdb(&self, operation: &'static str) -> impl Fn(heed::Error) -> IndexError {
        let limits = self.shared.limits;
        move |error| IndexError::from_heed(operation, error, limits)
    }

    fn get(
        &self,
        table: Table,
        key: &[u8],
        operation: &'static str,
    ) -> Result<Option<&[u8]>, IndexError> {
        table.get(&self.txn, key).map_err(self.lmdb(operation))
    }

    /// A series' stored value, validated, in place.
    fn stored_series(
        &self,
        study: &str,
        series: &str,
    ) -> Result<Option<&ArchivedStoredSeries>, IndexError> {
        if check_uid("", study).is_err() || check_uid("", series).is_err() {
            return Ok(None);
        }
        match self.get(
            self.shared.tables.series,
            &series_key(study, series),
            "get series",
        )? {
            None => Ok(None),
            Some(bytes) => access::<ArchivedStoredSeries>("series", bytes).map(Some),
        }
    }

    /// The record under `series_id ++ sop`, in place.
    fn stored_record(
        &self,
        series_id: u64,
        sop: &str,
    ) -> Result<Option<&ArchivedStoredRecord>, IndexError> {
        match self.get(
            self.shared.tables.instances,
            &instance_key(series_id, sop),
            "get instance",
        )? {
            None => Ok(None),
            Some(bytes) => access::<ArchivedStoredRecord>("instances", bytes).map(Some),
        }
    }

    /// What is stored under a triplet, in place.
    fn stored_triplet(
        &self,
        study: &str,
        series: &str,
        sop: &str,
    ) -> Result<Option<Found<'_>>, IndexError> {
        if check_uid("", sop).is_err() {
            return Ok(None);
        }
        let Some(stored_series) = self.stored_series(study, series)? else {
            return Ok(None);
        };
        Ok(self
            .stored_record(stored_series.id.to_native(), sop)?
            .map(|record| Found {
                record,
                defaults: &stored_series.defaults,
            }))
    }

    /// What is stored under a SOP Instance UID, in place, with the series
    /// that holds it: the SOP index's candidates, verified.
    fn stored(
        &self,
        sop: &str,
    ) -> Result<Option<(Found<'_>, &ArchivedSeriesIdentity)>, IndexError> {
        if check_uid("", sop).is_err() {
            return Ok(None);
        }
        for series_id in self.sop_candidates(sop)? {
            let Some(record) = self.stored_record(series_id, sop)? else {
                continue;
            };
            let bytes = self
                .get(
                    self.shared.tables.series_ids,
                    &series_id_key(series_id),
                    "get series id",
                )?
                .ok_or_else(|| IndexError::Corrupt {
                    table: "series_ids",
                    detail: format!("series id {series_id} holds {sop} but names no series"),
                })?;
            let identity = access::<ArchivedSeriesIdentity>("series_ids", bytes)?;
            return Ok(Some((
                Found {
                    record,
                    defaults: &identity.defaults,
                },
                identity,
            )));
        }
        Ok(None)
    }

    /// The record stored under a triplet.
    pub fn instance(
        &self,
        study: &str,
        series: &str,
        sop: &str,
    ) -> Result<Option<InstanceRecord>, IndexError> {
        Ok(self
            .stored_triplet(study, series, sop)?
            .map(|found| found.record()))
    }

    /// The file id of the instance stored under a triplet, read in place
    /// (no copy of the record): the ingest path's duplicate guess, which
    /// must tell an instance's own early-committed entry from another's.
    pub fn stored_file_id(
        &self,
        study: &str,
        series: &str,
        sop: &str,
    ) -> Result<Option<FileId>, IndexError> {
        Ok(self
            .stored_triplet(study, series, sop)?
            .map(|found| found.record.file_id()))
    }

    /// The file id of the instance stored under a SOP Instance UID, read in
    /// place (storage commitment's check for entries still in doubt).
    pub fn file_id_of_sop(&self, sop: &str) -> Result<Option<FileId>, IndexError> {
        Ok(self.stored(sop)?.map(|(found, _)| found.record.file_id()))
    }

    /// Whether a triplet is stored (the duplicate check, outside the writer).
    pub fn contains(&self, study: &str, series: &str, sop: &str) -> Result<bool, IndexError> {
        Ok(self.stored_triplet(study, series, sop)?.is_some())
    }

    /// The triplet that holds a SOP Instance UID.
    pub fn triplet_of_sop(&self, sop: &str) -> Result<Option<Triplet>, IndexError> {
        Ok(self.stored(sop)?.map(|(_, identity)| {
            Triplet::new(
                identity.study_instance_uid.as_str(),
                identity.series_instance_uid.as_str(),
                sop,
            )
        }))
    }

    /// An instance found by its SOP Instance UID alone.
    pub fn instance_by_sop(&self, sop: &str) -> Result<Option<InstanceEntry>, IndexError> {
        let Some((found, identity)) = self.stored(sop)? else {
            return Ok(None);
        };
        Ok(Some(InstanceEntry {
            triplet: Triplet::new(
                identity.study_instance_uid.as_str(),
                identity.series_instance_uid.as_str(),
                sop,
            ),
            record: found.record(),
        }))
    }

    /// Whether `sop` is stored with SOP class `sop_class` (storage commitment).
    /// No copy.
    pub fn sop_presence(&self, sop: &str, sop_class: &str) -> Result<SopPresence, IndexError> {
        match self.stored(sop)? {
            None => Ok(SopPresence::Absent),
            Some((found, _)) => {
                let stored_class = found.record.sop_class_uid(found.defaults);
                if stored_class == sop_class {
                    Ok(SopPresence::Stored)
                } else {
                    Ok(SopPresence::ClassMismatch {
                        stored_sop_class_uid: stored_class.to_owned(),
                    })
                }
            }
        }
    }

    /// A study's record.
    pub fn study(&self, study: &str) -> Result<Option<StudyRecord>, IndexError> {
        if check_uid("", study).is_err() {
            return Ok(None);
        }
        match self.get(self.shared.tables.studies, study.as_bytes(), "get study")? {
            None => Ok(None),
            Some(bytes) => decode::<StudyRecord>("studies", bytes).map(Some),
        }
    }

    /// A series' record.
    pub fn series(&self, study: &str, series: &str) -> Result<Option<SeriesRecord>, IndexError> {
        self.stored_series(study, series)?
            .map(|stored| deserialize_series(&stored.record))
            .transpose()
    }

    /// The series of a study, in UID order, at most `limit`.
    pub fn series_of_study(
        &self,
        study: &str,
        limit: usize,
    ) -> Result<Listing<SeriesEntry>, IndexError> {
        let mut listing = Listing::default();
        if check_uid("", study).is_err() {
            return Ok(listing);
        }
        let prefix = prefix_of(study.as_bytes());
        let iter = self
            .shared
            .tables
            .series
            .prefix_iter(&self.txn, &prefix)
            .map_err(self.lmdb("scan series"))?;
        for entry in iter {
            let (key, bytes) = entry.map_err(self.lmdb("scan series"))?;
            if listing.items.len() == limit {
                listing.truncated = true;
                break;
            }
            let [_, series] = split_key::<2>(key).ok_or_else(|| IndexError::Corrupt {
                table: "series",
                detail: "bad key".into(),
            })?;
            let stored = access::<ArchivedStoredSeries>("series", bytes)?;
            listing.items.push(SeriesEntry {
                series_instance_uid: series.to_owned(),
                record: deserialize_series(&stored.record)?,
            });
        }
        Ok(listing)
    }

    /// The instances of a study (or of one of its series), in UID order, at most `limit`.
    pub fn instances_of_study(
        &self,
        study: &str,
        series: Option<&str>,
        limit: usize,
    ) -> Result<Listing<InstanceEntry>, IndexError> {
        let mut listing = Listing::default();
        if check_uid("", study).is_err()
            || series.is_some_and(|series| check_uid("", series).is_err())
        {
            return Ok(listing);
        }
        // The series: one exactly, or every key `study ∅ …`, which sort
        // from `study ∅` to just below `study 0x01`.
        let (low, high) = match series {
            Some(series) => {
                let key = series_key(study, series);
                (key.clone(), Bound::Included(key))
            }
            None => {
                let mut high = prefix_of(study.as_bytes());
                if let Some(last) = high.last_mut() {
                    *last = SEPARATOR + 1;
                }
                (prefix_of(study.as_bytes()), Bound::Excluded(high))
            }
        };
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (
            Bound::Included(low.as_slice()),
            high.as_ref().map(Vec::as_slice),
        );
        let series_iter = self
            .shared
            .tables
            .series
            .range(&self.txn, &range)
            .map_err(self.lmdb("scan series"))?;
        'series: for entry in series_iter {
            let (key, bytes) = entry.map_err(self.lmdb("scan series"))?;
            let [study, series] = split_key::<2>(key).ok_or_else(|| IndexError::Corrupt {
                table: "series",
                detail: "bad key".into(),
            })?;
            let stored_series = access::<ArchivedStoredSeries>("series", bytes)?;
            let room = limit - listing.items.len();
            let mut entries = self.instances_in_series(
                study,
                series,
                stored_series,
                None,
                room.saturating_add(1),
            )?;
            if entries.len() > room {
                entries.truncate(room);
                listing.items.append(&mut entries);
                listing.truncated = true;
                break 'series;
            }
            listing.items.append(&mut entries);
        }
        Ok(listing)
    }

    /// At most `limit` instances of one series after SOP Instance UID
    /// `after` (from its first when `None`), in UID order (Query/Retrieve's
    /// pages resume there; `sluice media export` walks a series by them).
    pub fn instances_of_series_after(
        &self,
        study: &str,
        series: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InstanceEntry>, IndexError> {
        match self.stored_series(study, series)? {
            None => Ok(Vec::new()),
            Some(stored_series) => {
                self.instances_in_series(study, series, stored_series, after, limit)
            }
        }
    }

    /// At most `limit` instances of a stored series after `after`: its
    /// instances lie side by side under its id, in UID order.
    fn instances_in_series(
        &self,
        study: &str,
        series: &str,
        stored_series: &ArchivedStoredSeries,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InstanceEntry>, IndexError> {
        let series_id = stored_series.id.to_native();
        let first = series_id_key(series_id);
        // Series ids stay below 2^56, so the next id's key bounds this one's.
        let end = series_id_key(series_id + 1);
        let after_key = after.map(|after| instance_key(series_id, after));
        let start = match &after_key {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Included(first.as_slice()),
        };
        let iter = self
            .shared
            .tables
            .instances
            .range(&self.txn, &(start, Bound::Excluded(end.as_slice())))
            .map_err(self.lmdb("scan instances"))?;
        let mut entries = Vec::new();
        for entry in iter {
            if entries.len() == limit {
                break;
            }
            let (key, bytes) = entry.map_err(self.lmdb("scan instances"))?;
            let (_, sop) = split_instance_key(key).ok_or_else(|| IndexError::Corrupt {
                table: "instances",
                detail: "bad key".into(),
            })?;
            let record = access::<ArchivedStoredRecord>("instances", bytes)?;
            entries.push(InstanceEntry {
                triplet: Triplet::new(study, series, sop),
                record: record.expand(&stored_series.defaults),
            });
        }
        Ok(entries)
    }

    /// Studies matching a query, at most `limit`, found as the C-FIND SCP
    /// finds them: [`StudyQuery::identifier`] through [`ReadTxn::find`]
    /// (one planner: Study Instance UIDs, then Patient ID, Accession Number,
    /// Patient's Name or Study Date, whichever table is most selective). The
    /// order is that table's.
    pub fn query_studies(
        &self,
        query: &StudyQuery,
        limit: usize,
    ) -> Result<Listing<StudyMatch>, IndexError> {
        let identifier = query.identifier()?;
        let compiled = query.compile()?;
        let mut listing = Listing::default();
        let mut resume = None;
        loop {
            let page = self.find(
                &identifier,
                resume.as_ref(),
                FindBudget {
                    matches_max: limit.saturating_sub(listing.items.len()).saturating_add(1),
                    scanned_max: QUERY_STUDIES_PAGE_SCANNED,
                },
            )?;
            for found in page.matches {
                let Some((study_instance_uid, record)) = found.study else {
                    return Err(IndexError::Corrupt {
                        table: "studies",
                        detail: "a STUDY-level match without its study".into(),
                    });
                };
                debug_assert!(
                    self.get(
                        self.shared.tables.studies,
                        study_instance_uid.as_bytes(),
                        "get study"
                    )
                    .ok()
                    .flatten()
                    .and_then(|bytes| access::<ArchivedStudyRecord>("studies", bytes).ok())
                    .is_some_and(|archived| compiled.matches(&study_instance_uid, archived)),
                    "find and the study query disagree on {study_instance_uid}"
                );
                if listing.items.len() == limit {
                    listing.truncated = true;
                    return Ok(listing);
                }
                listing.items.push(StudyMatch {
                    study_instance_uid,
                    record,
                });
            }
            match page.resume {
                Some(next) => resume = Some(next),
                None => return Ok(listing),
            }
        }
    }

    /// Quarantine entries with ids above `after` (all if `None`), oldest first, at most `limit`.
    pub fn quarantine_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Listing<QuarantineEntry>, IndexError> {
        let mut listing = Listing::default();
        let start = after.map(|id| quarantine_key(id.saturating_add(1)));
        if after == Some(u64::MAX) {
            return Ok(listing);
        }
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (
            start
                .as_ref()
                .map_or(Bound::Unbounded, |key| Bound::Included(key.as_slice())),
            Bound::Unbounded,
        );
        let iter = self
            .shared
            .tables
            .quarantine
            .range(&self.txn, &range)
            .map_err(self.lmdb("scan quarantine"))?;
        for entry in iter {
            let (_, bytes) = entry.map_err(self.lmdb("scan quarantine"))?;
            if listing.items.len() == limit {
                listing.truncated = true;
                break;
            }
            listing
                .items
                .push(decode::<QuarantineEntry>("quarantine", bytes)?);
        }
        Ok(listing)
    }

    /// One quarantine entry.
    pub fn quarantine_entry(&self, id: u64) -> Result<Option<QuarantineEntry>, IndexError> {
        match self.get(
            self.shared.tables.quarantine,
            &quarantine_key(id),
            "get quarantine",
        )? {
            None => Ok(None),
            Some(bytes) => decode::<QuarantineEntry>("quarantine", bytes).map(Some),
        }
    }

    /// One storage-commitment record.
    pub fn commitment(
        &self,
        transaction_uid: &str,
    ) -> Result<Option<CommitmentRecord>, IndexError> {
        if check_uid("", transaction_uid).is_err() {
            return Ok(None);
        }
        match self.get(
            self.shared.tables.commitments,
            transaction_uid.as_bytes(),
            "get commitment",
        )? {
            None => Ok(None),
            Some(bytes) => decode::<CommitmentRecord>("commitments", bytes).map(Some),
        }
    }

    /// Storage-commitment records with Transaction UIDs after `after`, in UID
    /// order, at most `limit` (page through them at start-up).
    pub fn commitments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing<CommitmentEntry>, IndexError> {
        let mut listing = Listing::default();
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (
            after.map_or(Bound::Unbounded, |uid| Bound::Excluded(uid.as_bytes())),
            Bound::Unbounded,
        );
        let iter = self
            .shared
            .tables
            .commitments
            .range(&self.txn, &range)
            .map_err(self.lmdb("scan commitments"))?;
        for entry in iter {
            let (key, bytes) = entry.map_err(self.lmdb("scan commitments"))?;
            if listing.items.len() == limit {
                listing.truncated = true;
                break;
            }
            let transaction_uid = std::str::from_utf8(key).map_err(|_| IndexError::Corrupt {
                table: "commitments",
                detail: "key is not UTF-8".into(),
            })?;
            listing.items.push(CommitmentEntry {
                transaction_uid: transaction_uid.to_owned(),
                record: decode::<CommitmentRecord>("commitments", bytes)?,
            });
        }
        Ok(listing)
    }

    /// Up to `limit` flagged files after `after` (in file id order), each
    /// with the entry that references it now. A row goes with its file's
    /// last reference; one found without a reference is skipped.
    pub fn flagged(
        &self,
        after: Option<FileId>,
        limit: usize,
    ) -> Result<Listing<Flagged>, IndexError> {
        let mut listing = Listing::default();
        let after_key = after.map(file_id_key);
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (
            after_key
                .as_ref()
                .map_or(Bound::Unbounded, |key| Bound::Excluded(&key[..])),
            Bound::Unbounded,
        );
        let iter = self
            .shared
            .tables
            .flagged
            .range(&self.txn, &range)
            .map_err(self.lmdb("scan flagged"))?;
        for entry in iter {
            let (key, payload) = entry.map_err(self.lmdb("scan flagged"))?;
            let Ok(bytes) = <[u8; 16]>::try_from(key) else {
                return Err(IndexError::Corrupt {
                    table: "flagged",
                    detail: format!("key of {} bytes, not a file id", key.len()),
                });
            };
            let file_id = FileId(u128::from_be_bytes(bytes));
            let Some(role) = self.file_role(file_id)? else {
                continue;
            };
            if listing.items.len() == limit {
                listing.truncated = true;
                break;
            }
            listing.items.push(Flagged {
                file_id,
                role,
                payload: payload.to_vec(),
            });
        }
        Ok(listing)
    }

    /// Which entry references a file id (for start-up recovery: a file that no
    /// entry references was never acknowledged).
    pub fn file_role(&self, file_id: FileId) -> Result<Option<FileRole>, IndexError> {
        match self.get(
            self.shared.tables.file_ids,
            &file_id_key(file_id),
            "get file id",
        )? {
            None => Ok(None),
            Some([FILE_ROLE_INSTANCE]) => Ok(Some(FileRole::Instance)),
            Some([FILE_ROLE_QUARANTINE]) => Ok(Some(FileRole::Quarantine)),
            Some(_) => Err(IndexError::Corrupt {
                table: "file_ids",
                detail: format!("bad role for {:#x}", file_id.0),
            }),
        }
    }

    /// Where the bytes named by `file_id` are: a record in a segment, or
    /// (no `locations` row, as for every instance of the files layout) the
    /// file the id names.
    pub fn location(&self, file_id: FileId) -> Result<Location, IndexError> {
        match self.get(
            self.shared.tables.locations,
            &file_id_key(file_id),
            "get location",
        )? {
            None => Ok(Location::File),
            Some(bytes) => RecordPlace::decode(bytes).map(Location::Record),
        }
    }

    /// The index's state of one segment; `None` if no entry ever named a
    /// record in it and it was not sealed.
    pub fn segment(&self, segment: u64) -> Result<Option<SegmentState>, IndexError> {
        self.get(
            self.shared.tables.segments,
            &segment_key(segment),
            "get segment",
        )?
        .map(SegmentState::decode)
        .transpose()
    }

    /// Every segment the index knows, in id order (one row per segment file:
    /// thousands per terabyte, so listed whole).
    pub fn segments(&self) -> Result<Vec<(u64, SegmentState)>, IndexError> {
        let corrupt = |key: &[u8]| IndexError::Corrupt {
            table: "segments",
            detail: format!("bad key {key:02x?}"),
        };
        let mut all = Vec::new();
        for entry in self
            .shared
            .tables
            .segments
            .iter(&self.txn)
            .map_err(self.lmdb("scan segments"))?
        {
            let (key, value) = entry.map_err(self.lmdb("scan segments"))?;
            let id = read_u64(key).ok_or_else(|| corrupt(key))?;
            all.push((id, SegmentState::decode(value)?));
        }
        Ok(all)
    }

    /// The object a sealed segment was uploaded to, if it was (schema 8).
    pub fn segment_object(&self, segment: u64) -> Result<Option<SegmentObject>, IndexError> {
        self.get(
            self.shared.tables.segment_objects,
            &segment_key(segment),
            "get segment object",
        )?
        .map(SegmentObject::decode)
        .transpose()
    }

    /// Every uploaded segment with its object, in id order.
    pub fn segment_objects(&self) -> Result<Vec<(u64, SegmentObject)>, IndexError> {
        let mut all = Vec::new();
        for entry in self
            .shared
            .tables
            .segment_objects
            .iter(&self.txn)
            .map_err(self.lmdb("scan segment objects"))?
        {
            let (key, value) = entry.map_err(self.lmdb("scan segment objects"))?;
            let id = read_u64(key).ok_or_else(|| IndexError::Corrupt {
                table: "segment_objects",
                detail: format!("bad key {key:02x?}"),
            })?;
            all.push((id, SegmentObject::decode(value)?));
        }
        Ok(all)
    }

    /// Every file in doubt, with the entry that names it (for start-up
    /// recovery, which verifies them). The table holds at most the instances
    /// in flight when the process stopped, so this is small.
    pub fn in_doubt(&self) -> Result<Vec<InDoubt>, IndexError> {
        let corrupt = |detail: &str| IndexError::Corrupt {
            table: "in_doubt",
            detail: detail.to_owned(),
        };
        let mut found = Vec::new();
        let iter = self
            .shared
            .tables
            .in_doubt
            .iter(&self.txn)
            .map_err(self.lmdb("scan in_doubt"))?;
        for item in iter {
            let (key, value) = item.map_err(self.lmdb("scan in_doubt"))?;
            let file_id = <[u8; 16]>::try_from(key)
                .map(|bytes| FileId(u128::from_be_bytes(bytes)))
                .map_err(|_| corrupt("key is not a 16-byte file id"))?;
            let entry = match value.split_first() {
                Some((&IN_DOUBT_INSTANCE, sop)) => {
                    let sop = std::str::from_utf8(sop).map_err(|_| corrupt("SOP UID not UTF-8"))?;
                    self.instance_by_sop(sop)?
                        .filter(|entry| entry.record.file_id == file_id)
                        .map(|entry| InDoubtEntry::Instance(Box::new(entry)))
                }
                Some((&IN_DOUBT_QUARANTINE, id)) => {
                    let id = read_u64(id).ok_or_else(|| corrupt("bad quarantine id"))?;
                    self.quarantine_entry(id)?
                        .filter(|entry| entry.instance.record.file_id == file_id)
                        .map(|entry| InDoubtEntry::Quarantine(Box::new(entry)))
                }
                _ => return Err(corrupt("unknown entry tag")),
            };
            found.push(InDoubt {
                file_id,
                entry: entry.unwrap_or(InDoubtEntry::Unreferenced),
            });
        }
        Ok(found)
    }

    /// The series ids the SOP index names for `sop` (unverified), or, when
    /// another process owns the SOP index, those under which this snapshot
    /// holds it (found by a scan of `instances`).
    pub(crate) fn sop_candidates(&self, sop: &str) -> Result<Vec<u64>, IndexError> {
        let sop_index = &self.shared.sop_index;
        match sop_index.candidates(sop_index.hash(sop))? {
            Some(series_ids) => Ok(series_ids),
            None => scan_candidates(
                &self.txn,
                self.shared.tables.instances,
                sop,
                self.shared.limits,
            ),
        }
    }

    pub(crate) fn raw_txn(&self) -> &RoTxn<'a, WithoutTls> {
        &self.txn
    }

    pub(crate) fn shared(&self) -> &'a Shared {
        self.shared
    }
}
