//! The LMDB tables (named databases), their creation, and the schema check.
//!
//! All tables map bytes to bytes; keys are built in `keys.rs`, values in
//! `records.rs`. The table list here is the on-disk schema together with the
//! record types: docs/design/index-format.md describes both, and any change to
//! either needs a new [`SCHEMA_VERSION`].

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, WithoutTls};

use crate::error::{EnvLimits, IndexError};

/// The schema this build reads and writes. An index with another version is
/// refused at open, never guessed at.
///
/// History (nothing was released before version 2, so no migration exists):
/// 1. the first layout, with a 32-byte (BLAKE3) data set checksum;
/// 2. the checksum became 16 bytes (XXH3-128), see `Checksum`;
/// 3. the `in_doubt` table: files an entry names whose durability was not yet
///    confirmed when the entry committed (see `WriteOp::ClearInDoubt`). An
///    index of version 2 is upgraded in place at open (the table is created
///    empty, which is exactly its state in version 2);
/// 4. the `flagged` table: the files of instances stored although a lenient
///    check found something (see `StoreRequest::flagged`). Versions 2 and 3
///    are upgraded in place at open (the missing tables are created empty).
pub const SCHEMA_VERSION: u32 = 4;

/// The oldest version [`open_tables`] upgrades (by creating the tables it
/// lacks, which an older version never wrote).
const SCHEMA_VERSION_UPGRADABLE_FROM: u32 = 2;

/// The record format, recorded beside the version for humans and tools.
pub(crate) const RECORD_FORMAT: &str = "rkyv-0.8 little-endian pointer-width-32 unaligned";

/// `meta` key: schema version, big-endian u32.
pub(crate) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// `meta` key: the record format string.
pub(crate) const META_RECORD_FORMAT: &[u8] = b"record_format";
/// `meta` key: the next quarantine id, big-endian u64.
pub(crate) const META_NEXT_QUARANTINE_ID: &[u8] = b"next_quarantine_id";

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
    "series_instances",
    "file_ids",
    "studies",
    "series",
    "study_by_patient_id",
    "study_by_date",
    "study_by_accession",
    "quarantine",
    "commitments",
    "in_doubt",
    "flagged",
];

/// How many tables the schema has.
pub(crate) const TABLE_COUNT: usize = 13;

/// Handles to every table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tables {
    /// Schema version, record format, counters.
    pub(crate) meta: Table,
    /// `sop` -> `StoredInstance` (study and series UIDs, `InstanceRecord`).
    pub(crate) instances: Table,
    /// `study\0series\0sop` -> empty: the listing order of a study's instances.
    pub(crate) series_instances: Table,
    /// File id (16 bytes BE) -> role byte (instance or quarantine).
    pub(crate) file_ids: Table,
    /// `study` -> `StudyRecord`.
    pub(crate) studies: Table,
    /// `study\0series` -> `SeriesRecord`.
    pub(crate) series: Table,
    /// `patient_id\0study` -> empty.
    pub(crate) study_by_patient_id: Table,
    /// `study_date\0study` -> empty.
    pub(crate) study_by_date: Table,
    /// `accession_number\0study` -> empty.
    pub(crate) study_by_accession: Table,
    /// Quarantine id (8 bytes BE) -> `QuarantineEntry`.
    pub(crate) quarantine: Table,
    /// Transaction UID -> `CommitmentRecord`.
    pub(crate) commitments: Table,
    /// File id (16 bytes BE) -> the entry naming it (`keys::in_doubt_value`):
    /// committed before its file and directory entry were known durable.
    pub(crate) in_doubt: Table,
    /// File id (16 bytes BE) -> the engine's bytes saying what lenient
    /// checks found in that instance.
    pub(crate) flagged: Table,
}

impl Tables {
    /// Every table with its name, for stats and checks.
    pub(crate) fn all(&self) -> [(&'static str, Table); TABLE_COUNT] {
        let tables = [
            self.meta,
            self.instances,
            self.series_instances,
            self.file_ids,
            self.studies,
            self.series,
            self.study_by_patient_id,
            self.study_by_date,
            self.study_by_accession,
            self.quarantine,
            self.commitments,
            self.in_doubt,
            self.flagged,
        ];
        let mut index = 0;
        tables.map(|table| {
            let named = (TABLE_NAMES[index], table);
            index += 1;
            named
        })
    }

    fn from_array(tables: [Table; TABLE_COUNT]) -> Tables {
        let [meta, instances, series_instances, file_ids, studies, series, study_by_patient_id, study_by_date, study_by_accession, quarantine, commitments, in_doubt, flagged] =
            tables;
        Tables {
            meta,
            instances,
            series_instances,
            file_ids,
            studies,
            series,
            study_by_patient_id,
            study_by_date,
            study_by_accession,
            quarantine,
            commitments,
            in_doubt,
            flagged,
        }
    }
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
            if !(SCHEMA_VERSION_UPGRADABLE_FROM..=SCHEMA_VERSION).contains(&found) =>
        {
            return Err(IndexError::SchemaVersionMismatch {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            })
        }
        Some(Ok(Some(Ok(_)))) => {}
    }

    // 2. Create what is missing (everything for a new index) in one transaction.
    let wtxn = env
        .write_txn()
        .map_err(heed_error("open: write transaction"))?;
    let tables = env
        .create_databases_and_commit(wtxn, |creator, wtxn| -> heed::Result<_> {
            let mut create = |position: usize| {
                creator.create_database::<Bytes, Bytes>(wtxn, Some(TABLE_NAMES[position]))
            };
            let created = [
                create(0)?,
                create(1)?,
                create(2)?,
                create(3)?,
                create(4)?,
                create(5)?,
                create(6)?,
                create(7)?,
                create(8)?,
                create(9)?,
                create(10)?,
                create(11)?,
                create(12)?,
            ];
            let meta = created[0];
            let upgrading = meta
                .get(wtxn, META_SCHEMA_VERSION)?
                .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                .map(u32::from_be_bytes)
                .is_some_and(|found| found < SCHEMA_VERSION);
            if upgrading {
                // Version 2 or 3 -> 4: `in_doubt` and `flagged` were just
                // created (if missing), empty, as those versions had them.
                meta.put(wtxn, META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())?;
            } else if meta.get(wtxn, META_SCHEMA_VERSION)?.is_none() {
                meta.put(wtxn, META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())?;
                meta.put(wtxn, META_RECORD_FORMAT, RECORD_FORMAT.as_bytes())?;
            }
            Ok(CommitOrAbort::<_, ()>::Commit(created))
        })
        .map_err(heed_error("open: create tables"))?
        .unwrap_commit();
    Ok(Tables::from_array(tables))
}
