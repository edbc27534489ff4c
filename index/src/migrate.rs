//! Upgrading an older index in place, at open, one step per transaction
//! (each records the version it reached, so a crash between steps leaves an
//! index the next open upgrades from there):
//!
//! - 2, 3 or 4 to 5 ([`upgrade`]), below;
//! - 5, 6, 7 or 8 to 9 ([`fill_patient_name_keys`]): the tables 6 added
//!   (`locations`, `segments`) and 8 added (`segment_objects`) are created
//!   empty by the caller (every instance of 5 is a file; nothing was
//!   uploaded before 8), and `study_by_patient_name` is emptied and filled
//!   from `studies` with the case-folded name groups of schema 9 (7 and 8
//!   kept them as stored): one read of every study record, 34 ms for 10,000
//!   studies when it was first written for 7.
//!
//! Schema 2, 3 or 4 to 5:
//!
//! Schema 3 kept each instance under its SOP Instance UID (`instances`:
//! `sop` -> study UID, series UID, record) with a listing key per instance
//! (`series_instances`: `study ∅ series ∅ sop`). Schema 5 gives every
//! series an id and keeps each instance under `series id ++ sop`, in the
//! same `instances` table, its record without the values its series holds
//! once (`RecordDefaults`); the SOP Instance UID lookup moves to the LSM
//! tree, which is rebuilt from `instances` after this upgrade (its
//! directory does not exist yet). Schema 2 is schema 3 without `in_doubt`,
//! which the caller has just created, empty, as it was.
//!
//! One LMDB write transaction does it all, so a crash leaves either the old
//! index, whole, or the new one. Old and new keys live side by side in
//! `instances` meanwhile: a schema 3 key is a UID, whose first byte is never
//! 0x00, and a schema 5 key starts with a series id below 2^56, whose first
//! byte is 0x00. Series are taken one at a time in key order (memory: one
//! series' instances), each gets the next id, its instances are written
//! under it; then every key from 0x01 on (the old ones) is deleted, after
//! the count of new entries is checked against the old. `series_instances`
//! is emptied (heed cannot drop a named table; it stays, empty).

use std::time::Instant;

use std::ops::Bound;

use heed::{Env, PutFlags, WithoutTls};
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{EnvLimits, IndexError};
use crate::keys::{
    instance_key, patient_name_values, prefix_of, secondary_key, series_id_key, split_key,
    SERIES_ID_MAX,
};
use crate::records::{
    access, decode, encode_into, ArchivedStudyRecord, InstanceRecord, RecordDefaults,
    SeriesIdentity, SeriesRecord, StoredRecord, StoredSeries,
};
use crate::tables::{
    new_sop_hash_key, Table, Tables, META_NEXT_SERIES_ID, META_NEXT_SOP_GROUP, META_SCHEMA_VERSION,
    META_SOP_HASH_KEY, SCHEMA_VERSION,
};

/// The schema [`upgrade`] reaches: series ids.
pub(crate) const SERIES_ID_SCHEMA: u32 = 5;

/// The value of schema 3's `instances` table (field order is its layout).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredInstanceV3 {
    pub(crate) study_instance_uid: String,
    pub(crate) series_instance_uid: String,
    pub(crate) record: InstanceRecord,
}

/// Upgrades the index in `env` from schema `from` (2, 3 or 4) to
/// [`SERIES_ID_SCHEMA`], in one transaction, flushed before it returns.
pub(crate) fn upgrade(
    env: &Env<WithoutTls>,
    tables: &Tables,
    series_instances: Table,
    from: u32,
    path: &std::path::Path,
    limits: EnvLimits,
) -> Result<(), IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
    let started = Instant::now();
    let mut wtxn = env.write_txn().map_err(lmdb("upgrade: begin"))?;
    // The series, with their schema 3 records (a few hundred bytes each;
    // one per ~100 instances).
    let mut all_series: Vec<(Vec<u8>, SeriesRecord)> = Vec::new();
    for entry in tables
        .series
        .iter(&wtxn)
        .map_err(lmdb("upgrade: scan series"))?
    {
        let (key, bytes) = entry.map_err(lmdb("upgrade: scan series"))?;
        all_series.push((key.to_vec(), decode::<SeriesRecord>("series", bytes)?));
    }
    let expected = tables
        .instances
        .len(&wtxn)
        .map_err(lmdb("upgrade: count instances"))?;
    let mut next_series_id = 1u64;
    let mut migrated = 0u64;
    let mut buffer = Vec::with_capacity(1024);
    for (series_key, series_record) in all_series {
        let [study, series] = split_key::<2>(&series_key).ok_or_else(|| IndexError::Corrupt {
            table: "series",
            detail: format!("bad key {series_key:?}"),
        })?;
        let (study, series) = (study.to_owned(), series.to_owned());
        let mut members: Vec<(String, InstanceRecord)> = Vec::new();
        for entry in series_instances
            .prefix_iter(&wtxn, &prefix_of(&series_key))
            .map_err(lmdb("upgrade: scan series_instances"))?
        {
            let (key, _) = entry.map_err(lmdb("upgrade: scan series_instances"))?;
            let [_, _, sop] = split_key::<3>(key).ok_or_else(|| IndexError::Corrupt {
                table: "series_instances",
                detail: format!("bad key {key:?}"),
            })?;
            let bytes = tables
                .instances
                .get(&wtxn, sop.as_bytes())
                .map_err(lmdb("upgrade: get instance"))?
                .ok_or_else(|| IndexError::Corrupt {
                    table: "series_instances",
                    detail: format!("{sop} is listed but not stored"),
                })?;
            let stored = decode::<StoredInstanceV3>("instances", bytes)?;
            members.push((sop.to_owned(), stored.record));
        }
        let Some((_, first)) = members.first() else {
            return Err(IndexError::Corrupt {
                table: "series",
                detail: format!("series {study}/{series} has no instances"),
            });
        };
        let defaults = RecordDefaults::of(first);
        let id = next_series_id;
        next_series_id += 1;
        debug_assert!(id <= SERIES_ID_MAX);
        for (sop, record) in &members {
            let value = encode_into(
                "instances",
                &StoredRecord::compact(record, &defaults),
                std::mem::take(&mut buffer),
            )?;
            tables
                .instances
                .put(&mut wtxn, &instance_key(id, sop), &value)
                .map_err(lmdb("upgrade: put instance record"))?;
            buffer = value;
            migrated += 1;
        }
        let identity = SeriesIdentity {
            study_instance_uid: study,
            series_instance_uid: series,
            defaults: defaults.clone(),
        };
        let value = encode_into("series_ids", &identity, std::mem::take(&mut buffer))?;
        tables
            .series_ids
            .put_with_flags(&mut wtxn, PutFlags::APPEND, &series_id_key(id), &value)
            .map_err(lmdb("upgrade: put series id"))?;
        let stored_series = StoredSeries {
            id,
            defaults,
            record: series_record,
        };
        let value = encode_into("series", &stored_series, value)?;
        tables
            .series
            .put(&mut wtxn, &series_key, &value)
            .map_err(lmdb("upgrade: put series"))?;
        buffer = value;
    }
    if migrated != expected {
        return Err(IndexError::Corrupt {
            table: "instances",
            detail: format!(
                "schema {from} lists {migrated} instances under its series but stores {expected}; run the consistency check of the old version"
            ),
        });
    }
    let old_keys: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(&[0x01]), Bound::Unbounded);
    let deleted = tables
        .instances
        .delete_range(&mut wtxn, &old_keys)
        .map_err(lmdb("upgrade: delete old instances"))?;
    if deleted as u64 != expected {
        return Err(IndexError::Corrupt {
            table: "instances",
            detail: format!("schema {from} had {expected} instances, {deleted} old keys deleted"),
        });
    }
    series_instances
        .clear(&mut wtxn)
        .map_err(lmdb("upgrade: clear series_instances"))?;
    let meta = tables.meta;
    let put = |wtxn: &mut heed::RwTxn<'_>, key: &[u8], value: &[u8]| {
        meta.put(wtxn, key, value)
            .map_err(lmdb("upgrade: put meta"))
    };
    put(
        &mut wtxn,
        META_NEXT_SERIES_ID,
        &next_series_id.to_be_bytes(),
    )?;
    put(&mut wtxn, META_SOP_HASH_KEY, &new_sop_hash_key()?)?;
    put(&mut wtxn, META_NEXT_SOP_GROUP, &1u64.to_be_bytes())?;
    put(
        &mut wtxn,
        META_SCHEMA_VERSION,
        &SERIES_ID_SCHEMA.to_be_bytes(),
    )?;
    wtxn.commit().map_err(lmdb("upgrade: commit"))?;
    env.force_sync().map_err(lmdb("upgrade: flush"))?;
    tracing::info!(
        path = %path.display(),
        from,
        to = SERIES_ID_SCHEMA,
        instances = migrated,
        series = next_series_id - 1,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index upgraded in place"
    );
    Ok(())
}

/// Upgrades the index in `env` (of schema `from`, 2 to 8, its instances
/// already keyed by series id) to [`SCHEMA_VERSION`]: every study's Patient's
/// Name groups, folded (`keys::patient_name_values`), into
/// `study_by_patient_name` (created by the caller; emptied first), in one
/// transaction, flushed before it returns.
pub(crate) fn fill_patient_name_keys(
    env: &Env<WithoutTls>,
    tables: &Tables,
    from: u32,
    path: &std::path::Path,
    limits: EnvLimits,
) -> Result<(), IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
    let started = Instant::now();
    let mut wtxn = env.write_txn().map_err(lmdb("upgrade: begin"))?;
    // Empty in any index of 5 or 6 (they had no such table), keyed by the
    // names as stored in 7 and 8: cleared, so the step is whole whatever it
    // finds.
    tables
        .study_by_patient_name
        .clear(&mut wtxn)
        .map_err(lmdb("upgrade: clear study_by_patient_name"))?;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut studies = 0u64;
    for entry in tables
        .studies
        .iter(&wtxn)
        .map_err(lmdb("upgrade: scan studies"))?
    {
        let (study, bytes) = entry.map_err(lmdb("upgrade: scan studies"))?;
        let study = std::str::from_utf8(study).map_err(|_| IndexError::Corrupt {
            table: "studies",
            detail: format!("key {study:?} is not UTF-8"),
        })?;
        let record = access::<ArchivedStudyRecord>("studies", bytes)?;
        for value in patient_name_values(&record.attributes.patient_name) {
            keys.push(secondary_key(&value, study));
        }
        studies += 1;
    }
    keys.sort_unstable();
    keys.dedup();
    for key in &keys {
        tables
            .study_by_patient_name
            .put_with_flags(&mut wtxn, PutFlags::APPEND, key, &[])
            .map_err(lmdb("upgrade: put patient name key"))?;
    }
    commit_version(env, tables, wtxn, SCHEMA_VERSION, limits)?;
    tracing::info!(
        path = %path.display(),
        from,
        to = SCHEMA_VERSION,
        studies,
        name_keys = keys.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index upgraded in place: studies by case-folded patient name"
    );
    Ok(())
}

/// Records `version` in `wtxn`, commits it and flushes the environment:
/// the end of every upgrade step.
fn commit_version(
    env: &Env<WithoutTls>,
    tables: &Tables,
    mut wtxn: heed::RwTxn<'_>,
    version: u32,
    limits: EnvLimits,
) -> Result<(), IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
    tables
        .meta
        .put(&mut wtxn, META_SCHEMA_VERSION, &version.to_be_bytes())
        .map_err(lmdb("upgrade: put meta"))?;
    wtxn.commit().map_err(lmdb("upgrade: commit"))?;
    env.force_sync().map_err(lmdb("upgrade: flush"))?;
    Ok(())
}
