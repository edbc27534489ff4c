//! The LMDB tables (named databases), their creation, and the schema check.
//!
//! All tables map bytes to bytes; keys are built in `keys.rs`, values in
//! `records.rs`. The table list here is the on-disk schema together with the
//! record types: docs/design/index-format.md describes both, and any change to
//! either needs a new [`SCHEMA_VERSION`].

use std::path::Path;
use std::sync::Arc;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, WithoutTls};

use crate::error::{EnvLimits, IndexError};

/// The schema this build reads and writes. An index with another version is
/// refused at open, never guessed at.
///
/// History (nothing was released before version 2):
/// 1. the first layout, with a 32-byte (BLAKE3) data set checksum;
/// 2. the checksum became 16 bytes (XXH3-128), see `Checksum`;
/// 3. the `in_doubt` table: files an entry names whose durability was not yet
///    confirmed when the entry committed (see `WriteOp::ClearInDoubt`);
/// 4. the `flagged` table: the files of instances stored although a lenient
///    check found something (see `StoreRequest::flagged`);
/// 5. instances keyed by series id and SOP Instance UID (`instances`,
///    `series_ids`; `series_instances` is gone), the SOP Instance UID lookup
///    in an LSM tree beside LMDB with its `sop_pending` log
///    (docs/design/index-at-scale.md);
/// 6. the `locations` and `segments` tables: instances stored as records in
///    segment files (docs/design/segments.md); a file id without a
///    `locations` row is a file, as every instance of version 5 is;
/// 7. the `study_by_patient_name` table: studies by the component groups of
///    their Patient's Name, for C-FIND by name (docs/design/query-retrieve.md);
/// 8. the `segment_objects` table: sealed segments uploaded to the object
///    store, and whether the local file was evicted (docs/design/scale-out.md);
/// 9. `study_by_patient_name` keys are case-folded name groups
///    (`sluice_net::query::fold_person_name`), so case-insensitive name
///    queries use the table too (docs/design/query.md).
///
/// An index of version 2 to 8 is upgraded in place at open (`migrate`;
/// the tables an older version lacks are created empty, as it had them, and
/// `study_by_patient_name` is filled, folded, from the study records).
pub const SCHEMA_VERSION: u32 = 9;

/// The older versions [`open_tables`] upgrades.
const SCHEMA_VERSIONS_UPGRADABLE: [u32; 7] = [2, 3, 4, 5, 6, 7, 8];

/// The last version whose tables and records [`crate::migrate::upgrade`]
/// rewrites; from it on, an upgrade only adds tables (and fills the name
/// table).
const SCHEMA_VERSION_LAST_REWRITTEN: u32 = 4;

/// The record format, recorded beside the version for humans and tools.
pub(crate) const RECORD_FORMAT: &str = "rkyv-0.8 little-endian pointer-width-32 unaligned";

/// `meta` key: schema version, big-endian u32.
pub(crate) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// `meta` key: the record format string.
pub(crate) const META_RECORD_FORMAT: &[u8] = b"record_format";
/// `meta` key: the next quarantine id, big-endian u64.
pub(crate) const META_NEXT_QUARANTINE_ID: &[u8] = b"next_quarantine_id";
/// `meta` key: the next series id, big-endian u64 (ids are never reused).
pub(crate) const META_NEXT_SERIES_ID: &[u8] = b"next_series_id";
/// `meta` key: the SipHash key of the SOP index (16 random bytes, made
/// when the index is created or upgraded).
pub(crate) const META_SOP_HASH_KEY: &[u8] = b"sop_hash_key";
/// `meta` key: the number of the writer's next transaction group that adds
/// SOP index candidates, big-endian u64 (see `sop_index`).
pub(crate) const META_NEXT_SOP_GROUP: &[u8] = b"next_sop_group";

/// A table handle.
pub(crate) type Table = Database<'static, Bytes, Bytes>;

/// Value of `file_ids`: the file belongs to a stored instance.
pub(crate) const FILE_ROLE_INSTANCE: u8 = 1;
/// Value of `file_ids`: the file belongs to a quarantine entry.
pub(crate) const FILE_ROLE_QUARANTINE: u8 = 2;

/// Names of the tables, in [`Tables::all`] order.
pub(crate) const TABLE_NAMES: [&str; TABLE_COUNT] = [
    "meta",
    "instances",
    "series_ids",
    "file_ids",
    "studies",
    "series",
    "study_by_patient_id",
    "study_by_date",
    "study_by_accession",
    "study_by_patient_name",
    "quarantine",
    "commitments",
    "in_doubt",
    "sop_pending",
    "flagged",
    "locations",
    "segments",
    "segment_objects",
];

/// How many tables the schema has.
pub(crate) const TABLE_COUNT: usize = 18;

/// The table of schemas 2 to 4 that schema 5 replaced; opened only to upgrade
/// (and left empty by it: LMDB through heed cannot drop a named table).
pub(crate) const LEGACY_TABLE_NAME: &str = "series_instances";

/// Handles to every table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tables {
    /// Schema version, record format, counters, the SOP index's hash key.
    pub(crate) meta: Table,
    /// `series id (8 bytes BE) ++ sop` -> `StoredRecord`: every stored
    /// instance, a series' instances side by side in SOP Instance UID order.
    /// (Schema 3 keyed it by the SOP Instance UID alone; such keys never
    /// start with 0x00, and series ids are below 2^56, so each key says
    /// which schema wrote it: the upgrade relies on that.)
    pub(crate) instances: Table,
    /// Series id (8 bytes BE) -> `SeriesIdentity` (study and series UIDs,
    /// record defaults).
    pub(crate) series_ids: Table,
    /// File id (16 bytes BE) -> role byte (instance or quarantine).
    pub(crate) file_ids: Table,
    /// `study` -> `StudyRecord`.
    pub(crate) studies: Table,
    /// `study\0series` -> `StoredSeries` (id, record defaults, `SeriesRecord`).
    pub(crate) series: Table,
    /// `patient_id\0study` -> empty.
    pub(crate) study_by_patient_id: Table,
    /// `study_date\0study` -> empty.
    pub(crate) study_by_date: Table,
    /// `accession_number\0study` -> empty.
    pub(crate) study_by_accession: Table,
    /// `name group\0study` -> empty: one entry per distinct non-empty
    /// component group of the study's Patient's Name
    /// (`sluice_net::query::person_name_groups`), as stored (not folded).
    pub(crate) study_by_patient_name: Table,
    /// Quarantine id (8 bytes BE) -> `QuarantineEntry`.
    pub(crate) quarantine: Table,
    /// Transaction UID -> `CommitmentRecord`.
    pub(crate) commitments: Table,
    /// File id (16 bytes BE) -> the entry naming it (`keys::in_doubt_value`):
    /// committed before its file and directory entry were known durable.
    pub(crate) in_doubt: Table,
    /// Group number (8 bytes BE) -> the (SOP hash, series id) pairs that
    /// group added to the SOP index, until the SOP index is durable past it.
    pub(crate) sop_pending: Table,
    /// File id (16 bytes BE) -> the engine's bytes saying what lenient
    /// checks found in that instance.
    pub(crate) flagged: Table,
    /// File id (16 bytes BE) -> `RecordPlace` (24 bytes): the instance's
    /// bytes are a record in a segment; absent: its own file.
    pub(crate) locations: Table,
    /// Segment id (8 bytes BE) -> `SegmentState` (33 bytes).
    pub(crate) segments: Table,
    /// Segment id (8 bytes BE) -> `SegmentObject` (evicted, size, key):
    /// the segment is uploaded and verified (schema 8).
    pub(crate) segment_objects: Table,
}

impl Tables {
    /// Every table with its name, for stats and checks.
    pub(crate) fn all(&self) -> [(&'static str, Table); TABLE_COUNT] {
        let tables = [
            self.meta,
            self.instances,
            self.series_ids,
            self.file_ids,
            self.studies,
            self.series,
            self.study_by_patient_id,
            self.study_by_date,
            self.study_by_accession,
            self.study_by_patient_name,
            self.quarantine,
            self.commitments,
            self.in_doubt,
            self.sop_pending,
            self.flagged,
            self.locations,
            self.segments,
            self.segment_objects,
        ];
        let mut index = 0;
        tables.map(|table| {
            let named = (TABLE_NAMES[index], table);
            index += 1;
            named
        })
    }

    fn from_array(tables: [Table; TABLE_COUNT]) -> Tables {
        let [meta, instances, series_ids, file_ids, studies, series, study_by_patient_id, study_by_date, study_by_accession, study_by_patient_name, quarantine, commitments, in_doubt, sop_pending, flagged, locations, segments, segment_objects] =
            tables;
        Tables {
            meta,
            instances,
            series_ids,
            file_ids,
            studies,
            series,
            study_by_patient_id,
            study_by_date,
            study_by_accession,
            study_by_patient_name,
            quarantine,
            commitments,
            in_doubt,
            sop_pending,
            flagged,
            locations,
            segments,
            segment_objects,
        }
    }
}

/// A new random SOP index hash key.
pub(crate) fn new_sop_hash_key() -> Result<[u8; 16], IndexError> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|error| IndexError::Io {
        operation: "random SOP index key",
        source: Arc::new(std::io::Error::other(error.to_string())),
    })?;
    Ok(key)
}

/// Checks the schema of an opened environment and creates the tables of a new
/// one. Refuses an unknown schema version before writing anything.
pub(crate) fn open_tables(
    env: &Env<WithoutTls>,
    path: &Path,
    limits: EnvLimits,
) -> Result<Tables, IndexError> {
    let heed_error = |operation| move |error| IndexError::from_heed(operation, error, limits);

    // 1. Look, without writing: is this a Sluice index, and of which version?
    let rtxn = env
        .read_txn()
        .map_err(heed_error("open: read transaction"))?;
    let (meta, unnamed) = env
        .open_databases_and_commit(rtxn, |opener, rtxn| -> heed::Result<_> {
            let meta = opener.open_database::<Bytes, Bytes>(rtxn, Some(TABLE_NAMES[0]))?;
            let unnamed = opener.open_database::<Bytes, Bytes>(rtxn, None)?;
            Ok(CommitOrAbort::<_, ()>::Commit((meta, unnamed)))
        })
        .map_err(heed_error("open: meta table"))?
        .unwrap_commit();
    let rtxn = env
        .read_txn()
        .map_err(heed_error("open: read transaction"))?;
    let existing = match meta {
        Some(meta) => {
            let version = meta
                .get(&rtxn, META_SCHEMA_VERSION)
                .map_err(heed_error("open: schema version"))?;
            Some(Ok(version.map(|bytes| {
                <[u8; 4]>::try_from(bytes).map(u32::from_be_bytes)
            })))
        }
        None => {
            // No meta table: a new environment, unless something else lives here.
            let entries = match unnamed {
                Some(unnamed) => unnamed.len(&rtxn).map_err(heed_error("open: main table"))?,
                None => 0,
            };
            if entries == 0 {
                None
            } else {
                Some(Err(entries))
            }
        }
    };
    drop(rtxn);
    match existing {
        None => {}
        Some(Err(entries)) => {
            return Err(IndexError::NotAnIndex {
                path: path.to_owned(),
                reason: format!(
                    "an LMDB environment with {entries} foreign entries and no Sluice metadata"
                ),
            })
        }
        Some(Ok(None)) => {
            return Err(IndexError::NotAnIndex {
                path: path.to_owned(),
                reason: "its metadata has no schema version".into(),
            })
        }
        Some(Ok(Some(Err(_)))) => {
            return Err(IndexError::NotAnIndex {
                path: path.to_owned(),
                reason: "its schema version is not a 4-byte number".into(),
            })
        }
        Some(Ok(Some(Ok(found))))
            if found != SCHEMA_VERSION && !SCHEMA_VERSIONS_UPGRADABLE.contains(&found) =>
        {
            return Err(IndexError::SchemaVersionMismatch {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            })
        }
        Some(Ok(Some(Ok(_)))) => {}
    }

    let upgrading_from = match existing {
        Some(Ok(Some(Ok(found)))) if found != SCHEMA_VERSION => Some(found),
        _ => None,
    };

    // 2. Create what is missing (everything for a new index) in one transaction.
    let sop_hash_key = new_sop_hash_key()?;
    let wtxn = env
        .write_txn()
        .map_err(heed_error("open: write transaction"))?;
    let (tables, legacy) = env
        .create_databases_and_commit(wtxn, |creator, wtxn| -> heed::Result<_> {
            let meta = creator.create_database::<Bytes, Bytes>(wtxn, Some(TABLE_NAMES[0]))?;
            let mut created = [meta; TABLE_COUNT];
            for (slot, name) in created.iter_mut().zip(TABLE_NAMES).skip(1) {
                *slot = creator.create_database::<Bytes, Bytes>(wtxn, Some(name))?;
            }
            let legacy = match upgrading_from {
                Some(from) if from <= SCHEMA_VERSION_LAST_REWRITTEN => {
                    Some(creator.create_database::<Bytes, Bytes>(wtxn, Some(LEGACY_TABLE_NAME))?)
                }
                _ => None,
            };
            if meta.get(wtxn, META_SCHEMA_VERSION)?.is_none() {
                meta.put(wtxn, META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())?;
                meta.put(wtxn, META_RECORD_FORMAT, RECORD_FORMAT.as_bytes())?;
                meta.put(wtxn, META_SOP_HASH_KEY, &sop_hash_key)?;
            }
            Ok(CommitOrAbort::<_, ()>::Commit((created, legacy)))
        })
        .map_err(heed_error("open: create tables"))?
        .unwrap_commit();
    let tables = Tables::from_array(tables);

    // 3. An older schema is upgraded, step by step, each step in one
    //    transaction of its own that also records the version it reached:
    //    2 to 4 are rewritten (to 5), then the name table is (re)filled,
    //    folded, from the studies (to 9; the tables 6 and 8 added were
    //    created empty above, as no older index had anything in them).
    if let Some(from) = upgrading_from {
        if let Some(series_instances) = legacy {
            crate::migrate::upgrade(env, &tables, series_instances, from, path, limits)?;
        }
        crate::migrate::fill_patient_name_keys(env, &tables, from, path, limits)?;
    }
    Ok(tables)
}
